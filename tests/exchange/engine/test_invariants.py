"""Property tests over every order type and command (docs/engine.md).

Random streams of new orders of every type, time in force and instruction,
cancels, expiries, amends, auction on/off, uncrosses, bands and last prices.
After every command:

- outside auction the book is never crossed, and no parked stop could fire;
- every order's quantity is conserved: filled + remaining + cancelled;
- price-time priority holds: a queue model driven only by the events
  (Rested, Fill, Replenished, Cancelled, Amended) always equals the book, and
  every fill takes the front order of the best level;
- each stop fires at most once, and only stops fire;
- an iceberg shows 0 < visible <= display while it has quantity left;
- depth, levels, best prices, orders() and views agree with the snapshot.

And: replaying the log gives identical events and book; a book rebuilt from
``restore_commands()`` equals the original and behaves identically.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sortedcontainers import SortedDict

from exchange.engine import (
    Accepted,
    Amended,
    AmendOrder,
    BandBreached,
    Cancelled,
    CancelOrder,
    Command,
    Event,
    ExpireOrder,
    Fill,
    NewOrder,
    OrderBook,
    OrderType,
    OrderView,
    PostOnly,
    Rejected,
    Replenished,
    Rested,
    SelfTrade,
    SetAuction,
    SetBand,
    SetLastPrice,
    Side,
    StopMoved,
    TimeInForce,
    Triggered,
    TriggerRef,
    Uncross,
    Waiting,
)

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

BUY = Side.BUY
SELL = Side.SELL
LIMIT = OrderType.LIMIT
MARKET = OrderType.MARKET
MTL = OrderType.MARKET_TO_LIMIT
STOP = OrderType.STOP
STOP_LIMIT = OrderType.STOP_LIMIT
TRAILING = OrderType.TRAILING_STOP
STOP_TYPES = (STOP, STOP_LIMIT, TRAILING)
RESTING_TIFS = [TimeInForce.GTC, TimeInForce.DAY, TimeInForce.GTD]
IMMEDIATE_TIFS = [TimeInForce.IOC, TimeInForce.FOK]

# --------------------------------------------------------------------------
# Command streams
# --------------------------------------------------------------------------

order_ids = st.integers(min_value=1, max_value=20)
prices = st.integers(min_value=97, max_value=103)
owners = st.sampled_from([0, 1, 1, 1, 2, 2, 2])


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies by relative weight (``st.one_of`` picks evenly)."""
    total = sum(weight for weight, _ in choices)

    def pick(roll: int) -> st.SearchStrategy[Any]:
        for weight, strategy in choices:
            if roll < weight:
                return strategy
            roll -= weight
        raise AssertionError(roll)

    return st.integers(min_value=0, max_value=total - 1).flatmap(pick)


quantities = weighted(
    (10, st.integers(min_value=1, max_value=6)),
    (4, st.integers(min_value=7, max_value=20)),
    (1, st.sampled_from([0, -1])),
)


def maybe(strategy: st.SearchStrategy[Any], chance: int) -> st.SearchStrategy[Any]:
    """``strategy`` about once in ``chance`` draws, else None (which is what
    shrinking goes for)."""
    return st.integers(min_value=0, max_value=chance - 1).flatmap(
        lambda roll: strategy if roll == chance - 1 else st.none()
    )


@st.composite
def new_orders(draw: st.DrawFn) -> NewOrder:
    """Mostly valid orders of every type; now and then a field out of place."""
    order_type = draw(
        st.sampled_from([LIMIT] * 6 + [MARKET, MTL, STOP, STOP_LIMIT, TRAILING])
    )
    quantity = draw(quantities)
    if order_type in (MARKET, STOP, TRAILING):
        tifs = IMMEDIATE_TIFS
    elif order_type is MTL:
        tifs = RESTING_TIFS
    else:
        tifs = RESTING_TIFS * 3 + IMMEDIATE_TIFS
    time_in_force = draw(
        st.one_of(st.sampled_from(tifs), maybe(st.sampled_from(TimeInForce), 15))
    )
    if time_in_force is None:
        time_in_force = tifs[0]
    needs_price = order_type in (LIMIT, STOP_LIMIT)
    price = draw(prices) if needs_price else draw(maybe(prices, 3))
    if draw(maybe(st.just(True), 40)):
        price = draw(st.sampled_from([None, 0]))
    special: dict[str, Any] = {}
    if order_type in (STOP, STOP_LIMIT):
        special["stop_price"] = draw(prices)
    if order_type in STOP_TYPES:
        special["trigger"] = draw(st.sampled_from(TriggerRef))
    if order_type is TRAILING:
        if draw(st.booleans()):
            special["trail_amount"] = draw(st.integers(min_value=1, max_value=4))
        else:
            special["trail_bps"] = draw(st.integers(min_value=50, max_value=400))
    if order_type is LIMIT and draw(maybe(st.just(True), 4)):
        special["display_quantity"] = draw(st.integers(min_value=1, max_value=4))
    if order_type is LIMIT and draw(maybe(st.just(True), 5)):
        special["post_only"] = draw(
            st.sampled_from([PostOnly.REJECT, PostOnly.REPRICE])
        )
    if draw(maybe(st.just(True), 6)):
        special["min_quantity"] = draw(st.integers(min_value=0, max_value=6))
    if draw(maybe(st.just(True), 3)):
        special["stp"] = draw(st.sampled_from(SelfTrade))
    if draw(maybe(st.just(True), 20)):
        special["oco_with"] = draw(order_ids)
    return NewOrder(
        draw(order_ids),
        draw(st.sampled_from(Side)),
        order_type,
        time_in_force,
        quantity,
        price,
        draw(owners),
        **special,
    )


