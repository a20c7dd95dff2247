"""Auction mode, uncross, the price band, the last price, and restore (docs/engine.md).

(``test_auction.py`` tests the equilibrium function on its own; this file
tests the book around it.)
"""

from __future__ import annotations

import itertools

from exchange.engine import (
    Accepted,
    AmendOrder,
    BandBreached,
    Cancelled,
    CancelOrder,
    CancelReason,
    Command,
    Fill,
    NewOrder,
    OrderBook,
    OrderType,
    OrderView,
    PostOnly,
    Rejected,
    RejectReason,
    Replenished,
    Rested,
    RestoreOrder,
    SelfTrade,
    SetAuction,
    SetBand,
    SetLastPrice,
    Side,
    TimeInForce,
    Triggered,
    TriggerRef,
    Uncross,
    Waiting,
)
from exchange.engine.auction import Equilibrium
from tests.exchange.engine.test_orders import assert_rejected, book_with, fill, order

BUY = Side.BUY
SELL = Side.SELL
LIMIT = OrderType.LIMIT
MTL = OrderType.MARKET_TO_LIMIT
STOP = OrderType.STOP
STOP_LIMIT = OrderType.STOP_LIMIT
TRAILING = OrderType.TRAILING_STOP
GTC = TimeInForce.GTC
DAY = TimeInForce.DAY
IOC = TimeInForce.IOC
C = CancelReason


def auction_fill(
    trade_id: int, maker: int, taker: int, price: int, quantity: int, mr: int, tr: int
) -> Fill:
    return fill(trade_id, maker, taker, None, price, quantity, mr, tr)


# --------------------------------------------------------------------------
# Auction mode and uncross
# --------------------------------------------------------------------------


def crossed_book() -> OrderBook:
    """In auction: bids 3@101 (1), 4@100 (2); asks 2@99 (3), 4@100 (4), 5@102 (5)."""
    return book_with(
        SetAuction(True),
        order(1, BUY, 3, 101),
        order(2, BUY, 4, 100),
        order(3, SELL, 2, 99),
        order(4, SELL, 4, 100),
        order(5, SELL, 5, 102),
    )


def test_in_auction_limit_orders_rest_without_matching() -> None:
    book = OrderBook()
    assert book.apply(SetAuction(True)) == []
    assert book.in_auction

    assert book.apply(order(1, BUY, 3, 101)) == [Accepted(1), Rested(1, BUY, 101, 3)]
    assert book.apply(order(2, SELL, 2, 99, post_only=PostOnly.REJECT)) == [
        Accepted(2),
        Rested(2, SELL, 99, 2),
    ]
    assert book.depth() == ([(101, 3, 1)], [(99, 2, 1)])


def test_the_indicative_uncross_is_the_equilibrium_of_the_book() -> None:
    book = crossed_book()

    # price  buy>=  sell<=  exec  surplus
    #   99      7      2      2      5
    #  100      7      6      6      1   <- most volume
    #  101      3      6      3      3
    #  102      0     11      0     11
    assert book.indicative() == Equilibrium(100, 6, 1, BUY)
    assert OrderBook().indicative() is None
    assert book_with(order(1, BUY, 1, 99), order(2, SELL, 1, 100)).indicative() is None


def test_uncross_trades_at_one_price_in_price_time_priority_on_both_sides() -> None:
    book = crossed_book()

    events = book.apply(Uncross())

    # The maker of each fill is the older order.
    assert events == [
        auction_fill(1, 1, 3, 100, 2, 1, 0),
        auction_fill(2, 1, 4, 100, 1, 0, 3),
        auction_fill(3, 2, 4, 100, 3, 1, 0),
    ]
    assert book.depth() == ([(100, 1, 1)], [(102, 5, 1)])
    assert book.in_auction  # Uncross does not end the auction
    assert book.last_price == 100
    assert book.indicative() is None


def test_the_older_order_is_the_maker_and_the_reference_breaks_ties() -> None:
    book = book_with(SetAuction(True), order(1, SELL, 2, 99), order(2, BUY, 2, 101))
    assert book.indicative() == Equilibrium(99, 2, 0, None)  # lowest without one

    events = book.apply(Uncross(101))

    assert events == [auction_fill(1, 1, 2, 101, 2, 0, 0)]


def test_an_iceberg_trades_its_hidden_quantity_in_an_uncross() -> None:
    book = book_with(
        SetAuction(True),
        order(1, SELL, 10, 100, display_quantity=2),
        order(2, SELL, 3, 100),
        order(3, BUY, 6, 100),
    )
    assert book.indicative() == Equilibrium(100, 6, 7, SELL)

    events = book.apply(Uncross())

    assert events == [
        auction_fill(1, 1, 3, 100, 6, 4, 0),
        Replenished(1, SELL, 100, 4, 2),
    ]
    assert book.depth() == ([], [(100, 5, 2)])
    assert [v.order_id for v in book.snapshot()] == [2, 1]


