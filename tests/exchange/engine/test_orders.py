"""Order types and instructions of the engine, with exact events (docs/engine.md).

Validation (every reject reason), market-to-limit, DAY/GTD and expiry, FOK and
minimum quantity, post-only, icebergs, amend, self-trade prevention and OCO.
"""

from __future__ import annotations

from typing import Any

import pytest

from exchange.engine import (
    Accepted,
    Amended,
    AmendOrder,
    BandBreached,
    Cancelled,
    CancelOrder,
    CancelReason,
    Command,
    ExpireOrder,
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

BUY = Side.BUY
SELL = Side.SELL
LIMIT = OrderType.LIMIT
MARKET = OrderType.MARKET
MTL = OrderType.MARKET_TO_LIMIT
STOP = OrderType.STOP
STOP_LIMIT = OrderType.STOP_LIMIT
TRAILING = OrderType.TRAILING_STOP
GTC = TimeInForce.GTC
DAY = TimeInForce.DAY
GTD = TimeInForce.GTD
IOC = TimeInForce.IOC
FOK = TimeInForce.FOK
R = RejectReason
C = CancelReason


def order(
    order_id: int,
    side: Side,
    quantity: Any,
    price: Any = None,
    order_type: OrderType = LIMIT,
    tif: TimeInForce = GTC,
    owner: int = 0,
    **special: Any,
) -> NewOrder:
    return NewOrder(order_id, side, order_type, tif, quantity, price, owner, **special)


def book_with(*commands: Command) -> OrderBook:
    book = OrderBook()
    for command in commands:
        events = book.apply(command)
        assert not any(isinstance(e, Rejected) for e in events), (command, events)
    return book


def fill(
    trade_id: int,
    maker: int,
    taker: int,
    aggressor: Side | None,
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


def state(book: OrderBook) -> object:
    return (
        book.snapshot(),
        book.depth(),
        book.in_auction,
        book.last_price,
        book.band,
        book.indicative(),
    )


def assert_rejected(book: OrderBook, command: Command, reason: RejectReason) -> None:
    """One Rejected event and nothing changed."""
    before = state(book)
    order_id = getattr(command, "order_id", 0)
    assert book.apply(command) == [Rejected(order_id, reason)]
    assert state(book) == before


# --------------------------------------------------------------------------
# Validation: every reject reason
# --------------------------------------------------------------------------


def busy_book() -> OrderBook:
    """A bid at 99 and an ask at 101 (owner 7), a parked stop (id 3, owner 7)."""
    return book_with(
        order(1, BUY, 5, 99, owner=7),
        order(2, SELL, 5, 101, owner=7),
        order(3, SELL, 5, order_type=STOP, tif=IOC, owner=7, stop_price=90),
    )


@pytest.mark.parametrize("order_id", [1, 3])
def test_an_id_of_a_live_order_resting_or_parked_is_a_duplicate(order_id: int) -> None:
    assert_rejected(busy_book(), order(order_id, BUY, 1, 98), R.DUPLICATE_ORDER_ID)


@pytest.mark.parametrize("quantity", [0, -1, True, 1.0, None])
def test_a_quantity_must_be_a_positive_int(quantity: Any) -> None:
    assert_rejected(busy_book(), order(9, BUY, quantity, 98), R.INVALID_QUANTITY)
    assert_rejected(
        busy_book(),
        order(9, BUY, quantity, order_type=MARKET, tif=IOC),
        R.INVALID_QUANTITY,
    )


@pytest.mark.parametrize(
    "command",
    [
        order(9, BUY, 5, None),
        order(9, BUY, 5, 0),
        order(9, BUY, 5, True),
        order(9, BUY, 5, 99.0),
        order(9, BUY, 5, 0, order_type=MARKET, tif=IOC),
        order(9, BUY, 5, -3, order_type=MTL),
        order(9, BUY, 5, None, order_type=STOP_LIMIT, stop_price=105),
        order(9, BUY, 5, 0, order_type=STOP, tif=IOC, stop_price=105),
    ],
)
def test_a_price_must_be_a_positive_int_where_needed(command: NewOrder) -> None:
    assert_rejected(busy_book(), command, R.INVALID_PRICE)


@pytest.mark.parametrize(
    "command",
    [
        order(9, BUY, 5, order_type=STOP, tif=IOC),
        order(9, BUY, 5, order_type=STOP, tif=IOC, stop_price=0),
        order(9, BUY, 5, 99, order_type=STOP_LIMIT, stop_price=-1),
        order(9, BUY, 5, order_type=STOP, tif=IOC, stop_price=105, trail_amount=2),
        order(9, BUY, 5, 98, stop_price=105),
        order(9, BUY, 5, 98, trigger=TriggerRef.BID),
        order(9, BUY, 5, 98, trail_bps=10),
        order(9, BUY, 5, order_type=MARKET, tif=IOC, trail_amount=1),
        order(9, BUY, 5, order_type=TRAILING, tif=IOC),
        order(9, BUY, 5, order_type=TRAILING, tif=IOC, trail_amount=1, trail_bps=1),
        order(9, BUY, 5, order_type=TRAILING, tif=IOC, trail_amount=0),
        order(9, BUY, 5, order_type=TRAILING, tif=IOC, trail_bps=10000),
        order(9, BUY, 5, order_type=TRAILING, tif=IOC, trail_bps=0),
        order(9, BUY, 5, order_type=TRAILING, tif=IOC, trail_amount=2, stop_price=9),
    ],
)
def test_stop_fields_must_fit_the_order_type(command: NewOrder) -> None:
    assert_rejected(busy_book(), command, R.INVALID_STOP)


@pytest.mark.parametrize(
    "command",
    [
        order(9, BUY, 5, order_type=MARKET, tif=GTC),
        order(9, BUY, 5, order_type=MARKET, tif=DAY),
        order(9, BUY, 5, order_type=MTL, tif=IOC),
        order(9, BUY, 5, order_type=MTL, tif=FOK),
    ],
)
def test_the_time_in_force_must_fit_the_order_type(command: NewOrder) -> None:
    assert_rejected(busy_book(), command, R.INVALID_TIME_IN_FORCE)


@pytest.mark.parametrize(
    "command",
    [
        order(9, BUY, 5, 98, display_quantity=5),
        order(9, BUY, 5, 98, display_quantity=0),
        order(9, BUY, 5, 98, tif=IOC, display_quantity=2),
        order(9, BUY, 5, order_type=MARKET, tif=IOC, display_quantity=2),
        order(9, BUY, 5, 98, order_type=STOP_LIMIT, stop_price=105, display_quantity=2),
        order(9, BUY, 5, 98, min_quantity=6),
        order(9, BUY, 5, 98, min_quantity=-1),
    ],
)
def test_display_and_minimum_quantities_must_fit(command: NewOrder) -> None:
    assert_rejected(busy_book(), command, R.INVALID_QUANTITY)


@pytest.mark.parametrize(
    "command",
    [
        order(9, BUY, 5, 98, tif=IOC, post_only=PostOnly.REJECT),
        order(9, BUY, 5, 98, tif=FOK, post_only=PostOnly.REPRICE),
        order(9, BUY, 5, 98, order_type=MTL, post_only=PostOnly.REJECT),
        order(
            9,
            BUY,
            5,
            98,
            order_type=STOP_LIMIT,
            stop_price=105,
            post_only=PostOnly.REJECT,
        ),
    ],
)
def test_post_only_is_for_resting_limit_orders(command: NewOrder) -> None:
    assert_rejected(busy_book(), command, R.INVALID_POST_ONLY)


def test_the_first_failing_check_gives_the_reason() -> None:
    # Bad price and bad stop fields and a bad time in force: the price comes first.
    book = busy_book()
    command = order(9, BUY, 5, 0, order_type=MARKET, tif=GTC, stop_price=3)
    assert_rejected(book, command, R.INVALID_PRICE)
    # Post-only on an IOC order with a bad display: the display comes first.
    command = order(
        9, BUY, 5, 98, tif=IOC, display_quantity=9, post_only=PostOnly.REJECT
    )
    assert_rejected(book, command, R.INVALID_QUANTITY)


def test_a_post_only_reject_order_that_would_take_is_rejected() -> None:
    book = busy_book()
    assert_rejected(
        book, order(9, BUY, 5, 101, post_only=PostOnly.REJECT), R.POST_ONLY_WOULD_TAKE
    )


def test_a_post_only_reprice_order_that_cannot_go_below_one_tick_is_rejected() -> None:
    book = book_with(order(1, SELL, 5, 1))
    assert_rejected(
        book, order(9, BUY, 5, 3, post_only=PostOnly.REPRICE), R.POST_ONLY_WOULD_TAKE
    )


def test_a_trailing_stop_needs_its_reference() -> None:
    book = busy_book()  # no trade yet: no last price
    command = order(9, SELL, 5, order_type=TRAILING, tif=IOC, trail_amount=2)
    assert_rejected(book, command, R.NO_REFERENCE_PRICE)
    empty = OrderBook()
    command = order(
        9, SELL, 5, order_type=TRAILING, tif=IOC, trail_amount=2, trigger=TriggerRef.BID
    )
    assert_rejected(empty, command, R.NO_REFERENCE_PRICE)


@pytest.mark.parametrize(
    "command",
    [
        order(9, BUY, 5, order_type=MARKET, tif=IOC),
        order(9, BUY, 5, order_type=MARKET, tif=FOK),
        order(9, BUY, 5, order_type=MTL),
        order(9, BUY, 5, 98, tif=IOC),
        order(9, BUY, 5, 98, tif=FOK),
        order(9, BUY, 5, 98, post_only=PostOnly.REPRICE),
    ],
)
def test_immediate_orders_are_not_allowed_in_auction(command: NewOrder) -> None:
    book = busy_book()
    book.apply(SetAuction(True))
    assert_rejected(book, command, R.NOT_ALLOWED_IN_AUCTION)


@pytest.mark.parametrize(
    "command",
    [
        order(9, BUY, 5, 98, owner=0, oco_with=1),  # anonymous
        order(9, BUY, 5, 98, owner=7, oco_with=42),  # not live
        order(9, BUY, 5, 98, owner=8, oco_with=1),  # another owner
        order(9, BUY, 5, 98, owner=7, oco_with=9),  # itself
    ],
)
def test_an_oco_partner_must_be_a_live_order_of_the_same_owner(
    command: NewOrder,
) -> None:
    assert_rejected(busy_book(), command, R.INVALID_OCO)


def test_an_oco_link_is_one_to_one() -> None:
    book = busy_book()
    book.apply(order(9, BUY, 5, 98, owner=7, oco_with=1))
    assert_rejected(book, order(10, BUY, 5, 97, owner=7, oco_with=1), R.INVALID_OCO)
    assert_rejected(book, order(10, BUY, 5, 97, owner=7, oco_with=9), R.INVALID_OCO)


@pytest.mark.parametrize(
    "command", [CancelOrder(42), ExpireOrder(42), AmendOrder(42, 1)]
)
def test_a_command_on_an_unknown_order_is_rejected(command: Command) -> None:
    assert_rejected(busy_book(), command, R.UNKNOWN_ORDER)


@pytest.mark.parametrize(
    "command",
    [SetBand(0, 10), SetBand(10, 9), SetBand(None, True), SetLastPrice(0), Uncross(-1)],
)
def test_a_book_command_with_a_bad_price_is_rejected_with_order_id_0(
    command: Command,
) -> None:
    assert_rejected(busy_book(), command, R.INVALID_PRICE)


# --------------------------------------------------------------------------
# Market-to-limit, DAY/GTD, expiry
# --------------------------------------------------------------------------


def asks_100_101_102() -> OrderBook:
    return book_with(
        order(1, SELL, 5, 100), order(2, SELL, 5, 101), order(3, SELL, 5, 102)
    )


def test_a_market_to_limit_order_rests_its_remainder_at_its_first_fill_price() -> None:
    book = asks_100_101_102()

    events = book.apply(order(9, BUY, 20, 101, order_type=MTL))

    # It takes only the best price level (within its protection), then rests there.
    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 100, 5, 0, 15),
        Rested(9, BUY, 100, 15),
    ]
    assert book.depth() == ([(100, 15, 1)], [(101, 5, 1), (102, 5, 1)])
    assert book.view(9) == OrderView(9, BUY, LIMIT, GTC, 100, 15, 15, 0, False)


