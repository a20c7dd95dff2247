"""Every order type and instruction through order entry, the matching worker and
the ledger: stops, trailing stops, market-to-limit, icebergs, post-only, minimum
quantity, self-trade prevention, OCO, amend, cancel-all and expiry.

The worker is driven synchronously (``Driver.run`` processes the inbox until it is
empty) so every step is deterministic."""

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from exchange import engine
from exchange.matching import MatchingWorker
from exchange.models import Trade
from exchange.selectors import book_snapshot
from oms.models import Order, OrderEvent, OrderRequest
from oms.services import (
    AmendSpec,
    OrderError,
    OrderSpec,
    default_time_in_force,
    order_amend,
    order_cancel_all,
    order_place,
    orders_expire_due,
)
from tests.conftest import assert_ledger_balanced, assert_trading_consistent, balance_of

pytestmark = pytest.mark.django_db(transaction=True)

D = Decimal


class Driver:
    """A matching worker run step by step in the test's thread."""

    def __init__(self, market_code: str) -> None:
        self.worker = MatchingWorker(market_code, batch_size=200)
        self.worker.rebuild()

    def run(self) -> None:
        while self.worker.process_batch():
            pass

    @property
    def book(self) -> engine.OrderBook:
        (book,) = self.worker.books.values()
        return book


@pytest.fixture
def driver(market, symbol) -> Driver:
    return Driver(market.code)


def place(user: Any, account: Any, **fields: Any) -> Order:
    fields.setdefault("symbol", "XSX:XS01")
    fields.setdefault("type", Order.Type.LIMIT)
    fields.setdefault("time_in_force", default_time_in_force(fields["type"]))
    decimals = (
        "price",
        "quantity",
        "stop_price",
        "trail_amount",
        "display_quantity",
        "min_quantity",
    )
    for name in decimals:
        if name in fields and fields[name] is not None:
            fields[name] = D(fields[name])
    return order_place(user=user, spec=OrderSpec(account_id=account.pk, **fields)).order


def reload(order: Order) -> Order:
    return Order.objects.select_related("symbol").get(pk=order.pk)


def transitions(order: Order) -> list[tuple[str, str, str]]:
    return list(
        OrderEvent.objects.filter(order=order).values_list(
            "from_status", "to_status", "reason"
        )
    )


def trades() -> list[tuple[Decimal, Decimal, int, int, str]]:
    return list(
        Trade.objects.order_by("seq").values_list(
            "price", "quantity", "buy_order_id", "sell_order_id", "aggressor_side"
        )
    )


def check_books(driver: Driver) -> None:
    """The ledger and orders agree, and a rebuilt worker has exactly the same book."""
    assert_ledger_balanced()
    assert_trading_consistent()
    fresh = Driver(driver.worker.market_code)
    for symbol_id, book in driver.worker.books.items():
        assert fresh.worker.books[symbol_id].snapshot() == book.snapshot()
        assert fresh.worker.books[symbol_id].depth() == book.depth()


# -- stops ---------------------------------------------------------------------------


def test_a_stop_limit_sell_waits_then_fires_when_the_last_trade_reaches_its_stop(
    driver, alice, bob, alice_account, bob_account, symbol
):
    stop = place(
        alice,
        alice_account,
        side="sell",
        type="stop_limit",
        stop_price="9.50",
        price="9.40",
        quantity="30",
    )
    bid = place(bob, bob_account, side="buy", price="9.45", quantity="100")
    driver.run()
    assert reload(stop).status == "waiting"
    assert driver.book.depth() == ([(945, 100, 1)], [])

    # a trade at 9.50 between alice's plain sell and bob fires it
    place(alice, alice_account, side="sell", price="9.50", quantity="10")
    place(bob, bob_account, side="buy", price="9.50", quantity="10")
    driver.run()

    stop = reload(stop)
    assert (stop.status, stop.filled_quantity, stop.filled_value) == (
        "filled",
        D(30),
        D("283.50"),
    )
    assert [t[:2] for t in trades()] == [(D("9.50"), D(10)), (D("9.45"), D(30))]
    assert [(f, t) for f, t, _ in transitions(stop)] == [
        ("new", "pending"),
        ("pending", "accepted"),
        ("accepted", "waiting"),
        ("waiting", "accepted"),
        ("accepted", "filled"),
    ]
    assert transitions(stop)[3][2] == "triggered at 9.50"
    assert reload(bid).remaining_quantity == D(70)
    # alice sold 40 in all and holds nothing more
    assert balance_of(alice_account, symbol.asset).held == 0
    assert balance_of(alice_account, symbol.asset).available == D(960)
    check_books(driver)


