"""Hand-written behaviour tests for the matching engine's order book."""

from __future__ import annotations

import ast
import dataclasses
import itertools
from pathlib import Path

import pytest

from exchange.engine import (
    Accepted,
    Cancelled,
    CancelOrder,
    CancelReason,
    Fill,
    NewOrder,
    OrderBook,
    OrderType,
    Rejected,
    RejectReason,
    Rested,
    RestoreOrder,
    Side,
    TimeInForce,
)

BUY = Side.BUY
SELL = Side.SELL
GTC = TimeInForce.GTC
IOC = TimeInForce.IOC
FOK = TimeInForce.FOK
DUPLICATE = RejectReason.DUPLICATE_ORDER_ID
UNKNOWN = RejectReason.UNKNOWN_ORDER
BAD_QUANTITY = RejectReason.INVALID_QUANTITY
BAD_PRICE = RejectReason.INVALID_PRICE


def limit(
    order_id: int,
    side: Side,
    quantity: int,
    price: int | None,
    tif: TimeInForce = GTC,
    owner: int = 0,
) -> NewOrder:
    return NewOrder(order_id, side, OrderType.LIMIT, tif, quantity, price, owner)


def market(
    order_id: int,
    side: Side,
    quantity: int,
    tif: TimeInForce = IOC,
    protection: int | None = None,
    owner: int = 0,
) -> NewOrder:
    return NewOrder(order_id, side, OrderType.MARKET, tif, quantity, protection, owner)


def fill(
    trade_id: int,
    maker: int,
    taker: int,
    aggressor: Side,
    price: int,
    quantity: int,
    maker_remaining: int,
    taker_remaining: int,
    maker_owner: int = 0,
    taker_owner: int = 0,
) -> Fill:
    return Fill(
        trade_id,
        maker,
        taker,
        maker_owner,
        taker_owner,
        aggressor,
        price,
        quantity,
        maker_remaining,
        taker_remaining,
    )


def book_with(*commands: NewOrder | RestoreOrder) -> OrderBook:
    """A book built from commands that must all simply rest."""
    book = OrderBook()
    for command in commands:
        events = book.apply(command)
        assert isinstance(events[-1], Rested), events
    return book


def asks_100_101_102() -> OrderBook:
    return book_with(
        limit(1, SELL, 5, 100),
        limit(2, SELL, 5, 101),
        limit(3, SELL, 5, 102),
    )


# ----------------------------------------------------------------------------
# Resting and simple fills
# ----------------------------------------------------------------------------


def test_a_limit_order_on_an_empty_book_is_accepted_and_rests() -> None:
    book = OrderBook()

    events = book.apply(limit(1, BUY, 10, 100, owner=7))

    assert events == [Accepted(1), Rested(1, BUY, 100, 10)]
    assert book.best_bid() == (100, 10, 1)
    assert book.best_ask() is None
    assert book.get(1) == (BUY, 100, 10)
    assert book.orders() == [(1, BUY, 100, 10, 7)]
    assert len(book) == 1
    assert 1 in book


def test_it_fills_at_the_resting_price() -> None:
    book = book_with(limit(1, SELL, 5, 100, owner=11))

    events = book.apply(limit(2, BUY, 5, 105, owner=22))

    assert events == [
        Accepted(2),
        fill(1, 1, 2, BUY, 100, 5, 0, 0, maker_owner=11, taker_owner=22),
    ]
    assert len(book) == 0
    assert book.best_ask() is None
    assert book.best_bid() is None


def test_a_sell_taker_fills_at_the_resting_bid_price() -> None:
    book = book_with(limit(1, BUY, 5, 100))

    events = book.apply(limit(2, SELL, 3, 90))

    assert events == [Accepted(2), fill(1, 1, 2, SELL, 100, 3, 2, 0)]
    assert book.best_bid() == (100, 2, 1)
    assert book.get(1) == (BUY, 100, 2)