def test_a_market_to_limit_order_that_cannot_fill_is_cancelled() -> None:
    book = asks_100_101_102()

    events = book.apply(order(9, BUY, 5, 99, order_type=MTL, tif=DAY))

    assert events == [Accepted(9), Cancelled(9, 5, C.MARKET_REMAINDER)]
    assert 9 not in book


@pytest.mark.parametrize("tif", [DAY, GTD])
def test_day_and_gtd_orders_rest_like_gtc_until_they_expire(tif: TimeInForce) -> None:
    book = OrderBook()

    assert book.apply(order(1, BUY, 5, 99, tif=tif)) == [
        Accepted(1),
        Rested(1, BUY, 99, 5),
    ]
    assert book.view(1) == OrderView(1, BUY, LIMIT, tif, 99, 5, 5, 0, False)
    assert book.apply(ExpireOrder(1)) == [Cancelled(1, 5, C.EXPIRED)]
    assert len(book) == 0
    assert book.depth() == ([], [])


def test_a_parked_stop_expires_too() -> None:
    book = book_with(
        order(1, SELL, 5, 95, order_type=STOP_LIMIT, tif=DAY, stop_price=96)
    )

    assert book.apply(ExpireOrder(1)) == [Cancelled(1, 5, C.EXPIRED)]
    assert book.snapshot() == []