amends = weighted(
    (3, st.builds(AmendOrder, order_id=order_ids, quantity=st.integers(1, 4))),
    (2, st.builds(AmendOrder, order_id=order_ids, price=prices)),
    (1, st.builds(AmendOrder, order_id=order_ids, stop_price=prices)),
    (
        1,
        st.builds(
            AmendOrder,
            order_id=order_ids,
            quantity=maybe(st.integers(min_value=0, max_value=12), 2),
            price=maybe(prices, 2),
            stop_price=maybe(prices, 3),
        ),
    ),
)
commands: st.SearchStrategy[Command] = weighted(
    (30, new_orders()),
    (5, st.builds(CancelOrder, order_id=order_ids)),
    (2, st.builds(ExpireOrder, order_id=order_ids)),
    (5, amends),
    (1, st.builds(SetAuction, on=st.just(True))),
    (2, st.builds(SetAuction, on=st.just(False))),
    (2, st.builds(Uncross, reference=maybe(prices, 2))),
    (
        1,
        st.builds(
            SetBand,
            low=maybe(st.integers(90, 99), 2),
            high=maybe(st.integers(101, 110), 2),
        ),
    ),
    (2, st.builds(SetLastPrice, price=weighted((4, prices), (1, st.none())))),
)


@st.composite
def brackets(draw: st.DrawFn) -> list[Command]:
    """Two orders of one owner, the second linked to the first (OCO)."""
    first = draw(new_orders())
    second = draw(new_orders())
    owner = draw(st.sampled_from([1, 2]))
    first = dataclasses.replace(first, owner=owner, oco_with=None)
    second = dataclasses.replace(second, owner=owner, oco_with=first.order_id)
    return [first, second]


streams = st.lists(
    weighted((12, commands.map(lambda command: [command])), (1, brackets())),
    min_size=15,
    max_size=60,
).map(lambda chunks: [command for chunk in chunks for command in chunk])


# --------------------------------------------------------------------------
# Invariant checks
# --------------------------------------------------------------------------


def fires(view: OrderView, reference: int | None) -> bool:
    if reference is None:
        return False
    assert view.stop_price is not None
    if view.side is BUY:
        return reference >= view.stop_price
    return reference <= view.stop_price


def references(book: OrderBook) -> dict[TriggerRef, int | None]:
    bid = book.best_bid()
    ask = book.best_ask()
    return {
        TriggerRef.LAST: book.last_price,
        TriggerRef.BID: None if bid is None else bid[0],
        TriggerRef.ASK: None if ask is None else ask[0],
    }


