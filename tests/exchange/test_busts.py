"""Trade busts and corrections by staff: exact reversals, refusals that change nothing.

The scenario (real trades from a running matcher; maker 5 bps, taker 10 bps):
trade 1: alice sells 100 @ 10.00 to carol (carol pays 1000.00 + 1.00 fee; her 100
units cost 1001.00); trade 2: carol sells 40 @ 12.00 to bob (value 480.00, bob pays a
0.48 fee, carol 0.24; carol's cost base falls by 1001.00 x 40 / 100 = 400.40).
"""

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command

from exchange.models import Trade
from oms.models import Order, OrderEvent
from registry.models import (
    Account,
    AuditRecord,
    Balance,
    JournalEntry,
    Posting,
)
from registry.selectors import ledger_differences
from tests import factories
from tests.conftest import (
    assert_trading_consistent,
    balance_of,
    client_for,
)
from tests.trading import cross, place, set_fees

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def carol(db):
    return factories.user("carol")


@pytest.fixture
def carol_account(carol, symbol):
    return factories.account(carol, cash="5000.00")


@pytest.fixture
def staff(db):
    return factories.user("staffer", is_staff=True)


@pytest.fixture
def staff_client(staff):
    return client_for(staff)


@pytest.fixture
def trades(
    matcher,
    market,
    symbol,
    alice_client,
    alice_account,
    bob_client,
    bob_account,
    carol,
    carol_account,
):
    set_fees(market, maker_bps=5, taker_bps=10)
    carol_client = client_for(carol)
    first = cross(
        (alice_client, alice_account),
        (carol_client, carol_account),
        price="10.00",
        quantity="100",
    )
    second = cross(
        (carol_client, carol_account),
        (bob_client, bob_account),
        price="12.00",
        quantity="40",
    )
    return first, second


def position(account, asset) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    balance = balance_of(account, asset)
    return balance.available, balance.held, balance.unsettled, balance.cost


def fees_account() -> Account:
    return Account.objects.get(number="SYS-FEES")


def snapshot() -> dict[str, Any]:
    """Everything a refused bust must leave as it was."""
    return {
        "balances": sorted(
            Balance.objects.values_list(
                "account_id", "asset_id", "available", "held", "unsettled", "cost"
            )
        ),
        "entries": JournalEntry.objects.count(),
        "postings": Posting.objects.count(),
        "audit": AuditRecord.objects.count(),
        "trades": sorted(
            Trade.objects.values_list("pk", "busted_at", "busted_by", "bust_reason")
        ),
        "orders": sorted(
            Order.objects.values_list("pk", "status", "filled_quantity", "fees")
        ),
    }


def bust(client, trade, reason="Erroneous trade: wrong price") -> Any:
    return client.post(
        f"/api/v1/trades/{trade.pk}/bust", {"reason": reason}, format="json"
    )


def test_the_scenario_before_any_bust(trades, symbol, carol_account, bob_account):
    aud, xs01 = symbol.currency, symbol.asset
    assert position(carol_account, aud) == (
        Decimal("4478.76"),
        0,
        0,
        0,
    )
    assert position(carol_account, xs01) == (Decimal(60), 0, 0, Decimal("600.60"))
    assert position(bob_account, aud)[:3] == (Decimal("9519.52"), 0, 0)
    assert position(bob_account, xs01) == (Decimal(1040), 0, 0, Decimal("480.48"))
    assert balance_of(fees_account(), aud).available == Decimal("2.22")