def test_a_stop_buy_holds_cash_at_its_protection_price_and_releases_the_rest(
    driver, alice, bob, alice_account, bob_account, symbol
):
    # the collar is 10%: a buy stop at 10.00 may pay up to 11.00
    stop = place(
        bob, bob_account, side="buy", type="stop", stop_price="10.00", quantity="20"
    )
    assert (stop.price, stop.held_amount) == (D("11.00"), D("220.00"))
    place(alice, alice_account, side="sell", price="10.20", quantity="50")
    driver.run()
    assert reload(stop).status == "waiting"
    # a trade at 10.00 fires it; it buys 20 at 10.20 and frees the difference
    place(alice, alice_account, side="sell", price="10.00", quantity="5")
    place(bob, bob_account, side="buy", price="10.00", quantity="5")
    driver.run()
    stop = reload(stop)
    assert (stop.status, stop.filled_value, stop.held_amount) == (
        "filled",
        D("204.00"),
        D(0),
    )
    cash = balance_of(bob_account, symbol.currency)
    assert (cash.available, cash.held) == (D("10000") - D("204.00") - D("50.00"), 0)
    check_books(driver)


def test_a_trailing_stop_follows_the_last_price_up_and_fires_on_the_way_down(
    driver, alice, bob, alice_account, bob_account, symbol
):
    def trade_at(price: str) -> None:
        place(alice, alice_account, side="sell", price=price, quantity="1")
        place(bob, bob_account, side="buy", price=price, quantity="1")
        driver.run()

    trade_at("10.00")
    trailing = place(
        alice,
        alice_account,
        side="sell",
        type="trailing_stop",
        trail_amount="0.50",
        quantity="10",
    )
    place(bob, bob_account, side="buy", price="9.00", quantity="100")
    driver.run()
    assert reload(trailing).stop_price == D("9.50")
    trade_at("10.40")
    assert reload(trailing).stop_price == D("9.90")
    trade_at("10.20")  # a fall does not move it down
    assert reload(trailing).stop_price == D("9.90")
    assert reload(trailing).status == "waiting"
    trade_at("9.90")
    trailing = reload(trailing)
    assert (trailing.status, trailing.filled_quantity, trailing.average_price) == (
        "filled",
        D(10),
        D("9.00"),
    )
    check_books(driver)


def test_a_trailing_stop_without_a_reference_price_is_refused(alice, alice_account):
    with pytest.raises(OrderError) as error:
        place(
            alice,
            alice_account,
            side="sell",
            type="trailing_stop",
            trail_bps=100,
            quantity="10",
        )
    assert error.value.code == "no_reference_price"
    assert not Order.objects.exists()


# -- market-to-limit, icebergs, post-only, minimum quantity ---------------------------


def test_market_to_limit_rests_its_remainder_at_the_first_fill_price(
    driver, alice, bob, alice_account, bob_account, symbol
):
    place(alice, alice_account, side="sell", price="10.00", quantity="30")
    place(alice, alice_account, side="sell", price="10.50", quantity="30")
    driver.run()
    order = place(bob, bob_account, side="buy", type="market_to_limit", quantity="50")
    # bounded by best ask 10.00 + 10%
    assert (order.price, order.held_amount) == (D("11.00"), D("550.00"))
    driver.run()
    order = reload(order)
    assert (order.status, order.filled_quantity, order.price, order.held_amount) == (
        "partially_filled",
        D(30),
        D("10.00"),
        D("200.00"),
    )
    assert driver.book.depth() == ([(1000, 20, 1)], [(1050, 30, 1)])
    assert balance_of(bob_account, symbol.currency).held == D("200.00")
    check_books(driver)