def assert_book_consistent(book: OrderBook) -> None:
    """Queries agree with the snapshot; no crossing or triggerable stop in
    continuous trading; icebergs show what they may."""
    views = book.snapshot()
    resting = [v for v in views if not v.parked]
    parked = [v for v in views if v.parked]
    assert len(book) == len(views) == len({v.order_id for v in views})
    levels: dict[tuple[Side, int], list[int]] = defaultdict(lambda: [0, 0])
    for view in resting:
        assert view.order_type is LIMIT and view.price is not None
        assert view.time_in_force in RESTING_TIFS
        assert view.visible is not None
        if view.display_quantity is None:
            assert view.visible == view.remaining
        else:
            assert 0 < view.visible <= min(view.display_quantity, view.remaining)
        assert book.get(view.order_id) == (view.side, view.price, view.remaining)
        levels[view.side, view.price][0] += view.visible
        levels[view.side, view.price][1] += 1
    for view in views:
        assert view.order_id in book
        assert book.view(view.order_id) == view
        if view.oco_with is not None:
            partner = book.view(view.oco_with)
            assert partner is not None and partner.oco_with == view.order_id
            assert partner.owner == view.owner != 0
    for view in parked:
        assert view.order_type in STOP_TYPES and view.visible is None
        assert book.get(view.order_id) is None
    bids, asks = book.depth()
    assert bids == [
        (p, *levels[BUY, p])
        for p in sorted({p for s, p in levels if s is BUY}, reverse=True)
    ]
    assert asks == [
        (p, *levels[SELL, p]) for p in sorted({p for s, p in levels if s is SELL})
    ]
    for side, side_levels in ((BUY, bids), (SELL, asks)):
        for price, quantity, count in side_levels:
            assert book.level(side, price) == (quantity, count)
    assert book.best_bid() == (bids[0] if bids else None)
    assert book.best_ask() == (asks[0] if asks else None)
    assert sorted(book.orders(), key=lambda o: o[0]) == sorted(
        ((v.order_id, v.side, v.price, v.remaining, v.owner) for v in resting),
        key=lambda o: o[0],
    )
    if not book.in_auction:
        if bids and asks:
            assert bids[0][0] < asks[0][0], (bids[0], asks[0])
        assert book.indicative() is None
        refs = references(book)
        for view in parked:
            assert not fires(view, refs[view.trigger]), view


class QueueModel:
    """The resting orders as the events describe them: price levels of
    [order_id, remaining, visible], oldest first.  Checks each fill takes the
    front of the best level."""

    def __init__(self) -> None:
        self.sides: dict[Side, SortedDict[int, list[list[int]]]] = {
            BUY: SortedDict(),
            SELL: SortedDict(),
        }
        self.where: dict[int, tuple[Side, int]] = {}

    def front(self, side: Side) -> tuple[int, list[int]]:
        book = self.sides[side]
        price = book.keys()[-1] if side is BUY else book.keys()[0]
        return price, book[price][0]

    def add(self, side: Side, price: int, entry: list[int]) -> None:
        self.sides[side].setdefault(price, []).append(entry)
        self.where[entry[0]] = (side, price)

    def remove(self, order_id: int) -> list[int]:
        side, price = self.where.pop(order_id)
        level = self.sides[side][price]
        (entry,) = [e for e in level if e[0] == order_id]
        level.remove(entry)
        if not level:
            del self.sides[side][price]
        return entry

    def take(self, side: Side, order_id: int, price: int, quantity: int) -> None:
        best, entry = self.front(side)
        assert entry[0] == order_id and best == price, (side, order_id, best, entry)
        assert 0 < quantity <= entry[2]
        entry[1] -= quantity
        entry[2] -= quantity
        if entry[1] == 0:
            self.remove(order_id)

    def apply(self, events: Sequence[Event]) -> None:
        for event in events:
            if isinstance(event, Rested):
                self.add(
                    event.side,
                    event.price,
                    [event.order_id, event.remaining, event.visible],
                )
            elif isinstance(event, Fill):
                if event.aggressor is None:
                    # Uncross: the fronts of both sides trade at one price.
                    buy_price, buy = self.front(BUY)
                    sell_price, sell = self.front(SELL)
                    assert {buy[0], sell[0]} == {
                        event.maker_order_id,
                        event.taker_order_id,
                    }
                    assert buy_price >= event.price >= sell_price
                    for entry in (buy, sell):
                        # Hidden quantity takes part: visible part first.
                        entry[1] -= event.quantity
                        entry[2] = max(0, entry[2] - event.quantity)
                        if entry[1] == 0:
                            self.remove(entry[0])
                else:
                    maker_side = SELL if event.aggressor is BUY else BUY
                    self.take(
                        maker_side, event.maker_order_id, event.price, event.quantity
                    )
                    assert event.taker_order_id not in self.where
            elif isinstance(event, Replenished):
                entry = self.remove(event.order_id)
                assert entry[1] == event.remaining and entry[2] == 0
                self.add(
                    event.side,
                    event.price,
                    [event.order_id, event.remaining, event.visible],
                )
            elif isinstance(event, Cancelled):
                if event.order_id in self.where:
                    entry = self.remove(event.order_id)
                    assert entry[1] == event.remaining
            elif isinstance(event, Amended) and event.order_id in self.where:
                if event.priority_kept:
                    side, price = self.where[event.order_id]
                    assert price == event.price
                    (entry,) = [
                        e for e in self.sides[side][price] if e[0] == event.order_id
                    ]
                    entry[1:] = [event.remaining, event.visible]
                else:
                    self.remove(event.order_id)

    def assert_matches(self, book: OrderBook) -> None:
        expected = {
            (side, price): [tuple(e) for e in level]
            for side, levels in self.sides.items()
            for price, level in levels.items()
        }
        actual: dict[tuple[Side, int], list[tuple[int, int, int]]] = defaultdict(list)
        for view in book.snapshot():
            if not view.parked:
                assert view.price is not None and view.visible is not None
                actual[view.side, view.price].append(
                    (view.order_id, view.remaining, view.visible)
                )
        assert dict(actual) == expected