# --------------------------------------------------------------------------
# FOK and minimum quantity
# --------------------------------------------------------------------------


def test_a_fok_check_counts_hidden_iceberg_quantity() -> None:
    book = book_with(order(1, SELL, 10, 100, display_quantity=2))

    events = book.apply(order(9, BUY, 10, 100, tif=FOK))

    # Only the visible part fills at a time; the iceberg refreshes in between.
    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 100, 2, 8, 8),
        Replenished(1, SELL, 100, 8, 2),
        fill(2, 1, 9, BUY, 100, 2, 6, 6),
        Replenished(1, SELL, 100, 6, 2),
        fill(3, 1, 9, BUY, 100, 2, 4, 4),
        Replenished(1, SELL, 100, 4, 2),
        fill(4, 1, 9, BUY, 100, 2, 2, 2),
        Replenished(1, SELL, 100, 2, 2),
        fill(5, 1, 9, BUY, 100, 2, 0, 0),
    ]
    assert len(book) == 0


def test_a_fok_that_only_a_band_breach_could_fill_is_cancelled_without_a_fill() -> None:
    book = book_with(order(1, SELL, 5, 100), order(2, SELL, 5, 103), SetBand(90, 102))

    events = book.apply(order(9, BUY, 10, 103, tif=FOK))

    assert events == [Accepted(9), Cancelled(9, 10, C.FOK_UNFILLABLE)]
    assert not book.in_auction
    assert book.depth() == ([], [(100, 5, 1), (103, 5, 1)])