def test_an_iceberg_shows_only_its_peak_and_refreshes_behind_the_queue(
    driver, alice, bob, alice_account, bob_account, symbol, client
):
    iceberg = place(
        alice,
        alice_account,
        side="sell",
        price="10.00",
        quantity="50",
        display_quantity="10",
    )
    other = place(alice, alice_account, side="sell", price="10.00", quantity="5")
    driver.run()
    assert book_snapshot(symbol)["asks"] == [["10.00", "15", 2]]
    assert reload(iceberg).visible_quantity == D(10)

    # bob takes 12: 10 from the iceberg's peak, then 2 from the order behind it
    place(bob, bob_account, side="buy", price="10.00", quantity="12")
    driver.run()
    assert [(t[1], t[3]) for t in trades()] == [(D(10), iceberg.pk), (D(2), other.pk)]
    iceberg = reload(iceberg)
    assert (iceberg.visible_quantity, iceberg.remaining_quantity) == (D(10), D(40))
    other_priority = reload(other).priority
    assert iceberg.priority is not None and other_priority is not None
    assert other_priority < iceberg.priority
    assert book_snapshot(symbol)["asks"] == [["10.00", "13", 2]]
    check_books(driver)


def test_post_only_is_rejected_or_repriced_when_it_would_take(
    driver, alice, bob, alice_account, bob_account, symbol
):
    place(alice, alice_account, side="sell", price="10.00", quantity="10")
    driver.run()
    rejected = place(
        bob, bob_account, side="buy", price="10.00", quantity="5", post_only="reject"
    )
    repriced = place(
        bob, bob_account, side="buy", price="10.20", quantity="5", post_only="reprice"
    )
    driver.run()
    rejected, repriced = reload(rejected), reload(repriced)
    assert (rejected.status, rejected.status_reason) == (
        "rejected",
        "post_only_would_take",
    )
    assert (repriced.status, repriced.price, repriced.held_amount) == (
        "working",
        D("9.99"),
        D("49.95"),
    )
    assert not Trade.objects.exists()
    assert balance_of(bob_account, symbol.currency).held == D("49.95")
    check_books(driver)


def test_an_order_whose_minimum_cannot_execute_at_once_is_cancelled_untouched(
    driver, alice, bob, alice_account, bob_account
):
    place(alice, alice_account, side="sell", price="10.00", quantity="10")
    driver.run()
    order = place(
        bob, bob_account, side="buy", price="10.00", quantity="30", min_quantity="20"
    )
    driver.run()
    order = reload(order)
    assert (order.status, order.status_reason, order.filled_quantity) == (
        "cancelled",
        "min_quantity",
        0,
    )
    assert order.held_amount == 0
    check_books(driver)


# -- self-trade prevention and OCO ------------------------------------------------------


def test_self_trade_prevention_cancels_the_newest_by_default(
    driver, alice, alice_account
):
    resting = place(alice, alice_account, side="sell", price="10.00", quantity="10")
    driver.run()
    crossing = place(alice, alice_account, side="buy", price="10.00", quantity="10")
    driver.run()
    assert reload(resting).status == "working"
    assert (reload(crossing).status, reload(crossing).status_reason) == (
        "cancelled",
        "self_trade",
    )
    assert not Trade.objects.exists()
    check_books(driver)


def test_self_trade_prevention_can_cancel_the_oldest_instead(
    driver, alice, alice_account
):
    resting = place(alice, alice_account, side="sell", price="10.00", quantity="10")
    driver.run()
    crossing = place(
        alice,
        alice_account,
        side="buy",
        price="10.00",
        quantity="10",
        self_trade_prevention="cancel_oldest",
    )
    driver.run()
    assert (reload(resting).status, reload(resting).status_reason) == (
        "cancelled",
        "self_trade",
    )
    assert reload(crossing).status == "working"
    check_books(driver)