def test_a_bust_reverses_both_sides_exactly_with_fees_and_cost(
    trades, symbol, staff, staff_client, carol_account, bob_account, monkeypatch
):
    _, second = trades
    published: list[list[Any]] = []
    monkeypatch.setattr(
        "exchange.busts.publish_on_commit", lambda messages: published.append(messages)
    )

    response = bust(staff_client, second)

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["trade"]["id"] == second.pk
    assert body["trade"]["bust_reason"] == "Erroneous trade: wrong price"
    assert body["trade"]["busted_by"] == "staffer"
    aud, xs01 = symbol.currency, symbol.asset
    # carol is back to just after trade 1: cash, units and cost base
    assert position(carol_account, aud) == (Decimal("3999.00"), 0, 0, 0)
    assert position(carol_account, xs01) == (Decimal(100), 0, 0, Decimal("1001.00"))
    # bob is back to where he started, his 0.48 fee returned
    assert position(bob_account, aud) == (Decimal("10000.00"), 0, 0, 0)
    assert position(bob_account, xs01) == (Decimal(1000), 0, 0, 0)
    # the fee account keeps only trade 1's fees (0.50 + 1.00)
    assert balance_of(fees_account(), aud).available == Decimal("1.50")
    # one new entry, the exact opposite of the trade's (held -> available)
    entry = JournalEntry.objects.get(pk=body["entry"])
    assert (entry.kind, entry.reference, entry.reason, entry.acting_user) == (
        "bust",
        f"trade:{second.pk}",
        "Erroneous trade: wrong price",
        staff,
    )
    lines = sorted(
        (p.account.number, p.asset.code, p.bucket, p.amount, p.cost_delta)
        for p in entry.postings.select_related("account", "asset")
    )
    assert lines == sorted(
        [
            (bob_account.number, "AUD", "available", Decimal("480.48"), 0),
            (
                bob_account.number,
                "XSX:XS01",
                "available",
                Decimal(-40),
                Decimal("-480.48"),
            ),
            (carol_account.number, "AUD", "available", Decimal("-479.76"), 0),
            (
                carol_account.number,
                "XSX:XS01",
                "available",
                Decimal(40),
                Decimal("400.40"),
            ),
            ("SYS-FEES", "AUD", "available", Decimal("-0.72"), 0),
        ]
    )
    # the trade is marked, once; the trade's own entry is untouched
    second.refresh_from_db()
    assert (second.busted_by, second.bust_reason) == (
        staff,
        "Erroneous trade: wrong price",
    )
    assert second.busted_at is not None
    assert JournalEntry.objects.filter(reference=f"trade:{second.pk}").count() == 2
    # orders keep their fills, with no new event
    for order_id in (second.buy_order_id, second.sell_order_id):
        order = Order.objects.get(pk=order_id)
        assert (order.status, order.filled_quantity) == ("filled", Decimal(40))
    assert not OrderEvent.objects.filter(
        order_id__in=[second.buy_order_id, second.sell_order_id],
        created_at__gt=second.busted_at,
    ).exists()
    # audited on the trade and on both orders, naming the staff user and the reason
    records = AuditRecord.objects.filter(action="trade_bust").order_by("object_type")
    reason = "Erroneous trade: wrong price"
    assert sorted(
        (r.object_type, r.object_id, r.actor_id, r.reason) for r in records
    ) == sorted(
        [
            ("exchange.trade", str(second.pk), staff.pk, reason),
            ("oms.order", str(second.buy_order_id), staff.pk, reason),
            ("oms.order", str(second.sell_order_id), staff.pk, reason),
        ]
    )
    # the busted trade (flagged) on the tape, the recomputed ticker and bars, and
    # both accounts' balances and holdings are published on commit
    (messages,) = published
    topics = sorted(topic for topic, _ in messages)
    assert topics == sorted(
        [
            "trades.XSX:XS01",
            "ticker.XSX:XS01",
            *(f"candles.XSX:XS01.{i}" for i in ("1m", "5m", "15m", "30m", "1h", "1d")),
            f"balances.acct.{bob_account.pk}",
            f"holdings.acct.{bob_account.pk}",
            f"balances.acct.{carol_account.pk}",
            f"holdings.acct.{carol_account.pk}",
        ]
    )
    notice = dict(messages)["trades.XSX:XS01"]
    assert (notice["seq"], notice["data"]["id"], notice["data"]["busted"]) == (
        3,
        second.pk,
        True,
    )
    carol_holding = dict(messages)[f"holdings.acct.{carol_account.pk}"]["data"]
    assert (carol_holding["quantity"], carol_holding["cost"]) == ("100", "1001.0000")
    # the ledger still reconciles, balances and cost bases included
    assert ledger_differences() == []
    call_command("reconcile_ledger")
    assert_trading_consistent()