def test_a_partially_filled_taker_rests_its_remainder_at_its_own_price() -> None:
    book = book_with(limit(1, SELL, 4, 100))

    events = book.apply(limit(2, BUY, 10, 101))

    assert events == [
        Accepted(2),
        fill(1, 1, 2, BUY, 100, 4, 0, 6),
        Rested(2, BUY, 101, 6),
    ]
    assert book.best_bid() == (101, 6, 1)
    assert book.best_ask() is None


def test_a_taker_sweeps_several_levels_best_price_first() -> None:
    book = asks_100_101_102()

    events = book.apply(limit(9, BUY, 12, 102))

    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 100, 5, 0, 7),
        fill(2, 2, 9, BUY, 101, 5, 0, 2),
        fill(3, 3, 9, BUY, 102, 2, 3, 0),
    ]
    assert book.depth() == ([], [(102, 3, 1)])
    assert book.level(SELL, 100) == (0, 0)
    assert book.level(SELL, 101) == (0, 0)


def test_a_limit_order_never_trades_through_its_price() -> None:
    book = asks_100_101_102()

    events = book.apply(limit(9, BUY, 12, 101))

    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 100, 5, 0, 7),
        fill(2, 2, 9, BUY, 101, 5, 0, 2),
        Rested(9, BUY, 101, 2),
    ]
    assert book.depth() == ([(101, 2, 1)], [(102, 5, 1)])


def test_a_sell_taker_hits_the_highest_bid_first() -> None:
    book = book_with(limit(1, BUY, 5, 98), limit(2, BUY, 5, 100), limit(3, BUY, 5, 99))

    events = book.apply(limit(9, SELL, 8, 99))

    assert events == [
        Accepted(9),
        fill(1, 2, 9, SELL, 100, 5, 0, 3),
        fill(2, 3, 9, SELL, 99, 3, 2, 0),
    ]
    assert book.depth() == ([(99, 2, 1), (98, 5, 1)], [])


def test_orders_at_the_same_price_fill_in_time_priority() -> None:
    book = book_with(
        limit(1, SELL, 3, 100),
        limit(2, SELL, 3, 100),
        limit(3, SELL, 3, 100),
    )

    events = book.apply(limit(9, BUY, 5, 100))

    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 100, 3, 0, 2),
        fill(2, 2, 9, BUY, 100, 2, 1, 0),
    ]
    assert book.level(SELL, 100) == (4, 2)
    assert [o[0] for o in book.orders()] == [2, 3]


def test_a_partially_filled_maker_keeps_its_place_at_the_front() -> None:
    book = book_with(limit(1, SELL, 5, 100), limit(2, SELL, 5, 100))
    book.apply(limit(8, BUY, 2, 100))

    events = book.apply(limit(9, BUY, 4, 100))

    assert events == [
        Accepted(9),
        fill(2, 1, 9, BUY, 100, 3, 0, 1),
        fill(3, 2, 9, BUY, 100, 1, 4, 0),
    ]


def test_a_later_order_at_a_better_price_fills_before_an_older_worse_one() -> None:
    book = book_with(limit(1, SELL, 5, 101), limit(2, SELL, 5, 100))

    events = book.apply(limit(9, BUY, 5, 101))

    assert events == [Accepted(9), fill(1, 2, 9, BUY, 100, 5, 0, 0)]
    assert book.orders() == [(1, SELL, 101, 5, 0)]


def test_a_non_crossing_order_rests_behind_the_existing_level() -> None:
    book = book_with(limit(1, BUY, 5, 100), limit(2, SELL, 5, 101))

    events = book.apply(limit(3, BUY, 2, 100))

    assert events == [Accepted(3), Rested(3, BUY, 100, 2)]
    assert book.level(BUY, 100) == (7, 2)
    assert book.orders() == [
        (1, BUY, 100, 5, 0),
        (3, BUY, 100, 2, 0),
        (2, SELL, 101, 5, 0),
    ]


# ----------------------------------------------------------------------------
# Time in force
# ----------------------------------------------------------------------------


