"""Cost bases are derivable from the ledger: every cost change is on a posting."""

import importlib
from decimal import Decimal

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from django.db import transaction

from registry.ledger import LedgerBatch, LedgerError, Line
from registry.models import Balance, Bucket, JournalEntry, Posting
from registry.selectors import ledger_differences
from tests.conftest import assert_ledger_balanced

pytestmark = pytest.mark.django_db


def test_adjust_cost_records_the_change_on_the_entry_posted_last(
    alice_account, bob_account, symbol
):
    xs01 = symbol.asset
    with transaction.atomic():
        batch = LedgerBatch([(alice_account.pk, xs01.pk), (bob_account.pk, xs01.pk)])
        batch.post(
            kind=JournalEntry.Kind.ISSUE,
            lines=[
                Line(alice_account.pk, xs01.pk, Bucket.AVAILABLE, Decimal(-10)),
                Line(bob_account.pk, xs01.pk, Bucket.AVAILABLE, Decimal(10)),
            ],
            reference="test",
        )
        batch.adjust_cost(bob_account.pk, xs01.pk, Decimal("25.50"))
        batch.adjust_cost(bob_account.pk, xs01.pk, Decimal("0.50"))
        batch.adjust_cost(alice_account.pk, xs01.pk, Decimal("-3.00"))
        (entry,) = batch.flush()

    lines = sorted((p.account_id, p.amount, p.cost_delta) for p in entry.postings.all())
    assert lines == sorted(
        [
            (alice_account.pk, Decimal(-10), Decimal("-3.00")),
            (bob_account.pk, Decimal(10), Decimal("26.00")),
        ]
    )
    assert Balance.objects.get(account=bob_account, asset=xs01).cost == Decimal("26.00")
    assert ledger_differences() == []
    assert_ledger_balanced()


def test_a_cost_change_of_a_position_the_entry_does_not_move_gets_its_own_line(
    alice_account, bob_account, symbol
):
    aud, xs01 = symbol.currency, symbol.asset
    with transaction.atomic():
        batch = LedgerBatch([(alice_account.pk, aud.pk), (alice_account.pk, xs01.pk)])
        batch.post(
            kind=JournalEntry.Kind.HOLD,
            lines=[
                Line(alice_account.pk, aud.pk, Bucket.AVAILABLE, Decimal(-5)),
                Line(alice_account.pk, aud.pk, Bucket.HELD, Decimal(5)),
            ],
        )
        batch.adjust_cost(alice_account.pk, xs01.pk, Decimal("7.25"))
        (entry,) = batch.flush()

    posting = entry.postings.get(asset=xs01)
    assert (posting.bucket, posting.amount, posting.cost_delta) == (
        "available",
        0,
        Decimal("7.25"),
    )
    assert ledger_differences() == []


def test_adjust_cost_without_an_entry_to_belong_to_is_refused(alice_account, symbol):
    with transaction.atomic():
        batch = LedgerBatch([(alice_account.pk, symbol.asset_id)])
        with pytest.raises(LedgerError, match="posted first"):
            batch.adjust_cost(alice_account.pk, symbol.asset_id, Decimal(1))
    assert Balance.objects.get(account=alice_account, asset=symbol.asset).cost == 0


def test_a_cost_base_edited_behind_the_ledgers_back_is_reported(alice_account, symbol):
    Balance.objects.filter(account=alice_account, asset=symbol.asset).update(
        cost=Decimal("12.00")
    )

    (difference,) = ledger_differences()

    assert str(difference) == (
        f"{alice_account.number} XSX:XS01 cost: stored 12.0000000000, ledger 0E-10"
    )
    with pytest.raises(CommandError, match="1 difference"):
        call_command("reconcile_ledger")


def test_the_migration_back_fills_cost_changes_exactly_like_the_matcher(scenario):
    """Wipe the recorded cost changes of the timed scenario's two trades, then run
    the migration's back-fill: it finds the same figures from the postings."""
    recorded = dict(
        Posting.objects.exclude(cost_delta=0).values_list("pk", "cost_delta")
    )
    # carol's buy and sale, bob's buy (alice's units had cost nothing)
    assert sorted(recorded.values()) == [
        Decimal("-400.40"),
        Decimal("480.48"),
        Decimal("1001.00"),
    ]
    Posting.objects.update(cost_delta=0)
    migration = importlib.import_module("registry.migrations.0003_posting_cost_delta")

    migration.backfill_cost(apps, None)

    assert (
        dict(Posting.objects.exclude(cost_delta=0).values_list("pk", "cost_delta"))
        == recorded
    )
    assert ledger_differences() == []