def test_an_order_below_its_minimum_executable_quantity_is_cancelled_unfilled() -> None:
    book = book_with(order(1, SELL, 3, 100), order(2, SELL, 3, 102))

    events = book.apply(order(9, BUY, 10, 101, min_quantity=4))

    assert events == [Accepted(9), Cancelled(9, 10, C.MIN_QUANTITY)]
    assert book.depth() == ([], [(100, 3, 1), (102, 3, 1)])


def test_an_order_reaching_its_minimum_quantity_trades_and_rests_as_usual() -> None:
    book = book_with(order(1, SELL, 3, 100), order(2, SELL, 3, 101))

    events = book.apply(order(9, BUY, 10, 101, min_quantity=6))

    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 100, 3, 0, 7),
        fill(2, 2, 9, BUY, 101, 3, 0, 4),
        Rested(9, BUY, 101, 4),
    ]
    assert book.view(9).min_quantity == 0  # type: ignore[union-attr]


# --------------------------------------------------------------------------
# Post-only
# --------------------------------------------------------------------------


def test_a_post_only_order_that_would_not_take_rests_at_its_price() -> None:
    book = busy_book()

    for mode in (PostOnly.REJECT, PostOnly.REPRICE):
        book.apply(CancelOrder(9))
        events = book.apply(order(9, SELL, 5, 102, post_only=mode))
        assert events == [Accepted(9), Rested(9, SELL, 102, 5)]


