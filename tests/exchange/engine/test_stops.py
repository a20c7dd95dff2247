"""Stop, stop-limit and trailing stop orders, with exact events (docs/engine.md).

References LAST/BID/ASK, firing once, the trigger cascade in trigger order,
trailing levels (amount and bps), and no firing in auction.
"""

from __future__ import annotations

import pytest

from exchange.engine import (
    Accepted,
    BandBreached,
    Cancelled,
    CancelOrder,
    CancelReason,
    ExpireOrder,
    OrderType,
    OrderView,
    Rested,
    SetAuction,
    SetBand,
    SetLastPrice,
    Side,
    StopMoved,
    TimeInForce,
    Triggered,
    TriggerRef,
    Waiting,
)
from tests.exchange.engine.test_orders import book_with, fill, order

BUY = Side.BUY
SELL = Side.SELL
LIMIT = OrderType.LIMIT
STOP = OrderType.STOP
STOP_LIMIT = OrderType.STOP_LIMIT
TRAILING = OrderType.TRAILING_STOP
GTC = TimeInForce.GTC
DAY = TimeInForce.DAY
GTD = TimeInForce.GTD
IOC = TimeInForce.IOC
FOK = TimeInForce.FOK
C = CancelReason


def test_a_parked_stop_is_live_but_not_on_the_book() -> None:
    book = book_with(order(1, SELL, 5, 100))

    events = book.apply(order(2, BUY, 4, order_type=STOP, tif=IOC, stop_price=100))

    assert events == [Accepted(2), Waiting(2, 100)]
    assert 2 in book
    assert len(book) == 2
    assert book.depth() == ([], [(100, 5, 1)])
    assert book.view(2) == OrderView(
        2, BUY, STOP, IOC, None, 4, None, 0, True, stop_price=100
    )
    assert book.apply(CancelOrder(2)) == [Cancelled(2, 4, C.REQUESTED)]
    assert 2 not in book


@pytest.mark.parametrize("tif", [GTC, DAY, GTD])
def test_a_stop_lives_by_its_time_in_force_and_fires_as_a_market_order(
    tif: TimeInForce,
) -> None:
    # A stop's time in force is the life of the stop; the market order it fires
    # as trades what the book has and its remainder is cancelled, never rests.
    book = book_with(order(1, SELL, 5, 100), order(2, SELL, 1, 101))
    assert book.apply(
        order(3, BUY, 8, 102, order_type=STOP, tif=tif, stop_price=100)
    ) == [Accepted(3), Waiting(3, 100)]
    assert book.view(3) == OrderView(
        3, BUY, STOP, tif, 102, 8, None, 0, True, stop_price=100
    )

    events = book.apply(order(9, BUY, 1, 100))

    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 100, 1, 4, 0),
        Triggered(3, 100),
        fill(2, 1, 3, BUY, 100, 4, 0, 4),
        fill(3, 2, 3, BUY, 101, 1, 0, 3),
        Cancelled(3, 3, C.MARKET_REMAINDER),
    ]
    assert 3 not in book


@pytest.mark.parametrize("tif", [GTC, DAY, GTD])
def test_a_trailing_stop_with_a_resting_time_in_force_parks_and_can_expire(
    tif: TimeInForce,
) -> None:
    book = book_with(order(1, SELL, 1, 100), order(2, BUY, 1, 100))  # last 100

    events = book.apply(order(3, SELL, 2, order_type=TRAILING, tif=tif, trail_amount=3))

    assert events == [Accepted(3), Waiting(3, 97)]
    assert book.apply(ExpireOrder(3)) == [Cancelled(3, 2, C.EXPIRED)]


def test_a_buy_stop_fires_when_the_last_price_reaches_it() -> None:
    book = book_with(
        order(1, SELL, 5, 100),
        order(2, SELL, 5, 102),
        order(3, BUY, 4, order_type=STOP, tif=IOC, stop_price=100),
    )

    events = book.apply(order(9, BUY, 2, 100))

    # The trade sets the last price to 100: the stop fires as a market order.
    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 100, 2, 3, 0),
        Triggered(3, 100),
        fill(2, 1, 3, BUY, 100, 3, 0, 1),
        fill(3, 2, 3, BUY, 102, 1, 4, 0),
    ]
    assert 3 not in book


def test_a_sell_stop_fires_at_or_below_and_keeps_its_protection_price() -> None:
    book = book_with(
        order(1, BUY, 5, 100),
        order(2, BUY, 5, 98),
        order(3, SELL, 6, 99, order_type=STOP, tif=IOC, stop_price=100),
    )

    events = book.apply(order(9, SELL, 1, 100))

    assert events == [
        Accepted(9),
        fill(1, 1, 9, SELL, 100, 1, 4, 0),
        Triggered(3, 100),
        fill(2, 1, 3, SELL, 100, 4, 0, 2),
        Cancelled(3, 2, C.MARKET_REMAINDER),
    ]
    assert book.depth() == ([(98, 5, 1)], [])