def test_an_uncross_fill_cancels_an_oco_partner() -> None:
    book = book_with(
        SetAuction(True),
        order(1, BUY, 2, 100, owner=7),
        order(2, SELL, 2, 110, owner=7, oco_with=1),
        order(3, SELL, 2, 100),
    )

    events = book.apply(Uncross())

    assert events == [
        fill(1, 1, 3, None, 100, 2, 0, 0, maker_owner=7),
        Cancelled(2, 2, C.OCO),
    ]


def test_uncross_outside_auction_does_nothing() -> None:
    book = book_with(order(1, BUY, 1, 99), order(2, SELL, 1, 100))

    assert book.apply(Uncross()) == []


def test_leaving_the_auction_uncrosses_at_the_last_price() -> None:
    book = book_with(
        SetAuction(True),
        order(1, SELL, 2, 99),
        order(2, BUY, 2, 101),
        SetLastPrice(101),
    )

    assert book.apply(SetAuction(False)) == [auction_fill(1, 1, 2, 101, 2, 0, 0)]
    assert not book.in_auction
    assert book.depth() == ([], [])


def test_after_the_auction_orders_match_again() -> None:
    book = crossed_book()
    book.apply(Uncross())
    book.apply(SetAuction(False))

    assert book.apply(order(9, SELL, 1, order_type=OrderType.MARKET, tif=IOC)) == [
        Accepted(9),
        fill(4, 2, 9, SELL, 100, 1, 0, 0),
    ]


# --------------------------------------------------------------------------
# Price band and last price
# --------------------------------------------------------------------------


def test_a_fill_outside_the_band_switches_the_book_to_auction() -> None:
    book = book_with(SetBand(95, 105), order(1, SELL, 5, 104), order(2, SELL, 5, 106))
    assert book.band == (95, 105)

    events = book.apply(order(9, BUY, 10, 110))

    # The fill inside the band stands; the remainder rests (crossing, in auction).
    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 104, 5, 0, 5),
        BandBreached(9, 106),
        Rested(9, BUY, 110, 5),
    ]
    assert book.in_auction
    assert book.depth() == ([(110, 5, 1)], [(106, 5, 1)])


def test_a_market_remainder_stopped_by_the_band_is_cancelled() -> None:
    book = book_with(SetBand(None, 105), order(1, SELL, 5, 104), order(2, SELL, 5, 106))

    events = book.apply(order(9, BUY, 10, order_type=OrderType.MARKET, tif=IOC))

    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 104, 5, 0, 5),
        BandBreached(9, 106),
        Cancelled(9, 5, C.MARKET_REMAINDER),
    ]


def test_a_band_below_the_best_price_breaches_at_once() -> None:
    book = book_with(order(1, BUY, 5, 90), SetBand(95, None))

    events = book.apply(order(9, SELL, 2, 90, tif=IOC))

    assert events == [
        Accepted(9),
        BandBreached(9, 90),
        Cancelled(9, 2, C.IOC_REMAINDER),
    ]


def test_a_self_trade_cancel_outside_the_band_breaches_nothing() -> None:
    book = book_with(order(1, SELL, 5, 106, owner=7), SetBand(None, 105))

    events = book.apply(order(9, BUY, 5, 110, owner=7, stp=SelfTrade.CANCEL_OLDEST))

    assert events == [
        Accepted(9),
        Cancelled(1, 5, C.SELF_TRADE),
        Rested(9, BUY, 110, 5),
    ]
    assert not book.in_auction


def test_the_last_price_is_set_by_fills_and_by_command() -> None:
    book = OrderBook()
    assert book.last_price is None

    book.apply(order(1, SELL, 1, 100))
    book.apply(order(2, BUY, 1, 100))
    assert book.last_price == 100
    assert book.apply(SetLastPrice(97)) == []
    assert book.last_price == 97
    assert book.apply(SetLastPrice(None)) == []
    assert book.last_price is None


# --------------------------------------------------------------------------
# Restore and snapshot
# --------------------------------------------------------------------------