@pytest.mark.parametrize(
    ("side", "price", "repriced"), [(BUY, 105, 100), (SELL, 95, 100)]
)
def test_a_post_only_reprice_order_rests_one_tick_inside_the_opposite_best(
    side: Side, price: int, repriced: int
) -> None:
    book = book_with(order(1, BUY, 5, 99), order(2, SELL, 5, 101))

    events = book.apply(order(9, side, 4, price, post_only=PostOnly.REPRICE))

    assert events == [Accepted(9), Rested(9, side, repriced, 4)]
    assert book.view(9).price == repriced  # type: ignore[union-attr]
    assert book.view(9).post_only is PostOnly.REPRICE  # type: ignore[union-attr]


# --------------------------------------------------------------------------
# Icebergs
# --------------------------------------------------------------------------


def test_an_iceberg_shows_only_its_visible_part() -> None:
    book = OrderBook()

    events = book.apply(order(1, SELL, 10, 100, display_quantity=3))

    assert events == [Accepted(1), Rested(1, SELL, 100, 10, 3)]
    assert book.depth() == ([], [(100, 3, 1)])
    assert book.level(SELL, 100) == (3, 1)
    assert book.best_ask() == (100, 3, 1)
    assert book.orders() == [(1, SELL, 100, 10, 0)]
    assert book.get(1) == (SELL, 100, 10)
    assert book.view(1) == OrderView(
        1, SELL, LIMIT, GTC, 100, 10, 3, 0, False, display_quantity=3
    )


def test_a_refreshed_iceberg_goes_to_the_back_of_its_level() -> None:
    book = book_with(
        order(1, SELL, 7, 100, display_quantity=3),
        order(2, SELL, 2, 100),
        order(3, SELL, 5, 101),
    )

    events = book.apply(order(9, BUY, 6, 100))

    # 3 from the iceberg's visible part, it refreshes behind order 2, 2 from
    # order 2, then the same taker reaches the iceberg again: 1 more.
    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 100, 3, 4, 3),
        Replenished(1, SELL, 100, 4, 3),
        fill(2, 2, 9, BUY, 100, 2, 0, 1),
        fill(3, 1, 9, BUY, 100, 1, 3, 0),
    ]
    assert book.depth() == ([], [(100, 2, 1), (101, 5, 1)])
    assert book.view(1).visible == 2  # type: ignore[union-attr]
    assert book.view(1).remaining == 3  # type: ignore[union-attr]


def test_an_iceberg_behind_others_stays_behind_after_a_refresh() -> None:
    book = book_with(
        order(1, SELL, 4, 100, display_quantity=2),
        order(2, SELL, 1, 100),
    )
    book.apply(order(8, BUY, 2, 100))  # uses up 1's visible part: 2 is first now

    assert [o.order_id for o in book.snapshot()] == [2, 1]
    assert book.apply(order(9, BUY, 1, 100)) == [
        Accepted(9),
        fill(2, 2, 9, BUY, 100, 1, 0, 0),
    ]


def test_an_iceberg_with_less_left_than_its_display_shows_all_of_it() -> None:
    book = book_with(order(1, SELL, 5, 100, display_quantity=3))

    events = book.apply(order(9, BUY, 3, 100))

    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 100, 3, 2, 0),
        Replenished(1, SELL, 100, 2, 2),
    ]
    assert book.depth() == ([], [(100, 2, 1)])


def test_a_resting_iceberg_taker_rests_with_its_display() -> None:
    book = book_with(order(1, SELL, 4, 100))

    events = book.apply(order(9, BUY, 20, 100, display_quantity=5))

    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 100, 4, 0, 16),
        Rested(9, BUY, 100, 16, 5),
    ]
    assert book.depth() == ([(100, 5, 1)], [])


# --------------------------------------------------------------------------
# Amend
# --------------------------------------------------------------------------


def three_bids() -> OrderBook:
    return book_with(order(1, BUY, 5, 99), order(2, BUY, 5, 99), order(3, BUY, 5, 98))


def test_amending_the_quantity_down_keeps_priority() -> None:
    book = three_bids()

    assert book.apply(AmendOrder(1, quantity=2)) == [Amended(1, 99, 2, 2, None, True)]
    assert [o.order_id for o in book.snapshot()] == [1, 2, 3]
    assert book.depth() == ([(99, 7, 2), (98, 5, 1)], [])