def test_ioc_cancels_the_unfilled_remainder() -> None:
    book = asks_100_101_102()

    events = book.apply(limit(9, BUY, 8, 100, IOC))

    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 100, 5, 0, 3),
        Cancelled(9, 3, CancelReason.IOC_REMAINDER),
    ]
    assert 9 not in book
    assert book.best_bid() is None
    assert book.best_ask() == (101, 5, 1)


def test_ioc_that_fills_completely_emits_no_cancel() -> None:
    book = asks_100_101_102()

    events = book.apply(limit(9, BUY, 5, 100, IOC))

    assert events == [Accepted(9), fill(1, 1, 9, BUY, 100, 5, 0, 0)]


def test_ioc_that_does_not_cross_is_cancelled_whole() -> None:
    book = asks_100_101_102()

    events = book.apply(limit(9, BUY, 5, 99, IOC))

    assert events == [Accepted(9), Cancelled(9, 5, CancelReason.IOC_REMAINDER)]
    assert book.best_bid() is None
    assert len(book) == 3


def test_fok_that_cannot_fill_in_full_is_cancelled_without_any_fill() -> None:
    book = asks_100_101_102()
    before = book.orders()

    events = book.apply(limit(9, BUY, 16, 102, FOK))

    assert events == [Accepted(9), Cancelled(9, 16, CancelReason.FOK_UNFILLABLE)]
    assert book.orders() == before


def test_fok_only_counts_liquidity_within_its_limit_price() -> None:
    book = asks_100_101_102()

    events = book.apply(limit(9, BUY, 11, 101, FOK))

    assert events == [Accepted(9), Cancelled(9, 11, CancelReason.FOK_UNFILLABLE)]
    assert len(book) == 3


def test_fok_that_can_fill_in_full_fills_entirely() -> None:
    book = asks_100_101_102()

    events = book.apply(limit(9, BUY, 10, 101, FOK))

    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 100, 5, 0, 5),
        fill(2, 2, 9, BUY, 101, 5, 0, 0),
    ]
    assert book.depth() == ([], [(102, 5, 1)])


def test_a_sell_fok_checks_bids_from_the_highest_down_to_its_limit() -> None:
    book = book_with(limit(1, BUY, 5, 100), limit(2, BUY, 5, 99), limit(3, BUY, 5, 98))

    assert book.apply(limit(8, SELL, 11, 99, FOK)) == [
        Accepted(8),
        Cancelled(8, 11, CancelReason.FOK_UNFILLABLE),
    ]
    assert book.apply(limit(9, SELL, 10, 99, FOK)) == [
        Accepted(9),
        fill(1, 1, 9, SELL, 100, 5, 0, 5),
        fill(2, 2, 9, SELL, 99, 5, 0, 0),
    ]


def test_fok_on_an_empty_book_is_cancelled() -> None:
    book = OrderBook()

    events = book.apply(limit(1, SELL, 1, 100, FOK))

    assert events == [Accepted(1), Cancelled(1, 1, CancelReason.FOK_UNFILLABLE)]


# ----------------------------------------------------------------------------
# Market orders
# ----------------------------------------------------------------------------


def test_a_market_order_sweeps_the_book_and_cancels_the_remainder() -> None:
    book = asks_100_101_102()

    events = book.apply(market(9, BUY, 20))

    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 100, 5, 0, 15),
        fill(2, 2, 9, BUY, 101, 5, 0, 10),
        fill(3, 3, 9, BUY, 102, 5, 0, 5),
        Cancelled(9, 5, CancelReason.MARKET_REMAINDER),
    ]
    assert len(book) == 0


def test_a_market_order_that_fills_completely_emits_no_cancel() -> None:
    book = asks_100_101_102()

    events = book.apply(market(9, BUY, 7))

    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 100, 5, 0, 2),
        fill(2, 2, 9, BUY, 101, 2, 3, 0),
    ]


def test_a_market_order_on_an_empty_book_is_cancelled() -> None:
    book = OrderBook()

    events = book.apply(market(1, SELL, 5))

    assert events == [Accepted(1), Cancelled(1, 5, CancelReason.MARKET_REMAINDER)]