def test_every_kind_of_live_order_can_be_restored() -> None:
    book = OrderBook()

    assert book.apply(
        RestoreOrder(1, BUY, 99, 7, 3, display_quantity=5, visible=2)
    ) == [Rested(1, BUY, 99, 7, 2)]
    assert book.apply(
        RestoreOrder(2, SELL, 101, 4, 3, order_type=MTL, time_in_force=DAY)
    ) == [Rested(2, SELL, 101, 4)]
    assert book.apply(
        RestoreOrder(
            3, SELL, None, 5, 3, order_type=STOP, time_in_force=IOC, stop_price=95
        )
    ) == [Waiting(3, 95)]
    assert book.apply(
        RestoreOrder(
            4, BUY, 105, 5, 3, order_type=STOP_LIMIT, stop_price=104, min_quantity=2
        )
    ) == [Waiting(4, 104)]
    assert book.apply(
        RestoreOrder(
            5,
            SELL,
            None,
            1,
            3,
            order_type=TRAILING,
            time_in_force=IOC,
            stop_price=-2,  # a trailing level may have gone below zero
            trail_amount=5,
            trigger=TriggerRef.BID,
        )
    ) == [Waiting(5, -2)]
    assert book.depth() == ([(99, 2, 1)], [(101, 4, 1)])
    assert book.view(1) == OrderView(
        1, BUY, LIMIT, GTC, 99, 7, 2, 3, False, display_quantity=5
    )
    assert book.view(2) == OrderView(2, SELL, LIMIT, DAY, 101, 4, 4, 3, False)
    assert book.view(4) == OrderView(
        4, BUY, STOP_LIMIT, GTC, 105, 5, None, 3, True, stop_price=104, min_quantity=2
    )


def test_a_restored_oco_pair_is_linked_whichever_leg_comes_first() -> None:
    book = OrderBook()

    book.apply(RestoreOrder(1, SELL, 110, 5, 7, oco_with=2))
    assert book.view(1).oco_with is None  # type: ignore[union-attr]
    book.apply(
        RestoreOrder(
            2,
            SELL,
            None,
            5,
            7,
            order_type=STOP,
            time_in_force=IOC,
            stop_price=90,
            oco_with=1,
        )
    )

    assert book.view(1).oco_with == 2  # type: ignore[union-attr]
    assert book.view(2).oco_with == 1  # type: ignore[union-attr]
    assert book.apply(CancelOrder(1)) == [
        Cancelled(1, 5, C.REQUESTED),
        Cancelled(2, 5, C.OCO),
    ]


def test_restores_that_are_refused() -> None:
    book = book_with(order(1, BUY, 5, 99, owner=7), order(2, SELL, 5, 101, owner=8))
    reject = RejectReason

    assert_rejected(book, RestoreOrder(1, BUY, 98, 1), reject.DUPLICATE_ORDER_ID)
    assert_rejected(book, RestoreOrder(9, BUY, 98, 0), reject.INVALID_QUANTITY)
    assert_rejected(book, RestoreOrder(9, BUY, 101, 1), reject.INVALID_PRICE)  # crosses
    assert_rejected(book, RestoreOrder(9, SELL, 99, 1), reject.INVALID_PRICE)
    assert_rejected(book, RestoreOrder(9, BUY, None, 1), reject.INVALID_PRICE)
    assert_rejected(
        book,
        RestoreOrder(9, BUY, 98, 1, order_type=OrderType.MARKET),
        reject.INVALID_TIME_IN_FORCE,
    )
    assert_rejected(
        book,
        RestoreOrder(9, BUY, 98, 1, time_in_force=IOC),
        reject.INVALID_TIME_IN_FORCE,
    )
    assert_rejected(
        book,
        RestoreOrder(9, BUY, 98, 5, display_quantity=2, visible=3),
        reject.INVALID_QUANTITY,
    )
    assert_rejected(
        book, RestoreOrder(9, BUY, 98, 5, visible=4), reject.INVALID_QUANTITY
    )
    assert_rejected(
        book,
        RestoreOrder(9, BUY, 98, 5, order_type=STOP_LIMIT, stop_price=100, visible=5),
        reject.INVALID_QUANTITY,
    )
    assert_rejected(
        book, RestoreOrder(9, BUY, 98, 5, order_type=STOP_LIMIT), reject.INVALID_STOP
    )
    assert_rejected(
        book, RestoreOrder(9, BUY, 98, 5, 7, oco_with=2), reject.INVALID_OCO
    )
    assert_rejected(
        book, RestoreOrder(9, BUY, 98, 5, 0, oco_with=1), reject.INVALID_OCO
    )
    assert_rejected(
        book,
        RestoreOrder(9, BUY, 98, 5, order_type=MTL, post_only=PostOnly.REJECT),
        reject.INVALID_POST_ONLY,
    )


def test_a_crossing_restore_is_accepted_in_auction() -> None:
    book = book_with(order(1, SELL, 5, 101), SetAuction(True))

    assert book.apply(RestoreOrder(2, BUY, 102, 1)) == [Rested(2, BUY, 102, 1)]


def test_restoring_a_triggerable_stop_does_not_fire_it() -> None:
    book = book_with(order(1, SELL, 5, 100), SetLastPrice(100))

    events = book.apply(
        RestoreOrder(2, BUY, None, 1, order_type=STOP, time_in_force=IOC, stop_price=99)
    )

    assert events == [Waiting(2, 99)]
    # The next command's check fires it.
    assert book.apply(CancelOrder(42)) == [Rejected(42, RejectReason.UNKNOWN_ORDER)]
    assert book.apply(SetLastPrice(100)) == [
        Triggered(2, 100),
        fill(1, 1, 2, BUY, 100, 1, 4, 0),
    ]