def test_a_fill_of_one_oco_leg_cancels_the_other_and_releases_its_hold(
    driver, alice, bob, alice_account, bob_account, symbol
):
    take_profit = place(alice, alice_account, side="sell", price="11.00", quantity="10")
    stop_loss = place(
        alice,
        alice_account,
        side="sell",
        type="stop",
        stop_price="9.00",
        quantity="10",
        oco_with=take_profit.pk,
    )
    assert reload(take_profit).oco_with_id == stop_loss.pk
    driver.run()
    assert reload(stop_loss).status == "waiting"
    # the pair holds what its larger leg needs (only one can execute)
    assert balance_of(alice_account, symbol.asset).held == D(10)

    place(bob, bob_account, side="buy", price="11.00", quantity="4")
    driver.run()
    assert reload(take_profit).status == "partially_filled"
    stop_loss = reload(stop_loss)
    assert (stop_loss.status, stop_loss.status_reason) == ("cancelled", "oco")
    # 4 sold, 6 still held for the take-profit, the stop's 10 released
    assert balance_of(alice_account, symbol.asset).held == D(6)
    assert balance_of(alice_account, symbol.asset).available == D(990)
    check_books(driver)


def test_an_oco_leg_must_be_an_open_unpaired_order_of_the_same_account(
    alice, bob, alice_account, bob_account
):
    first = place(alice, alice_account, side="sell", price="11.00", quantity="10")
    place(
        alice,
        alice_account,
        side="sell",
        price="12.00",
        quantity="1",
        oco_with=first.pk,
    )
    for user, account, partner in (
        (alice, alice_account, first.pk),  # already paired
        (bob, bob_account, first.pk),  # someone else's
        (alice, alice_account, 999_999),  # no such order
    ):
        before = Order.objects.count()
        with pytest.raises(OrderError) as error:
            place(
                user,
                account,
                side="sell",
                price="12.00",
                quantity="1",
                oco_with=partner,
            )
        assert (error.value.code, error.value.status) == ("invalid_oco", 422)
        assert Order.objects.count() == before


# -- amend -----------------------------------------------------------------------------


def test_amending_quantity_down_keeps_priority_and_releases_cash(
    driver, bob, bob_account, symbol
):
    first = place(bob, bob_account, side="buy", price="10.00", quantity="50")
    second = place(bob, bob_account, side="buy", price="10.00", quantity="10")
    driver.run()
    priority = reload(first).priority
    order_amend(user=bob, order_id=first.pk, amend=AmendSpec(quantity=D(20)))
    driver.run()
    first = reload(first)
    assert (first.quantity, first.priority, first.held_amount) == (
        D(20),
        priority,
        D("200.00"),
    )
    second_priority = reload(second).priority
    assert first.priority is not None and second_priority is not None
    assert first.priority < second_priority
    assert balance_of(bob_account, symbol.currency).held == D("300.00")
    assert transitions(first)[-1] == ("working", "working", "amended")
    check_books(driver)


def test_amending_the_price_up_holds_more_at_once_and_loses_priority(
    driver, alice, bob, alice_account, bob_account, symbol
):
    first = place(bob, bob_account, side="buy", price="10.00", quantity="10")
    second = place(bob, bob_account, side="buy", price="10.50", quantity="10")
    driver.run()
    order_amend(user=bob, order_id=first.pk, amend=AmendSpec(price=D("10.50")))
    # held at the request: 10 x 10.50
    assert reload(first).held_amount == D("105.00")
    assert balance_of(bob_account, symbol.currency).held == D("210.00")
    driver.run()
    first = reload(first)
    assert first.price == D("10.50")
    second_priority = reload(second).priority
    assert first.priority is not None and second_priority is not None
    assert first.priority > second_priority
    # the older order at 10.50 fills first
    place(alice, alice_account, side="sell", price="10.50", quantity="10")
    driver.run()
    assert reload(second).status == "filled"
    assert reload(first).status == "working"
    check_books(driver)


def test_amending_a_filled_order_is_refused_and_changes_nothing(
    driver, alice, bob, alice_account, bob_account
):
    order = place(bob, bob_account, side="buy", price="10.00", quantity="10")
    place(alice, alice_account, side="sell", price="10.00", quantity="10")
    driver.run()
    requests = OrderRequest.objects.count()
    with pytest.raises(OrderError) as error:
        order_amend(user=bob, order_id=order.pk, amend=AmendSpec(quantity=D(5)))
    assert (error.value.code, error.value.status) == ("order_not_open", 409)
    assert OrderRequest.objects.count() == requests