def test_a_stop_limit_already_triggerable_fires_on_acceptance_and_rests() -> None:
    book = book_with(order(1, SELL, 2, 101), order(2, BUY, 1, 101))  # last 101

    events = book.apply(order(3, BUY, 5, 101, order_type=STOP_LIMIT, stop_price=101))

    assert events == [
        Accepted(3),
        Waiting(3, 101),
        Triggered(3, 101),
        fill(2, 1, 3, BUY, 101, 1, 0, 4),
        Rested(3, BUY, 101, 4),
    ]
    # Now a plain limit order on the book: it never goes back to the park.
    assert book.view(3) == OrderView(3, BUY, LIMIT, GTC, 101, 4, 4, 0, False)


def test_a_bid_triggered_stop_fires_when_the_best_bid_drops_to_it() -> None:
    book = book_with(
        order(1, BUY, 5, 100),
        order(2, BUY, 5, 98),
        order(
            3, SELL, 2, order_type=STOP, tif=IOC, stop_price=99, trigger=TriggerRef.BID
        ),
    )

    events = book.apply(CancelOrder(1))

    assert events == [
        Cancelled(1, 5, C.REQUESTED),
        Triggered(3, 98),
        fill(1, 2, 3, SELL, 98, 2, 3, 0),
    ]


def test_an_ask_triggered_stop_fires_when_the_best_ask_rises_to_it() -> None:
    book = book_with(
        order(1, SELL, 5, 100),
        order(2, SELL, 5, 102),
        order(
            3, BUY, 2, order_type=STOP, tif=IOC, stop_price=101, trigger=TriggerRef.ASK
        ),
    )

    events = book.apply(CancelOrder(1))

    assert events == [
        Cancelled(1, 5, C.REQUESTED),
        Triggered(3, 102),
        fill(1, 2, 3, BUY, 102, 2, 3, 0),
    ]


def test_a_reference_that_does_not_exist_fires_nothing() -> None:
    book = book_with(
        order(
            1, SELL, 2, order_type=STOP, tif=IOC, stop_price=99, trigger=TriggerRef.BID
        ),
        order(2, BUY, 2, order_type=STOP, tif=IOC, stop_price=1),  # LAST: none yet
    )

    assert book.apply(order(3, SELL, 5, 100)) == [Accepted(3), Rested(3, SELL, 100, 5)]
    assert [v.order_id for v in book.snapshot() if v.parked] == [1, 2]


def test_stops_fire_in_trigger_order_and_cascade() -> None:
    book = book_with(
        order(1, SELL, 1, 100),
        order(2, SELL, 1, 101),
        order(3, SELL, 5, 102),
        order(10, BUY, 1, order_type=STOP, tif=IOC, stop_price=100),
        order(11, BUY, 1, order_type=STOP, tif=IOC, stop_price=101),
        order(12, BUY, 1, order_type=STOP, tif=IOC, stop_price=100),
    )

    events = book.apply(order(9, BUY, 1, 100))

    # Last 100 fires 10 and 12 (oldest first); 10's trade at 101 fires 11,
    # which queues behind 12.
    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 100, 1, 0, 0),
        Triggered(10, 100),
        fill(2, 2, 10, BUY, 101, 1, 0, 0),
        Triggered(12, 100),
        fill(3, 3, 12, BUY, 102, 1, 4, 0),
        Triggered(11, 101),
        fill(4, 3, 11, BUY, 102, 1, 3, 0),
    ]
    assert book.snapshot() == [OrderView(3, SELL, LIMIT, GTC, 102, 3, 3, 0, False)]
    # Each fired once: prices going back and forth fire nothing more.
    assert book.apply(SetLastPrice(90)) == []
    assert book.apply(SetLastPrice(110)) == []


def test_no_stop_fires_in_auction() -> None:
    book = book_with(
        order(1, SELL, 5, 100),
        order(2, BUY, 2, order_type=STOP, tif=IOC, stop_price=100),
        SetAuction(True),
    )

    assert book.apply(SetLastPrice(100)) == []
    assert book.apply(order(3, BUY, 1, order_type=STOP, tif=FOK, stop_price=90)) == [
        Accepted(3),
        Waiting(3, 90),
    ]
    assert book.apply(SetAuction(False)) == [
        Triggered(2, 100),
        fill(1, 1, 2, BUY, 100, 2, 3, 0),
        Triggered(3, 100),
        fill(2, 1, 3, BUY, 100, 1, 2, 0),
    ]


