"""``POST /api/v1/orders/estimate``: exact figures, the errors of placing, no writes."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from exchange.fees import fee_group_save, fee_schedule_save
from exchange.models import FeeSchedule, Trade
from registry.ledger import LedgerBatch, Line
from registry.models import AccountAccess, FeeGroup
from tests import factories
from tests.oms.test_order_rejections import snapshot

pytestmark = pytest.mark.django_db

ESTIMATE = "/api/v1/orders/estimate"
ORDERS = "/api/v1/orders"


def body_for(account, **changes):
    return {
        "account": account.pk,
        "symbol": "XSX:XS01",
        "side": "buy",
        "type": "limit",
        "time_in_force": "gtc",
        "price": "10.00",
        "quantity": "100",
        **changes,
    }


def estimate(client, body):
    """POST an estimate and check that it wrote nothing at all."""
    before = snapshot()
    with CaptureQueriesContext(connection) as queries:
        response = client.post(ESTIMATE, body, format="json")
    writes = [
        query["sql"]
        for query in queries.captured_queries
        if query["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))
    ]
    assert writes == []
    assert snapshot() == before
    return response


def schedule(market, maker, taker, min_fee="0", fee_group=None):
    return fee_schedule_save(
        schedule=FeeSchedule(
            market=market,
            fee_group=fee_group,
            maker_fee_bps=Decimal(maker),
            taker_fee_bps=Decimal(taker),
            min_fee=Decimal(min_fee),
        ),
        acting_user=None,
    )


def test_a_limit_buy_is_estimated_at_its_price_with_the_worst_case_fee(
    alice_client, alice_account, market
):
    schedule(market, "5", "10")

    response = estimate(alice_client, body_for(alice_account, quantity="1000"))

    assert response.status_code == 200, response.json()
    assert response.json() == {
        "account": alice_account.pk,
        "symbol": "XSX:XS01",
        "side": "buy",
        "type": "limit",
        "time_in_force": "gtc",
        "quantity": "1000",
        "price": "10.00",
        "price_basis": "limit",
        "currency": "AUD",
        "value": "10000.00",
        "fees": "10.00",
        "fees_at_taker_rate": "10.00",
        "total": "10010.00",
        "fee_schedule": {
            "maker_fee_bps": "5",
            "taker_fee_bps": "10",
            "min_fee": "0.00",
        },
        "reservation": {"asset": "AUD", "amount": "10010.00"},
        "available": "10000.00",
        "sufficient": False,
    }
    # and placing it is indeed refused for lack of funds
    placed = alice_client.post(
        ORDERS, body_for(alice_account, quantity="1000"), format="json"
    )
    assert (placed.status_code, placed.json()["code"]) == (422, "insufficient_funds")


def test_the_estimate_uses_the_accounts_tier_and_its_minimum_fee(
    alice_client, alice_account, market
):
    schedule(market, "5", "10")
    pro = fee_group_save(fee_group=FeeGroup(name="pro"), acting_user=None)
    schedule(market, "12", "10", "5.00", fee_group=pro)
    alice_account.fee_group = pro
    alice_account.save(update_fields=["fee_group"])

    small = estimate(alice_client, body_for(alice_account)).json()
    large = estimate(alice_client, body_for(alice_account, quantity="900")).json()

    # 1000.00: 12 bps = 1.20, 10 bps = 1.00, both below the 5.00 minimum
    assert (small["fees"], small["fees_at_taker_rate"], small["total"]) == (
        "5.00",
        "5.00",
        "1005.00",
    )
    # 9000.00: worst case the maker's 12 bps (10.80), as a taker 9.00
    assert (large["fees"], large["fees_at_taker_rate"], large["total"]) == (
        "10.80",
        "9.00",
        "9010.80",
    )
    assert large["reservation"] == {"asset": "AUD", "amount": "9010.80"}
    assert large["fee_schedule"] == {
        "maker_fee_bps": "12",
        "taker_fee_bps": "10",
        "min_fee": "5.00",
    }
    assert large["sufficient"] is True


def test_a_sell_reserves_the_holding_and_nets_the_fee_from_the_value(
    alice_client, alice_account, market
):
    schedule(market, "5", "10", "2.00")

    body = estimate(
        alice_client, body_for(alice_account, side="sell", price="10.50")
    ).json()

    assert {
        key: body[key]
        for key in ("value", "fees", "total", "reservation", "available", "sufficient")
    } == {
        "value": "1050.00",
        "fees": "2.00",
        "total": "1048.00",
        "reservation": {"asset": "XSX:XS01", "amount": "100"},
        "available": "1000",
        "sufficient": True,
    }
    # a tiny sale: the fee is capped at the value
    tiny = estimate(
        alice_client,
        body_for(alice_account, side="sell", price="0.50", quantity="1"),
    ).json()
    assert (tiny["value"], tiny["fees"], tiny["total"]) == ("0.50", "0.50", "0.00")


def test_a_market_order_is_estimated_at_its_protection_price(
    alice_client, alice_account, bob_account, market, symbol
):
    schedule(market, "5", "10")
    now = timezone.now()
    Trade.objects.create(
        symbol=symbol,
        seq=1,
        price=Decimal("10.00"),
        quantity=Decimal(1),
        value=Decimal("10.00"),
        aggressor_side="buy",
        buy_order_id=1,
        sell_order_id=2,
        buyer=alice_account,
        seller=bob_account,
        executed_at=now,
        settlement_date=now.date(),
        settled_at=now,
    )

    body = estimate(
        alice_client,
        {
            "account": alice_account.pk,
            "symbol": "XSX:XS01",
            "side": "buy",
            "type": "market",
            "quantity": "100",
        },
    ).json()

    # the last trade 10.00 plus the market's 10 % collar
    assert (body["price"], body["price_basis"], body["time_in_force"]) == (
        "11.00",
        "protection",
        "ioc",
    )
    assert (body["value"], body["fees"], body["total"]) == (
        "1100.00",
        "1.10",
        "1101.10",
    )


def test_buying_power_includes_unsettled_proceeds_only_when_the_account_allows_it(
    alice_client, alice, symbol
):
    account = factories.account(alice, cash="100.00")
    aud = symbol.currency
    # 900.00 of unsettled sale proceeds (as a T+2 trade would leave them)
    issuer = factories.account(None, cash="900.00")
    ledger = LedgerBatch([(account.pk, aud.pk), (issuer.pk, aud.pk)])
    ledger.post(
        kind="trade",
        lines=[
            Line(issuer.pk, aud.pk, "available", Decimal("-900.00")),
            Line(account.pk, aud.pk, "unsettled", Decimal("900.00")),
        ],
    )
    ledger.flush()
    body = body_for(account, quantity="50")  # 500.00

    off = estimate(alice_client, body).json()
    account.trade_unsettled_proceeds = True
    account.save(update_fields=["trade_unsettled_proceeds"])
    on = estimate(alice_client, body).json()

    assert (off["available"], off["sufficient"]) == ("100.00", False)
    assert (on["available"], on["sufficient"]) == ("1000.00", True)


BAD_BODIES = [
    pytest.param({"price": "10.001"}, id="price_off_tick"),
    pytest.param({"quantity": "0"}, id="invalid_quantity"),
    pytest.param({"quantity": "1.5"}, id="quantity_off_lot"),
    pytest.param({"price": 10}, id="json_number"),
    pytest.param({"price": None}, id="price_required"),
    pytest.param({"symbol": "XSX:NOPE"}, id="unknown_symbol"),
    pytest.param({"side": "hold"}, id="bad_side"),
    pytest.param({"type": "market", "time_in_force": "ioc"}, id="price_not_allowed"),
    pytest.param(
        {"type": "market", "time_in_force": "gtc", "price": None},
        id="market_gtc",
    ),
    pytest.param(
        {"type": "market", "time_in_force": "ioc", "price": None},
        id="no_reference_price",
    ),
    pytest.param({"quantity": "100000000000000000"}, id="order_too_large"),
]


@pytest.mark.parametrize("changes", BAD_BODIES)
def test_bad_input_gets_the_same_error_as_placing_and_changes_nothing(
    alice_client, alice_account, changes
):
    body = {
        key: value
        for key, value in body_for(alice_account, **changes).items()
        if value is not None
    }

    response = estimate(alice_client, body)
    placed = alice_client.post(ORDERS, body, format="json")

    assert 400 <= response.status_code < 500
    assert (response.status_code, response.json()) == (
        placed.status_code,
        placed.json(),
    )


def test_an_account_the_user_may_not_trade_is_forbidden(
    alice_client, alice, bob_account
):
    response = estimate(alice_client, body_for(bob_account))
    assert (response.status_code, response.json()["code"]) == (403, "account_forbidden")

    # a viewer may read the account but not trade it, nor estimate for it
    AccountAccess.objects.create(
        user=alice, account=bob_account, role=AccountAccess.Role.VIEWER
    )
    response = estimate(alice_client, body_for(bob_account))
    assert (response.status_code, response.json()["code"]) == (403, "account_forbidden")


def test_an_estimate_needs_authentication(alice_account):
    from rest_framework.test import APIClient

    response = APIClient().post(ESTIMATE, body_for(alice_account), format="json")
    assert response.status_code in (401, 403)