def test_a_gtc_market_order_is_rejected() -> None:
    # The contract makes MARKET orders IOC or FOK only.
    book = book_with(limit(1, SELL, 5, 100))

    events = book.apply(market(9, BUY, 8, tif=GTC))

    assert events == [Rejected(9, RejectReason.INVALID_TIME_IN_FORCE)]
    assert 9 not in book
    assert book.orders() == [(1, SELL, 100, 5, 0)]


def test_a_market_buy_never_fills_above_its_protection_limit() -> None:
    book = asks_100_101_102()

    events = book.apply(market(9, BUY, 20, protection=101))

    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 100, 5, 0, 15),
        fill(2, 2, 9, BUY, 101, 5, 0, 10),
        Cancelled(9, 10, CancelReason.MARKET_REMAINDER),
    ]
    assert book.depth() == ([], [(102, 5, 1)])


def test_a_market_sell_never_fills_below_its_protection_limit() -> None:
    book = book_with(limit(1, BUY, 5, 100), limit(2, BUY, 5, 99))

    events = book.apply(market(9, SELL, 8, protection=100))

    assert events == [
        Accepted(9),
        fill(1, 1, 9, SELL, 100, 5, 0, 3),
        Cancelled(9, 3, CancelReason.MARKET_REMAINDER),
    ]
    assert book.depth() == ([(99, 5, 1)], [])


def test_a_fok_market_order_that_cannot_fill_in_full_does_nothing() -> None:
    book = asks_100_101_102()
    before = book.orders()

    events = book.apply(market(9, BUY, 16, tif=FOK))

    assert events == [Accepted(9), Cancelled(9, 16, CancelReason.FOK_UNFILLABLE)]
    assert book.orders() == before


def test_a_fok_market_order_respects_its_protection_limit() -> None:
    book = asks_100_101_102()

    events = book.apply(market(9, BUY, 11, tif=FOK, protection=101))

    assert events == [Accepted(9), Cancelled(9, 11, CancelReason.FOK_UNFILLABLE)]
    assert len(book) == 3


def test_a_fok_market_order_that_can_fill_in_full_fills_entirely() -> None:
    book = asks_100_101_102()

    events = book.apply(market(9, BUY, 15, tif=FOK))

    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 100, 5, 0, 10),
        fill(2, 2, 9, BUY, 101, 5, 0, 5),
        fill(3, 3, 9, BUY, 102, 5, 0, 0),
    ]
    assert len(book) == 0


# ----------------------------------------------------------------------------
# Cancels
# ----------------------------------------------------------------------------


def test_cancel_removes_a_resting_order_and_reports_its_remaining_quantity() -> None:
    book = book_with(limit(1, SELL, 5, 100))
    book.apply(limit(2, BUY, 2, 100))

    events = book.apply(CancelOrder(1))

    assert events == [Cancelled(1, 3, CancelReason.REQUESTED)]
    assert 1 not in book
    assert book.get(1) is None
    assert book.best_ask() is None
    assert book.level(SELL, 100) == (0, 0)


def test_cancelling_a_middle_order_keeps_the_others_in_time_priority() -> None:
    book = book_with(
        limit(1, BUY, 1, 100), limit(2, BUY, 2, 100), limit(3, BUY, 3, 100)
    )

    book.apply(CancelOrder(2))

    assert book.level(BUY, 100) == (4, 2)
    assert book.apply(market(9, SELL, 4)) == [
        Accepted(9),
        fill(1, 1, 9, SELL, 100, 1, 0, 3),
        fill(2, 3, 9, SELL, 100, 3, 0, 0),
    ]


def test_cancel_of_an_unknown_order_is_rejected() -> None:
    book = book_with(limit(1, BUY, 1, 100))

    assert book.apply(CancelOrder(2)) == [Rejected(2, UNKNOWN)]
    assert book.orders() == [(1, BUY, 100, 1, 0)]


