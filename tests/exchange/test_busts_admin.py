"""Busting and correcting trades from the staff console.

A real trade (order entry and the matching worker, run synchronously): alice sells
10 XS01 @ 10.00 to bob, who takes it (maker 5 bps: alice pays 0.05; taker 10 bps:
bob pays 0.10).
"""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from exchange.models import Trade
from registry.models import AuditRecord, Balance, JournalEntry, Posting
from registry.selectors import ledger_differences
from tests import factories
from tests.conftest import balance_of
from tests.registry.test_admin import messages_of
from tests.trading import cross, set_fees

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:exchange_trade_changelist"


@pytest.fixture
def trade(market, symbol, alice_client, alice_account, bob_client, bob_account):
    set_fees(market, maker_bps=5, taker_bps=10)
    return cross(
        (alice_client, alice_account),
        (bob_client, bob_account),
        price="10.00",
        quantity="10",
        matcher=False,
    )


def ledger_state() -> tuple[object, ...]:
    return (
        JournalEntry.objects.count(),
        Posting.objects.count(),
        AuditRecord.objects.count(),
        sorted(Balance.objects.values_list("pk", "available", "held", "cost")),
        sorted(Trade.objects.values_list("pk", "busted_at", "bust_reason")),
    )


def bust_action(client, trades, **extra):
    return client.post(
        reverse(CHANGELIST),
        {
            "action": "bust_trades",
            "_selected_action": [t.pk for t in trades],
            "index": 0,
            **extra,
        },
    )


def test_the_bust_action_first_asks_for_a_reason_and_changes_nothing(
    admin_client, trade
):
    before = ledger_state()

    response = bust_action(admin_client, [trade])

    assert response.status_code == 200
    assert response.templates[0].name == "admin/xchange/trade_bust_confirmation.html"
    assert f"Trade {trade.pk}: XSX:XS01 10 @ 10" in response.content.decode()
    assert ledger_state() == before


def test_confirming_without_a_reason_changes_nothing(admin_client, trade):
    before = ledger_state()

    response = bust_action(admin_client, [trade], confirm="yes", reason="")

    assert response.status_code == 200
    assert response.context["form"].errors == {"reason": ["This field is required."]}
    assert ledger_state() == before


def test_busting_with_a_reason_reverses_the_trade_and_audits_the_admin(
    admin_client, admin_user, trade, symbol, alice_account, bob_account
):
    response = bust_action(
        admin_client, [trade], confirm="yes", reason="Client error, agreed"
    )

    assert response.status_code == 302
    assert messages_of(response) == [f"Busted trade(s) {trade.pk}."]
    trade.refresh_from_db()
    assert (trade.busted_by, trade.bust_reason) == (admin_user, "Client error, agreed")
    aud, xs01 = symbol.currency, symbol.asset
    assert balance_of(alice_account, aud).available == Decimal("10000.00")
    assert balance_of(alice_account, xs01).available == Decimal(1000)
    assert balance_of(bob_account, aud).available == Decimal("10000.00")
    assert (
        balance_of(bob_account, xs01).available,
        balance_of(bob_account, xs01).cost,
    ) == (
        Decimal(1000),
        0,
    )
    record = AuditRecord.objects.get(action="trade_bust", object_type="exchange.trade")
    assert (record.actor, record.reason) == (admin_user, "Client error, agreed")
    assert ledger_differences() == []


def test_a_trade_already_busted_is_reported_and_left_alone(admin_client, trade):
    bust_action(admin_client, [trade], confirm="yes", reason="first")
    before = ledger_state()

    response = bust_action(admin_client, [trade], confirm="yes", reason="second")

    assert response.status_code == 302
    # (the first bust's message is still queued: nothing has displayed it yet)
    message = messages_of(response)[-1]
    assert message.startswith(f"Trade {trade.pk} was already busted at ")
    assert ledger_state() == before


def test_the_trade_page_links_to_the_correction(admin_client, trade):
    response = admin_client.get(reverse("admin:exchange_trade_change", args=[trade.pk]))

    assert response.status_code == 200
    assert reverse("admin:exchange_trade_correct", args=[trade.pk]) in (
        response.content.decode()
    )


def test_a_bad_correction_shows_the_error_on_the_form_and_changes_nothing(
    admin_client, trade
):
    url = reverse("admin:exchange_trade_correct", args=[trade.pk])
    page = admin_client.get(url)
    assert page.status_code == 200
    assert page.context["form"].initial == {
        "price": trade.price,
        "quantity": trade.quantity,
    }
    before = ledger_state()

    response = admin_client.post(
        url, {"price": "10.001", "quantity": "10", "reason": "typo"}
    )

    assert response.status_code == 200
    assert response.context["form"].errors == {
        "price": ["10.001 is not a multiple of the tick size 0.01."]
    }
    assert ledger_state() == before


def test_a_correction_from_the_console_rebooks_the_trade(
    admin_client, admin_user, trade, symbol, alice_account, bob_account
):
    url = reverse("admin:exchange_trade_correct", args=[trade.pk])

    response = admin_client.post(
        url, {"price": "9.50", "quantity": "10", "reason": "Agreed at 9.50"}
    )

    correction = Trade.objects.get(corrected_from=trade)
    assert response.status_code == 302
    assert response["Location"] == reverse(
        "admin:exchange_trade_change", args=[correction.pk]
    )
    # value 95.00: bob pays 95.00 + 0.09 (taker, rounded down), alice gets 95.00 - 0.04
    aud = symbol.currency
    assert balance_of(bob_account, aud).available == Decimal("9904.91")
    assert balance_of(alice_account, aud).available == Decimal("10094.96")
    assert balance_of(bob_account, symbol.asset).cost == Decimal("95.09")
    assert ledger_differences() == []


def test_staff_without_the_trade_change_permission_cannot_bust_or_correct(
    client, trade
):
    viewer = factories.user("viewer", is_staff=True)
    viewer.is_superuser = False
    viewer.save()
    viewer.user_permissions.add(Permission.objects.get(codename="view_trade"))
    client.force_login(viewer)

    changelist = client.get(reverse(CHANGELIST))
    correct = client.get(reverse("admin:exchange_trade_correct", args=[trade.pk]))

    assert changelist.status_code == 200
    assert "bust_trades" not in changelist.content.decode()
    assert correct.status_code == 403