def test_busting_a_trade_twice_is_refused_with_409(trades, staff_client):
    _, second = trades
    assert bust(staff_client, second).status_code == 200
    before = snapshot()

    response = bust(staff_client, second, reason="again")

    assert response.status_code == 409
    assert response.json()["code"] == "trade_already_busted"
    assert snapshot() == before


def test_a_bust_is_refused_when_the_buyer_has_sold_the_units(
    trades, staff_client, carol_account
):
    first, _ = trades  # carol bought 100 in trade 1 and has sold 40 since
    before = snapshot()

    response = bust(staff_client, first)

    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "bust_insufficient_balance"
    assert body["message"] == (
        f"Cannot bust trade {first.pk}: account {carol_account.number} would be "
        "short of 40 XSX:XS01 (available)."
    )
    assert snapshot() == before


def test_busting_both_trades_newest_first_unwinds_everything(
    trades, symbol, staff_client, alice_account, carol_account, bob_account
):
    first, second = trades
    assert bust(staff_client, second).status_code == 200

    response = bust(staff_client, first)

    assert response.status_code == 200, response.json()
    aud, xs01 = symbol.currency, symbol.asset
    assert position(carol_account, aud) == (Decimal("5000.00"), 0, 0, 0)
    assert position(carol_account, xs01) == (0, 0, 0, 0)
    assert position(alice_account, aud) == (Decimal("10000.00"), 0, 0, 0)
    assert position(alice_account, xs01) == (Decimal(1000), 0, 0, 0)
    assert position(bob_account, aud) == (Decimal("10000.00"), 0, 0, 0)
    assert balance_of(fees_account(), aud).available == 0
    assert ledger_differences() == []
    assert_trading_consistent()


def test_a_bust_of_a_partly_filled_order_leaves_its_remaining_hold(
    matcher,
    market,
    symbol,
    staff_client,
    alice_client,
    alice_account,
    bob_client,
    bob_account,
):
    from tests.conftest import wait_for

    set_fees(market, maker_bps=5, taker_bps=10)
    sell = place(
        alice_client, alice_account, side="sell", price="10.00", quantity="100"
    )
    wait_for(lambda: Order.objects.get(pk=sell["id"]).status == "working")
    buy = place(bob_client, bob_account, side="buy", price="10.00", quantity="30")
    wait_for(lambda: Order.objects.get(pk=buy["id"]).status == "filled")
    trade = Trade.objects.get(buy_order_id=buy["id"])

    assert bust(staff_client, trade).status_code == 200

    xs01, aud = symbol.asset, symbol.currency
    # alice's 30 units come back to available; her order still holds its 70
    assert position(alice_account, xs01) == (Decimal(930), Decimal(70), 0, 0)
    assert Order.objects.get(pk=sell["id"]).held_amount == Decimal(70)
    # value 300.00: alice had received 299.85 (maker fee 0.15)
    assert position(alice_account, aud) == (Decimal("10000.00"), 0, 0, 0)
    assert position(bob_account, aud) == (Decimal("10000.00"), 0, 0, 0)
    assert_trading_consistent()


def test_only_staff_may_bust(trades, bob_client):
    _, second = trades
    before = snapshot()

    response = bust(bob_client, second)

    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert snapshot() == before


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "required"),
        ({"reason": ""}, "reason_required"),
        ({"reason": "   "}, "reason_required"),
    ],
)
def test_a_bust_needs_a_reason(trades, staff_client, body, code):
    _, second = trades
    before = snapshot()

    response = staff_client.post(
        f"/api/v1/trades/{second.pk}/bust", body, format="json"
    )

    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == (code, "reason")
    assert snapshot() == before