def test_cancel_of_a_filled_order_is_rejected() -> None:
    book = book_with(limit(1, BUY, 1, 100))
    book.apply(limit(2, SELL, 1, 100))

    assert book.apply(CancelOrder(1)) == [Rejected(1, UNKNOWN)]
    assert book.apply(CancelOrder(2)) == [Rejected(2, UNKNOWN)]


def test_a_second_cancel_of_the_same_order_is_rejected() -> None:
    book = book_with(limit(1, BUY, 1, 100))

    assert book.apply(CancelOrder(1)) == [Cancelled(1, 1, CancelReason.REQUESTED)]
    assert book.apply(CancelOrder(1)) == [Rejected(1, UNKNOWN)]


def test_cancel_of_an_ioc_remainder_is_rejected_because_it_never_rested() -> None:
    book = OrderBook()
    book.apply(limit(1, BUY, 1, 100, IOC))

    assert book.apply(CancelOrder(1)) == [Rejected(1, UNKNOWN)]


# ----------------------------------------------------------------------------
# Rejects
# ----------------------------------------------------------------------------


def test_a_new_order_reusing_a_resting_order_id_is_rejected() -> None:
    book = book_with(limit(1, SELL, 5, 100))

    events = book.apply(limit(1, BUY, 5, 100))

    assert events == [Rejected(1, DUPLICATE)]
    assert book.orders() == [(1, SELL, 100, 5, 0)]


def test_an_order_id_can_be_reused_once_the_order_has_left_the_book() -> None:
    book = book_with(limit(1, SELL, 5, 100))
    book.apply(CancelOrder(1))

    assert book.apply(limit(1, BUY, 5, 100)) == [Accepted(1), Rested(1, BUY, 100, 5)]


@pytest.mark.parametrize("quantity", [0, -1])
def test_a_non_positive_quantity_is_rejected(quantity: int) -> None:
    book = OrderBook()

    assert book.apply(limit(1, BUY, quantity, 100)) == [Rejected(1, BAD_QUANTITY)]
    assert book.apply(market(2, BUY, quantity)) == [Rejected(2, BAD_QUANTITY)]
    assert len(book) == 0


@pytest.mark.parametrize("price", [None, 0, -5])
def test_a_limit_order_without_a_positive_price_is_rejected(price: int | None) -> None:
    book = book_with(limit(1, SELL, 5, 100))

    assert book.apply(limit(2, BUY, 5, price)) == [Rejected(2, BAD_PRICE)]
    assert book.orders() == [(1, SELL, 100, 5, 0)]


@pytest.mark.parametrize("price", [0, -5])
def test_a_market_order_with_a_non_positive_protection_is_rejected(price: int) -> None:
    book = book_with(limit(1, BUY, 5, 100))

    assert book.apply(market(2, SELL, 5, protection=price)) == [Rejected(2, BAD_PRICE)]
    assert book.orders() == [(1, BUY, 100, 5, 0)]


def test_non_integer_quantities_and_prices_are_rejected() -> None:
    book = OrderBook()

    assert book.apply(limit(1, BUY, 1.5, 100)) == [  # type: ignore[arg-type]
        Rejected(1, BAD_QUANTITY)
    ]
    assert book.apply(limit(2, BUY, True, 100)) == [Rejected(2, BAD_QUANTITY)]
    assert book.apply(limit(3, BUY, 1, 100.0)) == [  # type: ignore[arg-type]
        Rejected(3, BAD_PRICE)
    ]
    assert len(book) == 0


def test_a_duplicate_id_is_reported_before_other_problems() -> None:
    book = book_with(limit(1, SELL, 5, 100))

    assert book.apply(limit(1, BUY, 0, None)) == [Rejected(1, DUPLICATE)]


# ----------------------------------------------------------------------------
# Restore
# ----------------------------------------------------------------------------


def test_restore_rests_without_matching_and_emits_only_rested() -> None:
    book = OrderBook()

    events = book.apply(RestoreOrder(1, BUY, 100, 7, owner=3))

    assert events == [Rested(1, BUY, 100, 7)]
    assert book.orders() == [(1, BUY, 100, 7, 3)]