class Ledger:
    """Every order instance: filled + remaining + cancelled == its quantity
    (an amend sets a new quantity); stops fire at most once."""

    def __init__(self) -> None:
        self.quantity: dict[int, int] = {}
        self.filled: dict[int, int] = defaultdict(int)
        self.cancelled: dict[int, int] = defaultdict(int)
        self.instance: dict[int, int] = {}  # order id -> current instance
        self.ended: set[int] = set()
        self.fired: set[int] = set()
        self.parked: set[int] = set()
        self.counter = itertools.count()
        self.trade_ids: list[int] = []

    def record(self, command: Command, events: Sequence[Event]) -> None:
        if events and isinstance(events[0], Rejected):
            assert len(events) == 1
            return
        for event in events:
            if isinstance(event, Accepted):
                assert isinstance(command, NewOrder)
                key = next(self.counter)
                self.instance[event.order_id] = key
                self.quantity[key] = command.quantity
            elif isinstance(event, Waiting):
                self.parked.add(self.instance[event.order_id])
            elif isinstance(event, Triggered):
                key = self.instance[event.order_id]
                assert key in self.parked and key not in self.fired
                self.parked.discard(key)
                self.fired.add(key)
            elif isinstance(event, StopMoved):
                assert self.instance[event.order_id] in self.parked
            elif isinstance(event, Fill):
                self.trade_ids.append(event.trade_id)
                for order_id in (event.maker_order_id, event.taker_order_id):
                    key = self.instance[order_id]
                    assert key not in self.parked and key not in self.ended
                    self.filled[key] += event.quantity
            elif isinstance(event, Cancelled):
                key = self.instance[event.order_id]
                assert key not in self.ended
                self.cancelled[key] += event.remaining
                self.parked.discard(key)
                self.ended.add(key)
            elif isinstance(event, Amended):
                key = self.instance[event.order_id]
                self.quantity[key] = self.filled[key] + event.remaining
            elif isinstance(event, BandBreached):
                pass

    def check(self, book: OrderBook) -> None:
        assert self.trade_ids == sorted(set(self.trade_ids))
        live = {v.order_id: v for v in book.snapshot()}
        for order_id, key in self.instance.items():
            view = live.get(order_id)
            remaining = view.remaining if view is not None else 0
            total = self.filled[key] + remaining + self.cancelled[key]
            assert total == self.quantity[key], (order_id, key)
            assert (view is not None) == (key not in self.ended and remaining > 0)
            if view is not None:
                assert view.parked == (key in self.parked)


def run(book: OrderBook, stream: Sequence[Command]) -> list[list[Event]]:
    return [book.apply(command) for command in stream]


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------


@SETTINGS
@given(streams)
def test_after_every_command_the_book_is_consistent_and_priority_holds(
    stream: list[Command],
) -> None:
    book = OrderBook()
    model = QueueModel()
    ledger = Ledger()
    for command in stream:
        events = book.apply(command)
        model.apply(events)
        ledger.record(command, events)
        model.assert_matches(book)
        ledger.check(book)
        assert_book_consistent(book)


@SETTINGS
@given(streams)
def test_replaying_the_log_gives_the_same_events_and_book(
    stream: list[Command],
) -> None:
    first = OrderBook()
    second = OrderBook()

    assert run(first, stream) == run(second, stream)
    assert first.snapshot() == second.snapshot()
    assert first.restore_commands() == second.restore_commands()


@SETTINGS
@given(streams, streams)
def test_a_book_restored_from_its_snapshot_behaves_identically(
    history: list[Command], future: list[Command]
) -> None:
    original = OrderBook()
    trades = sum(
        isinstance(e, Fill) for events in run(original, history) for e in events
    )

    rebuilt = OrderBook(next_trade_id=itertools.count(trades + 1).__next__)
    for command in original.restore_commands():
        events = rebuilt.apply(command)
        assert not any(isinstance(e, Rejected) for e in events), (command, events)
    assert rebuilt.snapshot() == original.snapshot()
    assert rebuilt.depth() == original.depth()
    assert rebuilt.indicative() == original.indicative()

    for command in future:
        assert rebuilt.apply(command) == original.apply(command), command
        assert rebuilt.snapshot() == original.snapshot()
    assert rebuilt.restore_commands() == original.restore_commands()