def test_busting_an_unknown_trade_is_404(staff_client, db):
    response = staff_client.post(
        "/api/v1/trades/999999/bust", {"reason": "x"}, format="json"
    )

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_a_correction_busts_and_rebooks_at_the_corrected_price(
    trades, symbol, staff, staff_client, carol_account, bob_account, bob_client
):
    _, second = trades

    response = staff_client.post(
        f"/api/v1/trades/{second.pk}/correct",
        {"price": "11.00", "quantity": "40", "reason": "Agreed price was 11.00"},
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    correction = Trade.objects.get(pk=body["correction"]["id"])
    assert (
        correction.corrected_from_id,
        correction.seq,
        correction.price,
        correction.quantity,
        correction.value,
        correction.buyer_fee,
        correction.seller_fee,
        correction.buyer_id,
        correction.seller_id,
        correction.aggressor_side,
    ) == (
        second.pk,
        4,  # 3 is the bust's notice on the tape
        Decimal("11.00"),
        Decimal(40),
        Decimal("440.00"),
        Decimal("0.44"),
        Decimal("0.22"),
        bob_account.pk,
        carol_account.pk,
        "buy",
    )
    assert body["busted"]["busted_at"] is not None
    aud, xs01 = symbol.currency, symbol.asset
    # carol: 3999.00 + 440.00 - 0.22; 60 units at her average cost 10.01
    assert position(carol_account, aud) == (Decimal("4438.78"), 0, 0, 0)
    assert position(carol_account, xs01) == (Decimal(60), 0, 0, Decimal("600.60"))
    # bob: 10000.00 - 440.44; 1040 units costing 440.44
    assert position(bob_account, aud) == (Decimal("9559.56"), 0, 0, 0)
    assert position(bob_account, xs01) == (Decimal(1040), 0, 0, Decimal("440.44"))
    assert balance_of(fees_account(), aud).available == Decimal("2.16")
    entry = JournalEntry.objects.get(pk=body["correction_entry"])
    assert (entry.kind, entry.reference, entry.reason, entry.acting_user) == (
        "trade",
        f"trade:{correction.pk}",
        f"Correction of trade {second.pk}: Agreed price was 11.00",
        staff,
    )
    tape = bob_client.get("/api/v1/symbols/XSX:XS01/trades").json()["results"]
    assert [(t["seq"], t["price"], t["quantity"], t["busted"]) for t in tape] == [
        (4, "11.00", "40", False),
        (2, "12.00", "40", True),
        (1, "10.00", "100", False),
    ]
    assert AuditRecord.objects.filter(
        action="trade_correct", object_id=str(correction.pk), actor=staff
    ).exists()
    assert ledger_differences() == []
    assert_trading_consistent()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"price": "11.005", "quantity": "40", "reason": "x"}, 400, "price_off_tick"),
        ({"price": "0", "quantity": "40", "reason": "x"}, 400, "invalid_price"),
        ({"price": "11.00", "quantity": "0", "reason": "x"}, 400, "invalid_quantity"),
        ({"price": 11, "quantity": "40", "reason": "x"}, 400, "not_a_string"),
        ({"price": "11.00", "quantity": "40", "reason": ""}, 400, "reason_required"),
        # bob cannot pay 40 x 300.00 = 12000.00 after the bust gives him 10000.00
        (
            {"price": "300.00", "quantity": "40", "reason": "x"},
            422,
            "correction_insufficient_balance",
        ),
    ],
)
def test_a_bad_correction_changes_nothing(trades, staff_client, body, status, code):
    _, second = trades
    before = snapshot()

    response = staff_client.post(
        f"/api/v1/trades/{second.pk}/correct", body, format="json"
    )

    assert response.status_code == status
    assert response.json()["code"] == code
    assert snapshot() == before


def test_holdings_as_at_the_instants_around_a_bust(
    trades, staff_client, carol, carol_account
):
    """Real trades from the running matcher; the instants are the entries' own."""
    _, second = trades
    body = bust(staff_client, second).json()
    traded_at = JournalEntry.objects.get(kind="trade", reference=f"trade:{second.pk}")
    busted_at = JournalEntry.objects.get(pk=body["entry"])
    url = f"/api/v1/accounts/{carol_account.pk}/holdings"
    client = client_for(carol)
    us = timedelta(microseconds=1)

    def at(moment) -> list[tuple[str, str, str]]:
        rows = client.get(url, {"as_at": moment.isoformat()}).json()
        return [(r["quantity"], r["average_cost"], r["cost"]) for r in rows]

    assert at(traded_at.created_at - us) == [("100", "10.0100", "1001.0000")]
    assert at(traded_at.created_at) == [("60", "10.0100", "600.6000")]
    assert at(busted_at.created_at - us) == [("60", "10.0100", "600.6000")]
    assert at(busted_at.created_at) == [("100", "10.0100", "1001.0000")]