def test_restored_orders_queue_in_the_order_they_were_restored() -> None:
    book = OrderBook()
    book.apply(RestoreOrder(5, SELL, 100, 1))
    book.apply(RestoreOrder(2, SELL, 100, 1))
    book.apply(RestoreOrder(9, SELL, 100, 1))

    assert [o[0] for o in book.orders()] == [5, 2, 9]
    assert book.level(SELL, 100) == (3, 3)


def test_a_restored_book_matches_like_the_original() -> None:
    original = book_with(
        limit(1, SELL, 5, 101, owner=1),
        limit(2, SELL, 5, 100, owner=2),
        limit(3, SELL, 5, 100, owner=3),
        limit(4, BUY, 5, 99, owner=4),
    )
    original.apply(limit(5, BUY, 2, 100))  # partially fills order 2
    restored = OrderBook(next_trade_id=itertools.count(2).__next__)
    for order_id, side, price, remaining, owner in original.orders():
        restore = RestoreOrder(order_id, side, price, remaining, owner)
        assert restored.apply(restore) == [Rested(order_id, side, price, remaining)]

    assert restored.orders() == original.orders()
    taker = limit(6, BUY, 10, 101, owner=6)
    events = restored.apply(taker)
    assert events == [
        Accepted(6),
        fill(2, 2, 6, BUY, 100, 3, 0, 7, maker_owner=2, taker_owner=6),
        fill(3, 3, 6, BUY, 100, 5, 0, 2, maker_owner=3, taker_owner=6),
        fill(4, 1, 6, BUY, 101, 2, 3, 0, maker_owner=1, taker_owner=6),
    ]
    assert original.apply(taker) == events


def test_restore_of_an_order_that_would_cross_the_book_is_rejected() -> None:
    book = book_with(limit(1, SELL, 5, 100), limit(2, BUY, 5, 98))

    assert book.apply(RestoreOrder(3, BUY, 100, 1)) == [Rejected(3, BAD_PRICE)]
    assert book.apply(RestoreOrder(4, SELL, 98, 1)) == [Rejected(4, BAD_PRICE)]
    assert book.apply(RestoreOrder(5, BUY, 99, 1)) == [Rested(5, BUY, 99, 1)]
    assert len(book) == 3


def test_restore_rejects_duplicates_and_bad_values() -> None:
    book = book_with(RestoreOrder(1, BUY, 100, 5))

    assert book.apply(RestoreOrder(1, BUY, 99, 5)) == [Rejected(1, DUPLICATE)]
    assert book.apply(RestoreOrder(2, BUY, 99, 0)) == [Rejected(2, BAD_QUANTITY)]
    assert book.apply(RestoreOrder(3, BUY, 0, 5)) == [Rejected(3, BAD_PRICE)]
    assert len(book) == 1


# ----------------------------------------------------------------------------
# Trade ids, events, queries
# ----------------------------------------------------------------------------


def test_trade_ids_count_up_from_one_by_default() -> None:
    book = asks_100_101_102()

    events = book.apply(market(9, BUY, 15))

    assert [e.trade_id for e in events if isinstance(e, Fill)] == [1, 2, 3]


def test_trade_ids_come_from_the_injected_source() -> None:
    ids = iter([70, 80, 90])
    book = OrderBook(next_trade_id=lambda: next(ids))
    book_commands = [limit(1, SELL, 5, 100), limit(2, SELL, 5, 101)]
    for command in book_commands:
        book.apply(command)

    events = book.apply(market(9, BUY, 10))

    assert [e.trade_id for e in events if isinstance(e, Fill)] == [70, 80]


def test_a_trade_id_is_not_consumed_when_nothing_trades() -> None:
    calls: list[int] = []

    def next_id() -> int:
        calls.append(1)
        return len(calls)

    book = OrderBook(next_trade_id=next_id)
    book.apply(limit(1, SELL, 5, 100))
    book.apply(limit(2, BUY, 5, 99))
    book.apply(limit(3, BUY, 5, 99, FOK))
    book.apply(CancelOrder(1))

    assert calls == []