def rich_history() -> list[Command]:
    """A book with every kind of live order, in auction, with a band."""
    return [
        SetBand(50, 150),
        order(1, SELL, 5, 100),
        order(2, BUY, 2, 100),  # last price 100
        order(3, BUY, 10, 98, owner=7, display_quantity=3),
        order(
            4,
            SELL,
            4,
            101,
            post_only=PostOnly.REPRICE,
            owner=8,
            stp=SelfTrade.CANCEL_BOTH,
        ),
        order(5, SELL, 3, 99, tif=DAY),  # 1 fills against nothing: rests at 99
        order(6, BUY, 2, 99),  # uses 5 down to 1
        order(7, SELL, 2, order_type=TRAILING, tif=IOC, trail_amount=4, owner=7),
        order(
            8, BUY, 3, 102, order_type=STOP_LIMIT, stop_price=110, owner=7, oco_with=7
        ),
        order(
            9, BUY, 1, order_type=STOP, tif=IOC, stop_price=120, trigger=TriggerRef.ASK
        ),
        order(10, SELL, 6, 98),  # takes 3 of 3's visible part: it refreshes
        SetLastPrice(104),  # the trailing stop moves
        SetAuction(True),
        order(11, BUY, 4, 103),  # crosses, in auction
        order(12, SELL, 2, 97, owner=9),
        AmendOrder(4, quantity=2),
    ]


def test_a_book_rebuilt_from_its_restore_commands_is_the_same_book() -> None:
    original = OrderBook()
    trades = 0
    for command in rich_history():
        events = original.apply(command)
        assert not any(isinstance(e, Rejected) for e in events), (command, events)
        trades += sum(isinstance(e, Fill) for e in events)
    kinds = {
        (v.parked, v.order_type, v.display_quantity is not None)
        for v in original.snapshot()
    }
    assert len(kinds) >= 4  # resting plain and iceberg, parked stop and trailing

    rebuilt = OrderBook(next_trade_id=itertools.count(trades + 1).__next__)
    for command in original.restore_commands():
        events = rebuilt.apply(command)
        assert not any(isinstance(e, Rejected) for e in events), (command, events)

    assert rebuilt.snapshot() == original.snapshot()
    assert rebuilt.restore_commands() == original.restore_commands()
    assert rebuilt.depth() == original.depth()
    assert rebuilt.orders() == original.orders()
    assert (rebuilt.in_auction, rebuilt.band, rebuilt.last_price) == (
        original.in_auction,
        original.band,
        original.last_price,
    )
    assert rebuilt.indicative() == original.indicative()
    future: list[Command] = [
        Uncross(),
        SetAuction(False),
        SetLastPrice(96),
        order(20, SELL, 3, 95),
        AmendOrder(8, stop_price=96),
        CancelOrder(3),
        order(21, BUY, 20, 130, order_type=MTL),
    ]
    for command in future:
        assert rebuilt.apply(command) == original.apply(command), command
        assert rebuilt.snapshot() == original.snapshot()


def test_the_snapshot_lists_resting_orders_by_time_priority_across_the_book() -> None:
    book = book_with(
        order(1, SELL, 1, 105),
        order(2, BUY, 1, 95),
        order(3, SELL, 1, 104),
        order(4, BUY, 1, 96),
        order(5, BUY, 1, order_type=STOP, tif=IOC, stop_price=120),
        order(6, SELL, 1, order_type=STOP, tif=IOC, stop_price=80),
    )
    book.apply(AmendOrder(1, quantity=2))  # loses its place

    assert [v.order_id for v in book.snapshot()] == [2, 3, 4, 1, 5, 6]
    assert book.orders() == [
        (4, BUY, 96, 1, 0),
        (2, BUY, 95, 1, 0),
        (3, SELL, 104, 1, 0),
        (1, SELL, 105, 2, 0),
    ]


def test_restore_commands_of_a_plain_book_are_just_the_orders() -> None:
    book = book_with(order(1, BUY, 1, 95, tif=DAY), order(2, SELL, 2, 105, owner=4))

    assert book.restore_commands() == [
        RestoreOrder(1, BUY, 95, 1, time_in_force=DAY, visible=1),
        RestoreOrder(2, SELL, 105, 2, 4, visible=2),
    ]


def test_a_new_order_is_plain_after_a_restore() -> None:
    book = book_with(RestoreOrder(1, SELL, 100, 5))

    assert book.apply(NewOrder(2, BUY, LIMIT, GTC, 5, 100)) == [
        Accepted(2),
        fill(1, 1, 2, BUY, 100, 5, 0, 0),
    ]