def test_amending_an_iceberg_down_caps_its_visible_part() -> None:
    book = book_with(order(1, BUY, 10, 99, display_quantity=4))

    assert book.apply(AmendOrder(1, quantity=6)) == [Amended(1, 99, 6, 4, None, True)]
    assert book.apply(AmendOrder(1, quantity=3)) == [Amended(1, 99, 3, 3, None, True)]
    assert book.depth() == ([(99, 3, 1)], [])


def test_amending_the_quantity_up_loses_priority() -> None:
    book = three_bids()

    events = book.apply(AmendOrder(1, quantity=6))

    assert events == [Amended(1, 99, 6, 6, None, False), Rested(1, BUY, 99, 6)]
    assert [o.order_id for o in book.snapshot()] == [2, 3, 1]


def test_amending_the_price_re_enters_the_order_and_may_match() -> None:
    book = three_bids()
    book.apply(order(4, SELL, 3, 101))

    events = book.apply(AmendOrder(3, price=101))

    assert events == [
        Amended(3, 101, 5, 5, None, False),
        fill(1, 4, 3, BUY, 101, 3, 0, 2),
        Rested(3, BUY, 101, 2),
    ]


def test_an_amend_with_nothing_to_change_is_a_no_op() -> None:
    book = three_bids()

    assert book.apply(AmendOrder(2)) == [Amended(2, 99, 5, 5, None, True)]
    assert [o.order_id for o in book.snapshot()] == [1, 2, 3]


def test_a_re_entering_post_only_order_keeps_its_instruction() -> None:
    book = book_with(
        order(1, SELL, 5, 101),
        order(2, BUY, 5, 98, post_only=PostOnly.REJECT),
        order(3, BUY, 5, 97, post_only=PostOnly.REPRICE),
    )

    assert_rejected(book, AmendOrder(2, price=101), R.POST_ONLY_WOULD_TAKE)
    assert book.apply(AmendOrder(3, price=102)) == [
        Amended(3, 100, 5, 5, None, False),
        Rested(3, BUY, 100, 5),
    ]


def test_a_re_entering_iceberg_shows_its_display_again() -> None:
    book = book_with(order(1, BUY, 10, 99, display_quantity=4))
    book.apply(order(8, SELL, 3, 99))  # visible 1 left

    events = book.apply(AmendOrder(1, price=98))

    assert events == [Amended(1, 98, 7, 4, None, False), Rested(1, BUY, 98, 7, 4)]


def test_amending_in_auction_re_enters_without_matching() -> None:
    book = book_with(order(1, BUY, 5, 99), order(2, SELL, 5, 101), SetAuction(True))

    events = book.apply(AmendOrder(1, price=102))

    assert events == [Amended(1, 102, 5, 5, None, False), Rested(1, BUY, 102, 5)]
    assert book.depth() == ([(102, 5, 1)], [(101, 5, 1)])


def test_a_parked_stop_can_change_its_stop_price_limit_and_quantity() -> None:
    book = book_with(
        order(1, SELL, 5, 101),
        order(2, BUY, 5, 104, order_type=STOP_LIMIT, stop_price=105),
    )

    events = book.apply(AmendOrder(2, quantity=3, price=103, stop_price=106))

    assert events == [Amended(2, 103, 3, 0, 106, True)]
    assert book.view(2) == OrderView(
        2, BUY, STOP_LIMIT, GTC, 103, 3, None, 0, True, stop_price=106
    )


def test_an_amended_stop_that_became_triggerable_fires() -> None:
    book = book_with(
        order(1, SELL, 5, 101),
        order(2, BUY, 1, 101),  # trades: last price 101
        order(3, BUY, 2, order_type=STOP, tif=IOC, stop_price=105),
    )

    events = book.apply(AmendOrder(3, stop_price=101))

    assert events == [
        Amended(3, None, 2, 0, 101, True),
        Triggered(3, 101),
        fill(2, 1, 3, BUY, 101, 2, 2, 0),
    ]


def test_what_cannot_be_amended() -> None:
    book = book_with(
        order(1, BUY, 5, 99),
        order(2, SELL, 5, 101),
        order(3, BUY, 1, 101),  # last price 101
        order(4, SELL, 5, order_type=TRAILING, tif=IOC, trail_amount=2),
        order(5, SELL, 5, order_type=STOP, tif=IOC, stop_price=90, min_quantity=4),
    )

    assert_rejected(book, AmendOrder(1, stop_price=95), R.NOT_AMENDABLE)
    assert_rejected(book, AmendOrder(4, stop_price=95), R.NOT_AMENDABLE)
    assert_rejected(book, AmendOrder(1, quantity=0), R.INVALID_QUANTITY)
    assert_rejected(book, AmendOrder(1, price=0), R.INVALID_PRICE)
    assert_rejected(book, AmendOrder(5, stop_price=0), R.INVALID_STOP)
    assert_rejected(book, AmendOrder(5, quantity=3), R.INVALID_QUANTITY)