@pytest.mark.parametrize(
    ("amend", "code"),
    [
        (AmendSpec(), "nothing_to_amend"),
        (AmendSpec(quantity=D("0")), "invalid_quantity"),
        (AmendSpec(price=D("10.001")), "price_off_tick"),
        (AmendSpec(stop_price=D("9.00")), "not_amendable"),
    ],
)
def test_bad_amends_are_refused_and_change_nothing(
    driver, bob, bob_account, amend, code
):
    order = place(bob, bob_account, side="buy", price="10.00", quantity="10")
    driver.run()
    requests = OrderRequest.objects.count()
    with pytest.raises(OrderError) as error:
        order_amend(user=bob, order_id=order.pk, amend=amend)
    assert error.value.code == code
    assert OrderRequest.objects.count() == requests
    assert reload(order).held_amount == D("100.00")


def test_amend_and_cancel_all_over_rest(driver, bob, bob_account, bob_client, symbol):
    a = place(bob, bob_account, side="buy", price="10.00", quantity="10")
    b = place(bob, bob_account, side="buy", price="9.00", quantity="10")
    driver.run()
    response = bob_client.patch(
        f"/api/v1/orders/{a.pk}", {"quantity": "5"}, format="json"
    )
    assert response.status_code == 202, response.json()
    bad = bob_client.patch(f"/api/v1/orders/{a.pk}", {"quantity": 5}, format="json")
    assert (bad.status_code, bad.json()["code"]) == (400, "not_a_string")
    driver.run()
    assert reload(a).quantity == D(5)

    response = bob_client.post(
        "/api/v1/orders/cancel-all",
        {"account": bob_account.pk, "symbol": "XSX:XS01", "side": "buy"},
        format="json",
    )
    assert response.status_code == 202, response.json()
    assert response.json() == {"cancelling": 2, "orders": [a.pk, b.pk]}
    driver.run()
    assert {reload(a).status, reload(b).status} == {"cancelled"}
    assert balance_of(bob_account, symbol.currency).held == 0
    check_books(driver)


def test_cancel_all_filters_by_side_and_refuses_other_accounts(
    driver, alice, bob, alice_account, bob_account
):
    buy = place(bob, bob_account, side="buy", price="9.00", quantity="10")
    sell = place(bob, bob_account, side="sell", price="11.00", quantity="10")
    driver.run()
    cancelled = order_cancel_all(user=bob, account_id=bob_account.pk, side="sell")
    assert [o.pk for o in cancelled] == [sell.pk]
    driver.run()
    assert (reload(buy).status, reload(sell).status) == ("working", "cancelled")
    with pytest.raises(OrderError) as error:
        order_cancel_all(user=alice, account_id=bob_account.pk)
    assert error.value.code == "account_forbidden"


# -- expiry ------------------------------------------------------------------------------


def test_a_gtd_order_expires_at_its_time_and_releases_its_reservation(
    driver, bob, bob_account, symbol
):
    expire_at = timezone.now() + timedelta(hours=1)
    order = place(
        bob,
        bob_account,
        side="buy",
        price="10.00",
        quantity="10",
        time_in_force="gtd",
        expire_at=expire_at,
    )
    driver.run()
    assert orders_expire_due() == 0
    with time_machine.travel(expire_at + timedelta(seconds=1)):
        assert orders_expire_due() == 1
        assert orders_expire_due() == 0  # queued once
        driver.run()
    order = reload(order)
    assert (order.status, order.status_reason, order.held_amount) == (
        "expired",
        "expired",
        0,
    )
    assert balance_of(bob_account, symbol.currency).held == 0
    check_books(driver)


def test_a_day_order_expires_at_the_end_of_the_markets_trading_date(
    driver, bob, bob_account, market
):
    order = place(
        bob, bob_account, side="buy", price="10.00", quantity="10", time_in_force="day"
    )
    assert order.expire_at is not None
    local = order.expire_at.astimezone(market.tzinfo)
    assert (local.hour, local.minute) == (0, 0)
    assert local.date() == timezone.now().astimezone(market.tzinfo).date() + timedelta(
        days=1
    )
    driver.run()
    with time_machine.travel(order.expire_at):
        assert orders_expire_due(market=market) == 1
        driver.run()
    assert reload(order).status == "expired"
    check_books(driver)