def test_events_and_commands_are_immutable() -> None:
    event = Accepted(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.order_id = 2  # type: ignore[misc]  # the point: frozen
    command = CancelOrder(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        command.order_id = 2  # type: ignore[misc]
    assert not hasattr(Accepted(1), "__dict__")


def test_an_empty_book_reports_nothing() -> None:
    book = OrderBook()

    assert book.best_bid() is None
    assert book.best_ask() is None
    assert book.level(BUY, 100) == (0, 0)
    assert book.depth() == ([], [])
    assert book.orders() == []
    assert book.get(1) is None
    assert len(book) == 0
    assert 1 not in book


def test_depth_lists_each_side_best_first_and_can_be_capped() -> None:
    book = book_with(
        limit(1, BUY, 1, 98),
        limit(2, BUY, 2, 99),
        limit(3, BUY, 3, 99),
        limit(4, BUY, 4, 97),
        limit(5, SELL, 5, 102),
        limit(6, SELL, 6, 101),
    )

    assert book.depth() == (
        [(99, 5, 2), (98, 1, 1), (97, 4, 1)],
        [(101, 6, 1), (102, 5, 1)],
    )
    assert book.depth(2) == ([(99, 5, 2), (98, 1, 1)], [(101, 6, 1), (102, 5, 1)])
    assert book.depth(0) == ([], [])
    assert book.best_bid() == (99, 5, 2)
    assert book.best_ask() == (101, 6, 1)
    with pytest.raises(ValueError):
        book.depth(-1)


def test_orders_lists_bids_then_asks_best_first_in_time_priority() -> None:
    book = book_with(
        limit(1, BUY, 1, 98, owner=1),
        limit(2, BUY, 2, 99, owner=2),
        limit(3, BUY, 3, 99, owner=3),
        limit(4, SELL, 4, 102, owner=4),
        limit(5, SELL, 5, 101, owner=5),
        limit(6, SELL, 6, 101, owner=6),
    )

    assert book.orders() == [
        (2, BUY, 99, 2, 2),
        (3, BUY, 99, 3, 3),
        (1, BUY, 98, 1, 1),
        (5, SELL, 101, 5, 5),
        (6, SELL, 101, 6, 6),
        (4, SELL, 102, 4, 4),
    ]


def test_apply_refuses_something_that_is_not_a_command() -> None:
    with pytest.raises(TypeError):
        OrderBook().apply("cancel 1")  # type: ignore[arg-type]


def test_a_level_drained_from_the_front_keeps_time_priority() -> None:
    # Enough fills and cancels for the level to compact its storage; ids run
    # against arrival order so that only arrival order can explain the result.
    book = OrderBook()
    arrival = list(range(200, 0, -1))
    for order_id in arrival:
        book.apply(RestoreOrder(order_id, SELL, 100, 1))
    cancelled = set(arrival[150::2])
    for order_id in cancelled:
        book.apply(CancelOrder(order_id))
    fills: list[int] = []
    for taker_id in range(1000, 1120):
        events = book.apply(market(taker_id, BUY, 1))
        fills += [e.maker_order_id for e in events if isinstance(e, Fill)]

    assert fills == arrival[:120]
    remaining = [o[0] for o in book.orders()]
    assert remaining == [i for i in arrival[120:] if i not in cancelled]
    assert book.level(SELL, 100) == (len(remaining), len(remaining))


# ----------------------------------------------------------------------------
# Purity
# ----------------------------------------------------------------------------

ENGINE_DIR = Path(__file__).resolve().parents[3] / "exchange" / "engine"
FORBIDDEN_MODULES = {
    "datetime",
    "decimal",
    "django",
    "io",
    "os",
    "random",
    "socket",
    "time",
}


def test_the_engine_imports_no_django_clock_randomness_or_io() -> None:
    sources = sorted(ENGINE_DIR.glob("*.py"))
    assert sources, ENGINE_DIR
    for source in sources:
        tree = ast.parse(source.read_text(), filename=str(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top not in FORBIDDEN_MODULES, f"{source.name}: {name}"