# --------------------------------------------------------------------------
# Self-trade prevention
# --------------------------------------------------------------------------


def own_and_other_asks() -> OrderBook:
    """Asks at 100: order 1 of owner 7, then order 2 of owner 8."""
    return book_with(order(1, SELL, 3, 100, owner=7), order(2, SELL, 3, 100, owner=8))


def test_cancel_newest_cancels_the_incoming_order() -> None:
    book = own_and_other_asks()

    events = book.apply(order(9, BUY, 5, 100, owner=7, stp=SelfTrade.CANCEL_NEWEST))

    assert events == [Accepted(9), Cancelled(9, 5, C.SELF_TRADE)]
    assert book.depth() == ([], [(100, 6, 2)])


def test_cancel_oldest_cancels_the_resting_order_and_goes_on() -> None:
    book = own_and_other_asks()

    events = book.apply(order(9, BUY, 5, 100, owner=7, stp=SelfTrade.CANCEL_OLDEST))

    assert events == [
        Accepted(9),
        Cancelled(1, 3, C.SELF_TRADE),
        fill(1, 2, 9, BUY, 100, 3, 0, 2, maker_owner=8, taker_owner=7),
        Rested(9, BUY, 100, 2),
    ]


def test_cancel_both_cancels_the_resting_then_the_incoming_order() -> None:
    book = own_and_other_asks()

    events = book.apply(order(9, BUY, 5, 100, owner=7, stp=SelfTrade.CANCEL_BOTH))

    assert events == [
        Accepted(9),
        Cancelled(1, 3, C.SELF_TRADE),
        Cancelled(9, 5, C.SELF_TRADE),
    ]
    assert book.depth() == ([], [(100, 3, 1)])


def test_self_trade_prevention_only_meets_the_same_non_zero_owner() -> None:
    book = book_with(order(1, SELL, 3, 100, owner=0), order(2, SELL, 3, 100, owner=8))

    events = book.apply(order(9, BUY, 4, 100, owner=7, stp=SelfTrade.CANCEL_NEWEST))
    assert [type(e) for e in events] == [Accepted, Fill, Fill]

    anonymous = own_and_other_asks()
    events = anonymous.apply(order(9, BUY, 4, 100, stp=SelfTrade.CANCEL_NEWEST))
    assert [type(e) for e in events] == [Accepted, Fill, Fill]


def test_without_self_trade_prevention_the_same_owner_trades() -> None:
    book = own_and_other_asks()

    events = book.apply(order(9, BUY, 3, 100, owner=7))

    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 100, 3, 0, 0, maker_owner=7, taker_owner=7),
    ]


def test_a_fok_check_ignores_self_trade_prevention() -> None:
    book = own_and_other_asks()

    events = book.apply(
        order(9, BUY, 6, 100, tif=FOK, owner=7, stp=SelfTrade.CANCEL_OLDEST)
    )

    # 6 are there (3 of them its own): it passes the check, then its own
    # order is cancelled and the rest cannot fill.
    assert events == [
        Accepted(9),
        Cancelled(1, 3, C.SELF_TRADE),
        fill(1, 2, 9, BUY, 100, 3, 0, 3, maker_owner=8, taker_owner=7),
        Cancelled(9, 3, C.IOC_REMAINDER),
    ]


# --------------------------------------------------------------------------
# OCO
# --------------------------------------------------------------------------


def bracket() -> OrderBook:
    """Owner 7 holds a take-profit (sell 5 @ 110) linked to a stop (sell @ 90)."""
    return book_with(
        order(1, SELL, 5, 110, owner=7),
        order(2, SELL, 5, order_type=STOP, tif=IOC, owner=7, stop_price=90, oco_with=1),
        order(3, BUY, 5, 95),
    )


