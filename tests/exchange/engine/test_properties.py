"""Property tests: random command streams against invariants and a naive model."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from typing import TypeVar
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.engine import (
    Accepted,
    Cancelled,
    CancelOrder,
    CancelReason,
    Command,
    Event,
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

PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

T = TypeVar("T")


def weighted(*choices: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """Pick one of the strategies with the given relative weights.

    (``st.one_of`` picks its branches evenly, however often one is repeated.)
    """
    total = sum(weight for weight, _ in choices)

    def pick(roll: int) -> st.SearchStrategy[T]:
        for weight, strategy in choices:
            if roll < weight:
                return strategy
            roll -= weight
        raise AssertionError(roll)

    return st.integers(min_value=0, max_value=total - 1).flatmap(pick)


# Few ids and a narrow price band: duplicates, dead-id cancels and crossing
# orders all happen often; invalid values stay the exception.
order_ids = st.integers(min_value=1, max_value=30)
sides = st.sampled_from(Side)
tifs = st.sampled_from(TimeInForce)
prices = st.integers(min_value=97, max_value=103)
quantities = weighted(
    (16, st.integers(min_value=1, max_value=8)),
    (3, st.integers(min_value=9, max_value=30)),
    (1, st.integers(min_value=-1, max_value=0)),
)
owners = st.integers(min_value=0, max_value=3)

limit_orders = st.builds(
    NewOrder,
    order_id=order_ids,
    side=sides,
    order_type=st.just(OrderType.LIMIT),
    time_in_force=weighted((2, st.just(TimeInForce.GTC)), (1, tifs)),
    quantity=quantities,
    price=weighted((19, prices), (1, st.sampled_from([None, 0, -1]))),
    owner=owners,
)
market_orders = st.builds(
    NewOrder,
    order_id=order_ids,
    side=sides,
    order_type=st.just(OrderType.MARKET),
    time_in_force=weighted(
        (4, st.sampled_from([TimeInForce.IOC, TimeInForce.FOK])), (1, tifs)
    ),
    quantity=quantities,
    price=weighted((6, st.none()), (6, prices), (1, st.just(0))),
    owner=owners,
)
cancels = st.builds(CancelOrder, order_id=order_ids)
restores = st.builds(
    RestoreOrder,
    order_id=order_ids,
    side=sides,
    price=prices,
    quantity=quantities,
    owner=owners,
)
commands: st.SearchStrategy[Command] = weighted(
    (10, limit_orders),
    (2, market_orders),
    (4, cancels),
    (1, restores),
)
command_lists = st.lists(commands, min_size=20, max_size=150)

# Two prices and many ids: deep levels that are drained and cancelled into.
deep_order_ids = st.integers(min_value=1, max_value=60)
deep_level_lists = st.lists(
    weighted(
        (
            6,
            st.builds(
                NewOrder,
                order_id=deep_order_ids,
                side=sides,
                order_type=st.just(OrderType.LIMIT),
                time_in_force=st.just(TimeInForce.GTC),
                quantity=st.integers(min_value=1, max_value=3),
                price=st.integers(min_value=100, max_value=101),
            ),
        ),
        (5, st.builds(CancelOrder, order_id=deep_order_ids)),
        (
            1,
            st.builds(
                NewOrder,
                order_id=deep_order_ids,
                side=sides,
                order_type=st.just(OrderType.MARKET),
                time_in_force=st.just(TimeInForce.IOC),
                quantity=st.integers(min_value=1, max_value=4),
                price=st.none(),
            ),
        ),
    ),
    min_size=40,
    max_size=200,
)


# ----------------------------------------------------------------------------
# An independent, deliberately naive model of the book.
# ----------------------------------------------------------------------------


class ModelOrder:
    def __init__(
        self, order_id: int, side: Side, price: int, remaining: int, owner: int
    ) -> None:
        self.order_id = order_id
        self.side = side
        self.price = price
        self.remaining = remaining
        self.owner = owner


class ModelBook:
    """Resting orders in one list, in arrival order; every decision is a scan."""

    def __init__(self) -> None:
        self.resting: list[ModelOrder] = []
        self.trades = 0

    def find(self, order_id: int) -> ModelOrder | None:
        for order in self.resting:
            if order.order_id == order_id:
                return order
        return None

    def apply(self, command: Command) -> list[Event]:
        if isinstance(command, CancelOrder):
            return self.cancel(command.order_id)
        if isinstance(command, RestoreOrder):
            return self.restore(command)
        assert isinstance(command, NewOrder), command  # the strategies' only other
        return self.new_order(command)

    def cancel(self, order_id: int) -> list[Event]:
        order = self.find(order_id)
        if order is None:
            return [Rejected(order_id, RejectReason.UNKNOWN_ORDER)]
        self.resting.remove(order)
        return [Cancelled(order_id, order.remaining, CancelReason.REQUESTED)]

    def restore(self, command: RestoreOrder) -> list[Event]:
        oid = command.order_id
        if self.find(oid) is not None:
            return [Rejected(oid, RejectReason.DUPLICATE_ORDER_ID)]
        if command.quantity <= 0:
            return [Rejected(oid, RejectReason.INVALID_QUANTITY)]
        assert command.price is not None  # the strategies restore limit orders
        if command.price <= 0 or self.eligible(command.side, command.price):
            # Resting it would cross the book.
            return [Rejected(oid, RejectReason.INVALID_PRICE)]
        order = ModelOrder(
            oid, command.side, command.price, command.quantity, command.owner
        )
        self.resting.append(order)
        return [Rested(oid, command.side, command.price, command.quantity)]

    def eligible(self, side: Side, limit: int | None) -> list[ModelOrder]:
        """Opposite orders a taker on ``side`` limited by ``limit`` may trade with."""
        result = []
        for order in self.resting:
            if order.side is side:
                continue
            if limit is None:
                result.append(order)
            elif side is Side.BUY and order.price <= limit:
                result.append(order)
            elif side is Side.SELL and order.price >= limit:
                result.append(order)
        return result

    def new_order(self, command: NewOrder) -> list[Event]:
        oid = command.order_id
        side = command.side
        limit = command.price
        is_market = command.order_type is OrderType.MARKET
        if self.find(oid) is not None:
            return [Rejected(oid, RejectReason.DUPLICATE_ORDER_ID)]
        if command.quantity <= 0:
            return [Rejected(oid, RejectReason.INVALID_QUANTITY)]
        if (limit is None and not is_market) or (limit is not None and limit <= 0):
            return [Rejected(oid, RejectReason.INVALID_PRICE)]
        immediate = command.time_in_force in (TimeInForce.IOC, TimeInForce.FOK)
        if is_market and not immediate:
            return [Rejected(oid, RejectReason.INVALID_TIME_IN_FORCE)]
        events: list[Event] = [Accepted(oid)]
        remaining = command.quantity
        if command.time_in_force is TimeInForce.FOK:
            available = sum(o.remaining for o in self.eligible(side, limit))
            if available < remaining:
                events.append(Cancelled(oid, remaining, CancelReason.FOK_UNFILLABLE))
                return events
        while remaining:
            candidates = self.eligible(side, limit)
            if not candidates:
                break
            # Best price first; among equal prices the earliest in the list.
            if side is Side.BUY:
                maker = min(candidates, key=lambda o: (o.price, self.resting.index(o)))
            else:
                maker = min(candidates, key=lambda o: (-o.price, self.resting.index(o)))
            size = min(remaining, maker.remaining)
            maker.remaining -= size
            remaining -= size
            self.trades += 1
            events.append(
                Fill(
                    self.trades,
                    maker.order_id,
                    oid,
                    maker.owner,
                    command.owner,
                    side,
                    maker.price,
                    size,
                    maker.remaining,
                    remaining,
                )
            )
            if maker.remaining == 0:
                self.resting.remove(maker)
        if remaining:
            if is_market:
                events.append(Cancelled(oid, remaining, CancelReason.MARKET_REMAINDER))
            elif not immediate:  # GTC, DAY and GTD rest alike
                assert limit is not None
                rest = ModelOrder(oid, side, limit, remaining, command.owner)
                self.resting.append(rest)
                events.append(Rested(oid, side, limit, remaining))
            else:
                events.append(Cancelled(oid, remaining, CancelReason.IOC_REMAINDER))
        return events

    def orders(self) -> list[tuple[int, Side, int, int, int]]:
        bids = sorted(
            (o for o in self.resting if o.side is Side.BUY),
            key=lambda o: (-o.price, self.resting.index(o)),
        )
        asks = sorted(
            (o for o in self.resting if o.side is Side.SELL),
            key=lambda o: (o.price, self.resting.index(o)),
        )
        return [
            (o.order_id, o.side, o.price, o.remaining, o.owner) for o in [*bids, *asks]
        ]


# ----------------------------------------------------------------------------
# Invariant checks
# ----------------------------------------------------------------------------


def assert_not_crossed(book: OrderBook) -> None:
    bid = book.best_bid()
    ask = book.best_ask()
    if bid is not None and ask is not None:
        assert bid[0] < ask[0], (bid, ask)


def assert_aggregates_match_orders(book: OrderBook) -> None:
    resting = book.orders()
    totals: dict[tuple[Side, int], list[int]] = defaultdict(lambda: [0, 0])
    for order_id, side, price, remaining, _owner in resting:
        assert remaining > 0
        assert order_id in book
        assert book.get(order_id) == (side, price, remaining)
        totals[side, price][0] += remaining
        totals[side, price][1] += 1
    assert len(book) == len(resting) == len({o[0] for o in resting})

    bids, asks = book.depth()
    bid_prices = {p for s, p in totals if s is Side.BUY}
    ask_prices = {p for s, p in totals if s is Side.SELL}
    assert [p for p, _, _ in bids] == sorted(bid_prices, reverse=True)
    assert [p for p, _, _ in asks] == sorted(ask_prices)
    for side, levels in ((Side.BUY, bids), (Side.SELL, asks)):
        for price, quantity, count in levels:
            assert [quantity, count] == totals[side, price]
            assert book.level(side, price) == (quantity, count)
    assert book.best_bid() == (bids[0] if bids else None)
    assert book.best_ask() == (asks[0] if asks else None)
    assert book.depth(1) == (bids[:1], asks[:1])


def assert_event_shape(command: Command, events: Sequence[Event]) -> None:
    """Accepted, fills, then at most one Rested/Cancelled; or a lone Rejected."""
    assert events
    if isinstance(events[0], Rejected):
        assert len(events) == 1
        return
    if isinstance(command, CancelOrder):
        assert len(events) == 1 and isinstance(events[0], Cancelled)
        return
    if isinstance(command, RestoreOrder):
        assert len(events) == 1 and isinstance(events[0], Rested)
        return
    assert isinstance(command, NewOrder), command  # the strategies' only other
    assert events[0] == Accepted(command.order_id)
    body = list(events[1:])
    tail = body[-1:] if body and not isinstance(body[-1], Fill) else []
    fills = body[: len(body) - len(tail)]
    assert all(isinstance(e, Fill) and e.quantity > 0 for e in fills)
    filled = sum(e.quantity for e in fills if isinstance(e, Fill))
    if tail:
        (last,) = tail
        assert isinstance(last, Rested | Cancelled)
        assert last.remaining == command.quantity - filled > 0
    else:
        assert filled == command.quantity


class Conservation:
    """Tracks every order instance: filled + on book + cancelled == original."""

    def __init__(self) -> None:
        self.original: dict[tuple[int, int], int] = {}
        self.filled: dict[tuple[int, int], int] = defaultdict(int)
        self.cancelled: dict[tuple[int, int], int] = defaultdict(int)
        self.current: dict[int, tuple[int, int]] = {}  # order id -> newest instance
        self.instances = itertools.count()

    def record(self, command: Command, events: Sequence[Event]) -> None:
        for event in events:
            if isinstance(event, Accepted):
                assert isinstance(command, NewOrder)
                self.start(event.order_id, command.quantity)
            elif isinstance(event, Rested) and isinstance(command, RestoreOrder):
                self.start(event.order_id, command.quantity)
            elif isinstance(event, Fill):
                self.filled[self.current[event.maker_order_id]] += event.quantity
                self.filled[self.current[event.taker_order_id]] += event.quantity
            elif isinstance(event, Cancelled):
                self.cancelled[self.current[event.order_id]] += event.remaining

    def start(self, order_id: int, quantity: int) -> None:
        # A new instance of an id can only start once the previous one is off
        # the book, so "current" always names the resting instance.
        key = (order_id, next(self.instances))
        self.current[order_id] = key
        self.original[key] = quantity

    def check(self, book: OrderBook) -> None:
        for key, quantity in self.original.items():
            order_id = key[0]
            on_book = 0
            resting = book.get(order_id)
            if resting is not None and self.current[order_id] == key:
                on_book = resting[2]
            assert self.filled[key] + on_book + self.cancelled[key] == quantity, key


def fill_count(events: Sequence[Event]) -> int:
    return sum(1 for e in events if isinstance(e, Fill))


# ----------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(command_lists)
def test_the_book_is_never_crossed_and_its_aggregates_always_add_up(
    stream: list[Command],
) -> None:
    book = OrderBook()
    for command in stream:
        events = book.apply(command)
        assert_event_shape(command, events)
        assert_not_crossed(book)
        assert_aggregates_match_orders(book)


@PROPERTY_SETTINGS
@given(command_lists)
def test_every_order_quantity_is_conserved(stream: list[Command]) -> None:
    book = OrderBook()
    ledger = Conservation()
    for command in stream:
        events = book.apply(command)
        ledger.record(command, events)
        ledger.check(book)


@PROPERTY_SETTINGS
@given(command_lists)
def test_fills_follow_price_time_priority_exactly_as_a_naive_model_does(
    stream: list[Command],
) -> None:
    book = OrderBook()
    model = ModelBook()
    for command in stream:
        assert book.apply(command) == model.apply(command), command
        assert book.orders() == model.orders()


@PROPERTY_SETTINGS
@given(deep_level_lists)
def test_compacting_level_storage_early_changes_nothing(stream: list[Command]) -> None:
    # Levels normally compact only after dozens of deletions; lower the bar
    # so that random streams over deep levels exercise it often.
    with mock.patch("exchange.engine._model.COMPACT_MIN_HOLES", 1):
        book = OrderBook()
        model = ModelBook()
        for command in stream:
            assert book.apply(command) == model.apply(command), command
            assert book.orders() == model.orders()


@PROPERTY_SETTINGS
@given(command_lists)
def test_each_fill_takes_the_best_price_then_the_oldest_order(
    stream: list[Command],
) -> None:
    book = OrderBook()
    for command in stream:
        # orders() lists each side best first, in time priority within a level.
        queue: dict[Side, list[list[int]]] = {Side.BUY: [], Side.SELL: []}
        for order_id, side, price, remaining, _owner in book.orders():
            queue[side].append([order_id, price, remaining])
        for event in book.apply(command):
            if not isinstance(event, Fill):
                continue
            makers = queue[Side.SELL if event.aggressor is Side.BUY else Side.BUY]
            head = makers[0]
            assert [event.maker_order_id, event.price] == head[:2]
            head[2] -= event.quantity
            assert event.maker_remaining == head[2] >= 0
            if head[2] == 0:
                makers.pop(0)


@PROPERTY_SETTINGS
@given(command_lists)
def test_replaying_the_same_commands_reproduces_the_same_events_and_book(
    stream: list[Command],
) -> None:
    first = OrderBook()
    second = OrderBook()
    first_events = [first.apply(command) for command in stream]
    second_events = [second.apply(command) for command in stream]

    assert first_events == second_events
    assert first.orders() == second.orders()
    assert first.depth() == second.depth()


@PROPERTY_SETTINGS
@given(command_lists, command_lists)
def test_a_book_rebuilt_by_restoring_its_orders_behaves_identically(
    history: list[Command], future: list[Command]
) -> None:
    original = OrderBook()
    trades = sum(fill_count(original.apply(command)) for command in history)

    rebuilt = OrderBook(next_trade_id=itertools.count(trades + 1).__next__)
    for order_id, side, price, remaining, owner in original.orders():
        events = rebuilt.apply(RestoreOrder(order_id, side, price, remaining, owner))
        assert events == [Rested(order_id, side, price, remaining)]
    assert rebuilt.orders() == original.orders()
    assert rebuilt.depth() == original.depth()

    for command in future:
        assert rebuilt.apply(command) == original.apply(command)
        assert rebuilt.orders() == original.orders()
