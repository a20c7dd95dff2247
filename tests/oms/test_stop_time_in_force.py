"""A stop's time in force is the life of the stop (GTC, DAY, GTD) - or, for IOC and
FOK, what its triggered order does. A triggered stop (market) trades what the book
has and its remainder is cancelled; a triggered stop-limit rests as a limit until
its time in force ends; DAY and GTD stops expire at the close / at their time
whether triggered or not. Through REST and the matching worker."""

import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.db import connections
from django.utils import timezone

from exchange.models import Trade
from exchange.services import market_set_state
from oms.models import Order
from oms.services import orders_expire_due
from tests import factories
from tests.conftest import (
    assert_trading_consistent,
    balance_of,
    client_for,
    wait_for,
)
from tests.oms.racing import PausedBatch
from tests.trading import match_now, place

pytestmark = pytest.mark.django_db

D = Decimal


@pytest.fixture
def asks(alice_client, alice_account) -> None:
    """Alice offers 5 at 10.00 and 1 at 10.50."""
    place(alice_client, alice_account, side="sell", price="10.00", quantity="5")
    place(alice_client, alice_account, side="sell", price="10.50", quantity="1")
    match_now()


def trade_at_ten(symbol: Any) -> None:
    """Carol buys 1 at 10.00: the last price reaches the stops at 10.00."""
    carol = factories.user("carol")
    account = factories.account(carol, cash="1000.00")
    place(client_for(carol), account, side="buy", price="10.00", quantity="1")
    match_now()


def expiry(tif: str) -> dict[str, str]:
    if tif != "gtd":
        return {}
    return {"expire_at": (timezone.now() + timedelta(hours=1)).isoformat()}


def order_of(client: Any, order: dict[str, Any]) -> dict[str, Any]:
    return client.get(f"/api/v1/orders/{order['id']}").json()


@pytest.mark.parametrize("tif", ["gtc", "day", "gtd"])
def test_a_stop_with_a_resting_time_in_force_waits_then_trades_and_its_rest_is_cancelled(
    asks, symbol, bob_client, bob_account, tif
):
    # given bob's buy stop for 8 at 10.00 (protection 11.00) with time in force tif
    stop = place(
        bob_client,
        bob_account,
        side="buy",
        type="stop",
        stop_price="10.00",
        quantity="8",
        time_in_force=tif,
        **expiry(tif),
    )
    assert stop["time_in_force"] == tif
    match_now()
    assert order_of(bob_client, stop)["status"] == "waiting"

    # when a trade prints at 10.00
    trade_at_ten(symbol)

    # then the stop bought the 5 on offer, at 10.00 and 10.50, and the rest of it
    # was cancelled like a market order's
    body = order_of(bob_client, stop)
    assert (body["status"], body["status_reason"], body["filled_quantity"]) == (
        "cancelled",
        "market_remainder",
        "5",
    )
    assert list(
        Trade.objects.filter(buy_order_id=stop["id"])
        .order_by("seq")
        .values_list("price", "quantity")
    ) == [(D("10.00"), D(4)), (D("10.50"), D(1))]
    assert balance_of(bob_account, symbol.currency).held == 0
    assert balance_of(bob_account, symbol.currency).available == D("9949.50")
    assert_trading_consistent()


def test_a_triggered_day_stop_limit_rests_until_the_close_then_expires(
    asks, market, symbol, bob_client, bob_account
):
    stop = place(
        bob_client,
        bob_account,
        side="buy",
        type="stop_limit",
        stop_price="10.00",
        price="10.20",
        quantity="8",
        time_in_force="day",
    )
    match_now()
    trade_at_ten(symbol)

    # 4 bought at 10.00; 10.50 is above its limit: the rest works at 10.20
    body = order_of(bob_client, stop)
    assert (body["status"], body["filled_quantity"], body["price"]) == (
        "partially_filled",
        "4",
        "10.20",
    )
    assert Order.objects.get(pk=stop["id"]).held_amount == D("40.80")

    market_set_state(market=market, action="close", acting_user=None)
    match_now()

    body = order_of(bob_client, stop)
    assert (body["status"], body["filled_quantity"]) == ("expired", "4")
    assert balance_of(bob_account, symbol.currency).held == 0
    assert_trading_consistent()