def test_a_band_breach_in_the_cascade_leaves_the_queued_stops_parked() -> None:
    book = book_with(
        SetBand(90, 105),
        order(1, SELL, 1, 100),
        order(2, SELL, 5, 110),
        order(10, BUY, 2, order_type=STOP, tif=IOC, stop_price=100),
        order(11, BUY, 1, order_type=STOP, tif=IOC, stop_price=100),
    )

    events = book.apply(order(9, BUY, 1, 100))

    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 100, 1, 0, 0),
        Triggered(10, 100),
        BandBreached(10, 110),
        Cancelled(10, 2, C.MARKET_REMAINDER),
    ]
    assert book.in_auction
    assert book.view(11) == OrderView(
        11, BUY, STOP, IOC, None, 1, None, 0, True, stop_price=100
    )
    # It fires when the auction ends (and breaches the band in its turn).
    assert book.apply(SetAuction(False)) == [
        Triggered(11, 100),
        BandBreached(11, 110),
        Cancelled(11, 1, C.MARKET_REMAINDER),
    ]


def test_a_fok_stop_fires_as_a_fok_market_order() -> None:
    book = book_with(
        order(1, SELL, 3, 100),
        order(2, BUY, 5, order_type=STOP, tif=FOK, stop_price=90),
    )

    assert book.apply(SetLastPrice(95)) == [
        Triggered(2, 95),
        Cancelled(2, 5, C.FOK_UNFILLABLE),
    ]
    assert book.depth() == ([], [(100, 3, 1)])


def test_a_fired_stop_keeps_its_minimum_quantity() -> None:
    book = book_with(
        order(1, SELL, 3, 100),
        order(2, BUY, 5, 101, order_type=STOP_LIMIT, stop_price=90, min_quantity=4),
    )

    assert book.apply(SetLastPrice(95)) == [
        Triggered(2, 95),
        Cancelled(2, 5, C.MIN_QUANTITY),
    ]


def test_a_trailing_stop_by_amount_follows_the_price_up_and_fires_on_the_way_down() -> (
    None
):
    book = book_with(SetLastPrice(100))

    assert book.apply(
        order(1, SELL, 4, order_type=TRAILING, tif=IOC, trail_amount=3)
    ) == [
        Accepted(1),
        Waiting(1, 97),
    ]
    assert book.apply(SetLastPrice(104)) == [StopMoved(1, 101)]
    assert book.apply(SetLastPrice(102)) == []  # never against the client
    assert book.view(1).stop_price == 101  # type: ignore[union-attr]
    assert book.apply(SetLastPrice(101)) == [
        Triggered(1, 101),
        Cancelled(1, 4, C.MARKET_REMAINDER),
    ]


def test_a_trailing_stop_in_basis_points_rounds_its_distance_down_to_a_tick() -> None:
    book = book_with(SetLastPrice(1000))

    # 25 bps of 1000 is 2.5 ticks: 2.
    assert book.apply(order(1, BUY, 1, order_type=TRAILING, tif=IOC, trail_bps=25)) == [
        Accepted(1),
        Waiting(1, 1002),
    ]
    # 25 bps of 990 is 2.475 ticks: 2.
    assert book.apply(SetLastPrice(990)) == [StopMoved(1, 992)]
    # 25 bps of 30 is under a tick: at least 1.
    assert book.apply(SetLastPrice(30)) == [StopMoved(1, 31)]
    assert book.apply(SetLastPrice(31)) == [
        Triggered(1, 31),
        Cancelled(1, 1, C.MARKET_REMAINDER),
    ]


def test_a_trailing_stop_moves_at_most_once_per_command() -> None:
    book = book_with(
        SetLastPrice(100),
        order(1, SELL, 1, 105),
        order(2, SELL, 1, 110),
        order(3, SELL, 1, order_type=TRAILING, tif=IOC, trail_amount=5),
        order(4, BUY, 1, order_type=STOP, tif=IOC, stop_price=105),
    )
    assert book.view(3).stop_price == 95  # type: ignore[union-attr]

    events = book.apply(order(9, BUY, 1, 105))

    # The first check (last 105) moves it to 100; stop 4's trade at 110
    # would move it again in the same command: it waits for the next one.
    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 105, 1, 0, 0),
        StopMoved(3, 100),
        Triggered(4, 105),
        fill(2, 2, 4, BUY, 110, 1, 0, 0),
    ]
    assert book.apply(SetLastPrice(110)) == [StopMoved(3, 105)]


def test_trailing_stops_move_in_auction_but_do_not_fire() -> None:
    book = book_with(
        SetLastPrice(100),
        order(1, SELL, 2, order_type=TRAILING, tif=IOC, trail_amount=3),
        SetAuction(True),
    )

    assert book.apply(SetLastPrice(110)) == [StopMoved(1, 107)]
    assert book.apply(SetLastPrice(50)) == []
    assert book.apply(SetAuction(False)) == [
        Triggered(1, 50),
        Cancelled(1, 2, C.MARKET_REMAINDER),
    ]


def test_a_trailing_stop_accepted_in_auction_trails_the_current_reference() -> None:
    book = book_with(
        order(1, BUY, 5, 99),
        SetAuction(True),
        order(2, BUY, 5, 101),
    )

    events = book.apply(
        order(
            3,
            SELL,
            1,
            order_type=TRAILING,
            tif=IOC,
            trail_amount=2,
            trigger=TriggerRef.BID,
        )
    )

    assert events == [Accepted(3), Waiting(3, 99)]