def test_linked_orders_show_their_partner() -> None:
    book = bracket()

    assert book.view(1).oco_with == 2  # type: ignore[union-attr]
    assert book.view(2).oco_with == 1  # type: ignore[union-attr]


def test_a_fill_of_one_leg_cancels_the_other_right_after_it() -> None:
    book = bracket()

    events = book.apply(order(9, BUY, 2, 110))

    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 110, 2, 3, 0, maker_owner=7),
        Cancelled(2, 5, C.OCO),
    ]
    assert book.view(1).oco_with is None  # type: ignore[union-attr]
    # The link is gone: the next fill cancels nothing.
    assert book.apply(order(10, BUY, 1, 110)) == [
        Accepted(10),
        fill(2, 1, 10, BUY, 110, 1, 2, 0, maker_owner=7),
    ]


@pytest.mark.parametrize(
    ("command", "reason"),
    [(CancelOrder(2), C.REQUESTED), (ExpireOrder(2), C.EXPIRED)],
)
def test_cancelling_or_expiring_one_leg_cancels_the_other(
    command: Command, reason: CancelReason
) -> None:
    book = bracket()

    assert book.apply(command) == [Cancelled(2, 5, reason), Cancelled(1, 5, C.OCO)]
    assert book.snapshot() == [OrderView(3, BUY, LIMIT, GTC, 95, 5, 5, 0, False)]


def test_a_fired_stop_cancels_its_partner_before_it_trades() -> None:
    book = bracket()
    book.apply(order(4, BUY, 2, 89))
    book.apply(order(6, BUY, 10, 80))

    events = book.apply(order(5, SELL, 6, 89))

    assert events == [
        Accepted(5),
        fill(1, 3, 5, SELL, 95, 5, 0, 1),
        fill(2, 4, 5, SELL, 89, 1, 1, 0),
        Triggered(2, 89),
        Cancelled(1, 5, C.OCO),
        fill(3, 4, 2, SELL, 89, 1, 0, 4, taker_owner=7),
        fill(4, 6, 2, SELL, 80, 4, 6, 0, taker_owner=7),
    ]
    assert book.snapshot() == [OrderView(6, BUY, LIMIT, GTC, 80, 6, 6, 0, False)]


def test_an_incoming_leg_whose_remainder_never_rests_cancels_its_partner() -> None:
    book = book_with(order(1, SELL, 5, 110, owner=7), order(2, SELL, 2, 100))

    events = book.apply(order(9, BUY, 5, 100, tif=IOC, owner=7, oco_with=1))

    assert events == [
        Accepted(9),
        fill(1, 2, 9, BUY, 100, 2, 0, 3, taker_owner=7),
        Cancelled(1, 5, C.OCO),
        Cancelled(9, 3, C.IOC_REMAINDER),
    ]


def test_legs_that_trade_with_each_other_end_the_taker() -> None:
    # Both legs got a fill: the maker's partner (the taker) is cancelled first,
    # which dissolves the link.
    book = book_with(order(1, SELL, 3, 100, owner=7), order(2, SELL, 5, 100))

    events = book.apply(order(9, BUY, 8, 100, owner=7, oco_with=1))

    assert events == [
        Accepted(9),
        fill(1, 1, 9, BUY, 100, 3, 0, 5, maker_owner=7, taker_owner=7),
        Cancelled(9, 5, C.OCO),
    ]
    assert book.depth() == ([], [(100, 5, 1)])


def test_band_breach_on_an_amend_re_entry() -> None:
    book = book_with(order(1, SELL, 5, 105), order(2, BUY, 5, 99), SetBand(90, 104))

    events = book.apply(AmendOrder(2, price=106))

    assert events == [
        Amended(2, 106, 5, 5, None, False),
        BandBreached(2, 105),
        Rested(2, BUY, 106, 5),
    ]
    assert book.in_auction
    assert book.depth() == ([(106, 5, 1)], [(105, 5, 1)])


def test_every_event_of_a_waiting_stop() -> None:
    book = OrderBook()

    assert book.apply(order(1, BUY, 5, order_type=STOP, tif=FOK, stop_price=105)) == [
        Accepted(1),
        Waiting(1, 105),
    ]
    assert 1 in book
    assert len(book) == 1
    assert book.get(1) is None
    assert book.orders() == []
    assert book.depth() == ([], [])