def test_an_untriggered_gtd_stop_expires_at_its_time(symbol, bob_client, bob_account):
    expire_at = timezone.now() + timedelta(hours=1)
    stop = place(
        bob_client,
        bob_account,
        side="buy",
        type="stop",
        stop_price="10.00",
        quantity="8",
        time_in_force="gtd",
        expire_at=expire_at.isoformat(),
    )
    match_now()
    # 8 x 11.00 (the collared protection price) is held while it waits
    assert balance_of(bob_account, symbol.currency).held == D("88.00")

    with time_machine.travel(expire_at + timedelta(seconds=1)):
        assert orders_expire_due() == 1
        match_now()

    body = order_of(bob_client, stop)
    assert (body["status"], body["status_reason"]) == ("expired", "expired")
    assert balance_of(bob_account, symbol.currency).held == 0
    assert_trading_consistent()


def test_an_untriggered_day_trailing_stop_expires_at_the_close(
    asks, market, symbol, alice_client, alice_account, bob_client, bob_account
):
    trade_at_ten(symbol)  # the reference a trailing stop starts from
    stop = place(
        alice_client,
        alice_account,
        side="sell",
        type="trailing_stop",
        trail_amount="0.50",
        quantity="10",
        time_in_force="day",
    )
    match_now()
    body = order_of(alice_client, stop)
    assert (body["status"], body["stop_price"]) == ("waiting", "9.50")

    market_set_state(market=market, action="close", acting_user=None)
    match_now()

    assert order_of(alice_client, stop)["status"] == "expired"
    assert_trading_consistent()


def test_a_market_order_is_still_ioc_or_fok(bob_client, bob_account):
    response = bob_client.post(
        "/api/v1/orders",
        {
            "account": bob_account.pk,
            "symbol": "XSX:XS01",
            "side": "buy",
            "type": "market",
            "time_in_force": "gtc",
            "quantity": "1",
        },
        format="json",
    )
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["message"]) == (
        "invalid_time_in_force",
        "A market order is IOC or FOK.",
    )


@pytest.mark.django_db(transaction=True)
def test_a_gtc_stop_placed_while_a_batch_prints_its_price_fires_on_acceptance(
    monkeypatch, matcher, symbol, alice_client, alice_account, bob, bob_account
):
    # given alice's offers, and the worker inside the batch that prints 10.00
    # (carol's buy of 1), not yet committed
    place(alice_client, alice_account, side="sell", price="10.00", quantity="5")
    ask = place(alice_client, alice_account, side="sell", price="10.50", quantity="1")
    wait_for(lambda: Order.objects.get(pk=ask["id"]).status == "working")
    paused = PausedBatch(monkeypatch, lambda batch: bool(batch.fills))
    carol = factories.user("carol")
    carol_account = factories.account(carol, cash="1000.00")
    place(client_for(carol), carol_account, side="buy", price="10.00", quantity="1")
    assert paused.paused.wait(10)

    # when bob's GTC buy stop at 10.00 is placed on another connection meanwhile
    placed: dict[str, Any] = {}

    def place_stop() -> None:
        try:
            placed.update(
                place(
                    client_for(bob),
                    bob_account,
                    side="buy",
                    type="stop",
                    stop_price="10.00",
                    quantity="8",
                    time_in_force="gtc",
                )
            )
        finally:
            connections.close_all()

    thread = threading.Thread(target=place_stop)
    thread.start()
    thread.join(10)
    paused.release()

    # then the worker takes it after that batch: already triggerable, it fires at
    # once, buys the 5 left and its remainder is cancelled
    wait_for(lambda: Order.objects.get(pk=placed["id"]).is_terminal)
    stop = Order.objects.get(pk=placed["id"])
    assert (stop.status, stop.status_reason, stop.filled_quantity) == (
        "cancelled",
        "market_remainder",
        D(5),
    )
    assert stop.held_amount == 0
    assert balance_of(bob_account, symbol.currency).held == 0
    assert_trading_consistent()


def test_a_waiting_gtc_stop_can_be_amended_and_its_protection_follows(
    symbol, bob_client, bob_account
):
    # IOC/FOK orders cannot be amended; a GTC stop lives on the park and can
    stop = place(
        bob_client,
        bob_account,
        side="buy",
        type="stop",
        stop_price="10.00",
        quantity="8",
        time_in_force="gtc",
    )
    match_now()

    response = bob_client.patch(
        f"/api/v1/orders/{stop['id']}", {"stop_price": "11.00"}, format="json"
    )
    assert response.status_code == 202, response.json()
    match_now()

    order = Order.objects.get(pk=stop["id"])
    # the protection price is the new stop plus the 10% collar: 8 x 12.10 held
    assert (order.status, order.stop_price, order.price, order.held_amount) == (
        "waiting",
        D("11.00"),
        D("12.10"),
        D("96.80"),
    )
    assert balance_of(bob_account, symbol.currency).held == D("96.80")
    assert_trading_consistent()
