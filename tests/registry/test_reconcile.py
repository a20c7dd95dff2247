from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from registry.models import Balance
from registry.selectors import ledger_differences
from registry.tasks import ledger_reconcile_task

pytestmark = pytest.mark.django_db


def test_a_consistent_registry_has_no_differences(alice_account, bob_account, capsys):
    assert ledger_differences() == []
    assert ledger_reconcile_task.delay().get() == 0
    call_command("reconcile_ledger")
    assert "every asset sums to zero" in capsys.readouterr().out


def test_a_balance_edited_behind_the_ledgers_back_is_reported(alice_account, symbol):
    Balance.objects.filter(account=alice_account, asset=symbol.currency).update(
        available=Decimal("1.00")
    )

    (difference,) = ledger_differences()
    assert (
        str(difference)
        == f"{alice_account.number} AUD available: stored 1.0000000000, ledger 10000.0000000000"
    )
    assert ledger_reconcile_task.delay().get() == 1
    with pytest.raises(CommandError, match="1 difference"):
        call_command("reconcile_ledger")
