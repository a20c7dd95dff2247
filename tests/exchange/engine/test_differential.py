"""Differential test: the engine against the naive reference matcher.

Long random seeded command streams over every command go through
``exchange.engine.book.OrderBook`` and ``tests/exchange/engine/reference.py``
(written from ``docs/engine.md`` only); the event lists must be identical
after every command, and the books (depth, every order with its remaining and
visible quantity, parked stops) identical at checkpoints and at the end.
Books are also rebuilt from their snapshots mid-stream (``RestoreOrder``) and
must carry on exactly as before.

When the two disagree, ``minimize`` (run this module as a script: ``python
tests/exchange/engine/test_differential.py SEED`` or ``dSEED`` for a deep-level
stream) shrinks the stream to a short sequence that still disagrees.

Where the contract's rules leave room, both follow the "Decisions" section
of ``docs/engine.md`` (the reference marks each such place "Reading:"): the
validation order, stops in auction, trigger checks and the fire queue,
trailing stops moving at most once per command, FOK / minimum-quantity
checks stopping at the band, the per-maker order of self-trade prevention,
band, fill, OCO and iceberg refresh, amend checks, the uncross pairing and
leaving an auction on a crossed book, OCO links on restore, and the
snapshot's book-wide priority order.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from exchange.engine import book as engine_book
from exchange.engine.types import (
    AmendOrder,
    CancelOrder,
    ExpireOrder,
    NewOrder,
    OrderType,
    PostOnly,
    RestoreOrder,
    SelfTrade,
    SetAuction,
    SetBand,
    SetLastPrice,
    Side,
    TimeInForce,
    TriggerRef,
    Uncross,
)
from tests.exchange.engine.reference import ReferenceBook

OrderBook = engine_book.OrderBook

LIMIT = OrderType.LIMIT
MARKET = OrderType.MARKET
MARKET_TO_LIMIT = OrderType.MARKET_TO_LIMIT
STOP = OrderType.STOP
STOP_LIMIT = OrderType.STOP_LIMIT
TRAILING_STOP = OrderType.TRAILING_STOP
GTC, DAY, GTD = TimeInForce.GTC, TimeInForce.DAY, TimeInForce.GTD
IOC, FOK = TimeInForce.IOC, TimeInForce.FOK

CENTER = 100

# --------------------------------------------------------------------------
# The command generator
# --------------------------------------------------------------------------


def pick(rng: random.Random, *weighted: tuple[int, Any]) -> Any:
    """One of the values, by relative weight (``Any``: the fuzzer feeds the engine
    ill-typed values on purpose)."""
    total = 0
    for weight, _ in weighted:
        total += weight
    roll = rng.random() * total
    for weight, value in weighted:
        if roll < weight:
            return value
        roll -= weight
    return weighted[-1][1]


@dataclass
class Generator:
    """Random commands that mostly make sense against the current book.

    It looks at the reference book (live orders, last price, auction flag)
    only to aim: cancels and amends name live orders, OCO partners are live
    orders of the same owner, prices sit around the touch.  A few percent of
    every field is invalid on purpose.
    """

    rng: random.Random
    full: bool = True  # every command and order option; False: plain limits
    # Three prices, small orders, many cancels: deep levels drained and
    # cancelled into (the engine compacts levels with many holes).
    deep: bool = False
    next_id: int = 1
    dead: list[int] = field(default_factory=list)

    def fresh_id(self, book: ReferenceBook) -> int:
        roll = self.rng.random()
        if roll < 0.03 and book.orders:
            return self.rng.choice(book.orders).order_id  # duplicate
        if roll < 0.06 and self.dead:
            return self.rng.choice(self.dead)  # reusing a dead id is fine
        self.next_id += 1
        return self.next_id

    def some_id(self, book: ReferenceBook) -> int:
        """A live order mostly, else a dead or never-seen id."""
        if book.orders and self.rng.random() < 0.88:
            return self.rng.choice(book.orders).order_id
        if self.dead and self.rng.random() < 0.5:
            return self.rng.choice(self.dead)
        return self.next_id + 1000

    def center(self, book: ReferenceBook) -> int:
        if self.deep or book.last_price is None:
            return CENTER
        return book.last_price

    def price(self, book: ReferenceBook) -> int:
        spread = 1 if self.deep else 6
        return max(1, self.center(book) + self.rng.randint(-spread, spread))

    def quantity(self) -> Any:
        if self.deep:
            return pick(
                self.rng,
                (90, self.rng.randint(1, 3)),
                (10, self.rng.randint(20, 80)),
            )
        return pick(
            self.rng,
            (85, self.rng.randint(1, 10)),
            (12, self.rng.randint(11, 40)),
            (1, 0),
            (1, -3),
            (1, True),
            (1, 2.5),
        )

    def command(self, book: ReferenceBook) -> Any:
        rng = self.rng
        if not self.full:
            what = pick(rng, (62, "new"), (30, "cancel"), (8, "restore"))
        elif self.deep and not book.auction:
            what = pick(
                rng,
                (58, "new"),
                (28, "cancel"),
                (2, "expire"),
                (8, "amend"),
                (2, "restore"),
                (1, "auction"),
                (1, "last"),
            )
        elif book.auction:
            what = pick(
                rng,
                (40, "new"),
                (6, "cancel"),
                (10, "amend"),
                (8, "uncross"),
                (16, "auction"),
                (3, "restore"),
                (3, "last"),
                (2, "expire"),
            )
        else:
            what = pick(
                rng,
                (60, "new"),
                (8, "cancel"),
                (2, "expire"),
                (13, "amend"),
                (3, "restore"),
                (2, "auction"),
                (1, "uncross"),
                (2, "band"),
                (2, "last"),
            )
        if what == "new":
            return self.new_order(book)
        if what == "cancel":
            return CancelOrder(self.some_id(book))
        if what == "expire":
            return ExpireOrder(self.some_id(book))
        if what == "amend":
            return self.amend(book)
        if what == "restore":
            return self.restore(book)
        if what == "auction":
            return SetAuction(not book.auction if rng.random() < 0.9 else book.auction)
        if what == "uncross":
            return Uncross(pick(rng, (8, None), (12, self.price(book)), (1, -1)))
        if what == "band":
            if rng.random() < 0.05:
                return SetBand(self.center(book) + 1, self.center(book) - 1)
            if rng.random() < 0.45:
                return SetBand(None, None)
            c = self.center(book)
            low = pick(rng, (4, c - rng.randint(2, 10)), (1, None))
            high = pick(rng, (4, c + rng.randint(2, 10)), (1, None))
            return SetBand(low, high)
        if what == "last":
            return SetLastPrice(pick(rng, (18, self.price(book)), (2, None), (1, 0)))
        raise AssertionError(what)

    def new_order(self, book: ReferenceBook) -> NewOrder:
        rng = self.rng
        if self.deep:
            kind = pick(
                rng,
                (80, LIMIT),
                (10, MARKET),
                (3, MARKET_TO_LIMIT),
                (3, STOP),
                (2, STOP_LIMIT),
                (2, TRAILING_STOP),
            )
        elif self.full:
            kind = pick(
                rng,
                (46, LIMIT),
                (8, MARKET),
                (6, MARKET_TO_LIMIT),
                (8, STOP),
                (8, STOP_LIMIT),
                (6, TRAILING_STOP),
            )
        else:
            kind = pick(rng, (5, LIMIT), (1, MARKET))
        side = rng.choice((Side.BUY, Side.SELL))
        quantity = self.quantity()
        owner = pick(rng, (3, 0), (2, 1), (2, 2), (1, 3))
        if kind in (LIMIT, STOP_LIMIT):
            price = pick(
                rng, (96, self.price(book)), (2, None), (1, 0), (1, -1), (1, True)
            )
        else:
            price = pick(rng, (6, None), (4, self.price(book)), (1, 0))
        if kind is LIMIT:
            if self.deep:
                tif = pick(rng, (85, GTC), (5, DAY), (5, IOC), (5, FOK))
            elif self.full:
                tif = pick(rng, (50, GTC), (10, DAY), (10, GTD), (15, IOC), (15, FOK))
            else:
                tif = pick(rng, (3, GTC), (1, IOC), (1, FOK))
        elif kind is MARKET_TO_LIMIT:
            tif = pick(rng, (30, GTC), (5, DAY), (5, GTD), (2, IOC))
        elif kind is STOP_LIMIT:
            tif = pick(rng, (6, GTC), (1, DAY), (1, GTD), (2, IOC), (2, FOK))
        elif self.full:
            tif = pick(rng, (60, IOC), (35, FOK), (5, GTC))
        else:
            tif = pick(rng, (1, IOC), (1, FOK))
        if not self.full:
            return NewOrder(
                self.fresh_id(book), side, kind, tif, quantity, price, owner
            )

        extra: dict[str, Any] = {}
        resting_limit = kind is LIMIT and tif in (GTC, DAY, GTD)
        q = quantity if type(quantity) is int and quantity > 0 else 5
        if kind in (STOP, STOP_LIMIT):
            extra["stop_price"] = pick(
                rng, (97, self.price(book)), (1, None), (1, 0), (1, -2)
            )
        if kind is TRAILING_STOP:
            roll = rng.random()
            if roll < 0.55:
                extra["trail_amount"] = rng.randint(1, 5)
            elif roll < 0.95:
                extra["trail_bps"] = rng.choice([1, 50, 99, 100, 150, 250, 499, 9999])
            elif roll < 0.97:
                extra["trail_amount"], extra["trail_bps"] = 2, 100
            elif roll < 0.98:
                extra["trail_bps"] = 10000
            elif roll < 0.99:
                extra["stop_price"], extra["trail_amount"] = self.price(book), 2
            # else: no trail at all
        if kind in (STOP, STOP_LIMIT, TRAILING_STOP) or rng.random() < 0.02:
            extra["trigger"] = pick(
                rng, (6, TriggerRef.LAST), (2, TriggerRef.BID), (2, TriggerRef.ASK)
            )
        if kind not in (STOP, STOP_LIMIT, TRAILING_STOP) and rng.random() < 0.01:
            extra["stop_price"] = self.price(book)
        if resting_limit and rng.random() < 0.2 and q >= 2:
            extra["display_quantity"] = rng.randint(1, q - 1)
        elif rng.random() < 0.01:
            extra["display_quantity"] = pick(rng, (1, q), (1, 0), (1, 1))
        if resting_limit and rng.random() < 0.12:
            extra["post_only"] = rng.choice((PostOnly.REJECT, PostOnly.REPRICE))
        elif rng.random() < 0.01:
            extra["post_only"] = PostOnly.REJECT
        roll = rng.random()
        if roll < 0.08:
            extra["min_quantity"] = rng.randint(1, q)
        elif roll < 0.09:
            extra["min_quantity"] = pick(rng, (1, q + 1), (1, -1))
        if rng.random() < 0.35:
            extra["stp"] = rng.choice(
                (
                    SelfTrade.CANCEL_NEWEST,
                    SelfTrade.CANCEL_OLDEST,
                    SelfTrade.CANCEL_BOTH,
                )
            )
        roll = rng.random()
        if roll < 0.10:
            mates = [
                o
                for o in book.orders
                if o.owner == owner and owner != 0 and o.oco_with is None
            ]
            if mates:
                extra["oco_with"] = rng.choice(mates).order_id
        elif roll < 0.11:
            extra["oco_with"] = self.some_id(book)
        return NewOrder(
            self.fresh_id(book), side, kind, tif, quantity, price, owner, **extra
        )

    def amend(self, book: ReferenceBook) -> AmendOrder:
        rng = self.rng
        order_id = self.some_id(book)
        target = book.find(order_id)
        quantity = pick(
            rng,
            (40, None),
            (57, rng.randint(1, 15)),
            (2, 0),
            (1, -1),
        )
        price = pick(rng, (50, None), (48, self.price(book)), (2, 0))
        stop_price = None
        if target is not None and target.parked and rng.random() < 0.4:
            stop_price = pick(rng, (19, self.price(book)), (1, 0))
        elif rng.random() < 0.02:
            stop_price = self.price(book)
        if quantity is None and price is None and stop_price is None:
            quantity = rng.randint(1, 15)
        return AmendOrder(order_id, quantity, price, stop_price)

    def restore(self, book: ReferenceBook) -> RestoreOrder:
        """A stored order coming back: mostly away from the touch."""
        rng = self.rng
        side = rng.choice((Side.BUY, Side.SELL))
        quantity = self.quantity()
        owner = pick(rng, (3, 0), (2, 1), (2, 2), (1, 3))
        order_id = self.fresh_id(book)
        c = self.center(book)
        if not self.full or rng.random() < 0.7:
            away = rng.randint(3, 12)
            away_price = c - away if side is Side.BUY else c + away
            price = pick(rng, (9, max(1, away_price)), (1, self.price(book)))
            if not self.full:
                return RestoreOrder(order_id, side, price, quantity, owner)
            extra: dict[str, Any] = {}
            q = quantity if type(quantity) is int and quantity > 0 else 5
            if rng.random() < 0.3 and q >= 2:
                extra["display_quantity"] = rng.randint(1, q - 1)
                if rng.random() < 0.5:
                    extra["visible"] = rng.randint(1, extra["display_quantity"])
            if rng.random() < 0.2:
                extra["stp"] = SelfTrade.CANCEL_OLDEST
            return RestoreOrder(
                order_id,
                side,
                price,
                quantity,
                owner,
                time_in_force=rng.choice((GTC, DAY, GTD)),
                **extra,
            )
        kind = rng.choice((STOP, STOP_LIMIT, TRAILING_STOP))
        extra = {"trigger": rng.choice(list(TriggerRef))}
        if owner and rng.random() < 0.3:
            # An OCO leg: naming a live unlinked order of the owner (linked),
            # or an id that is not live (restored unlinked).
            mates = [
                o.order_id
                for o in book.orders
                if o.owner == owner and o.oco_with is None
            ]
            if mates and rng.random() < 0.6:
                extra["oco_with"] = rng.choice(mates)
            else:
                extra["oco_with"] = self.next_id + rng.randint(1, 3)
        away = rng.randint(2, 10)
        # A level the reference is not at yet: buy stops above, sell below.
        level = c + away if side is Side.BUY else max(1, c - away)
        extra["stop_price"] = level
        if kind is TRAILING_STOP:
            extra["trail_amount"] = away
        price = self.price(book) if kind is STOP_LIMIT else None
        # A stop's time in force is the life of the stop: any of them.
        tif = rng.choice((GTC, DAY, IOC, FOK))
        return RestoreOrder(
            order_id,
            side,
            price,
            quantity,
            owner,
            order_type=kind,
            time_in_force=tif,
            **extra,
        )


# --------------------------------------------------------------------------
# Running both
# --------------------------------------------------------------------------


def book_state(book: object) -> object:
    """What must agree between engine and reference: depth, every order, the
    indicative uncross (with and without a reference), last price, auction
    flag and band."""
    if isinstance(book, ReferenceBook):
        flags = (book.last_price, book.auction, (book.band_low, book.band_high))
    else:
        flags = (book.last_price, book.in_auction, book.band)  # type: ignore[attr-defined]
    return (
        book.depth(),  # type: ignore[attr-defined]
        book.snapshot(),  # type: ignore[attr-defined]
        book.indicative(),  # type: ignore[attr-defined]
        book.indicative(CENTER),  # type: ignore[attr-defined]
        flags,
    )


def restore_commands(book: ReferenceBook) -> list[object]:
    """The documented rebuild: auction flag, band, last price, then restores."""
    commands: list[object] = []
    if book.band_low is not None or book.band_high is not None:
        commands.append(SetBand(book.band_low, book.band_high))
    if book.auction:
        commands.append(SetAuction(True))
    if book.last_price is not None:
        commands.append(SetLastPrice(book.last_price))
    commands.extend(view.restore() for view in book.snapshot())
    return commands


def rebuilt(book: object, factory: Callable[[], object]) -> tuple[object, str | None]:
    """A fresh book of the same kind put back from ``book``'s restore commands.

    Returns the new book and what went wrong, if anything: a command that was
    not accepted, or a book that does not come back exactly.
    """
    if isinstance(book, ReferenceBook):
        commands = restore_commands(book)
    else:
        commands = book.restore_commands()  # type: ignore[attr-defined]
    fresh = factory()
    for command in commands:
        events = fresh.apply(command)  # type: ignore[attr-defined]
        if isinstance(command, RestoreOrder):
            ok = len(events) == 1 and type(events[0]).__name__ in ("Rested", "Waiting")
        else:
            ok = events == []
        if not ok:
            return fresh, f"{type(book).__name__} cannot apply {command}: {events}"
    if book_state(fresh) != book_state(book):
        return fresh, f"{type(book).__name__} rebuilt differs: {book_state(fresh)}"
    return fresh, None


class Disagreement(AssertionError):
    """Engine and reference differ; ``history`` is every command up to it."""

    def __init__(self, message: str, history: list[object]) -> None:
        super().__init__(message)
        self.history = history


def run_stream(
    seed: int,
    length: int,
    *,
    full: bool,
    deep: bool = False,
    rebuild_every: int = 0,
    check_every: int = 100,
    commands: Sequence[Any] | None = None,
) -> list[object]:
    """Run one stream through both; raise Disagreement with the history."""
    rng = random.Random(seed)
    generator = Generator(rng, full=full, deep=deep)
    engine = OrderBook()
    reference = ReferenceBook()
    history: list[object] = []
    for index in range(length if commands is None else len(commands)):
        command = generator.command(reference) if commands is None else commands[index]
        history.append(command)
        live_before = {o.order_id for o in reference.orders}
        got = engine.apply(command)
        want = reference.apply(command)
        if got != want:
            raise Disagreement(
                f"seed {seed}, command #{index}: {command!r}\n"
                f"engine:    {got}\nreference: {want}",
                history,
            )
        live_after = {o.order_id for o in reference.orders}
        generator.dead.extend(live_before - live_after)
        if len(generator.dead) > 200:
            del generator.dead[:100]
        if full and (index % check_every == check_every - 1):
            if book_state(engine) != book_state(reference):
                raise Disagreement(
                    f"seed {seed}, after command #{index}: books differ\n"
                    f"engine:    {book_state(engine)}\n"
                    f"reference: {book_state(reference)}",
                    history,
                )
        if rebuild_every and index % rebuild_every == rebuild_every - 1:
            if engine.restore_commands() != restore_commands(reference):
                raise Disagreement(
                    f"seed {seed}, after command #{index}: restore commands differ",
                    history,
                )
            engine, trouble = rebuilt(engine, OrderBook)  # type: ignore[assignment]
            if trouble is None:
                reference, trouble = rebuilt(reference, ReferenceBook)  # type: ignore[assignment]
            if trouble is not None:
                raise Disagreement(
                    f"seed {seed}, rebuild after command #{index}: {trouble}", history
                )
    if full:
        if book_state(engine) != book_state(reference):
            raise Disagreement(
                f"seed {seed}, at the end: books differ\n"
                f"engine:    {book_state(engine)}\n"
                f"reference: {book_state(reference)}",
                history,
            )
    else:
        assert engine.depth() == reference.depth(), seed
    return history


def minimize(
    seed: int, length: int, *, full: bool = True, deep: bool = False
) -> list[object]:
    """The shortest command list found that still makes the two disagree.

    The stream runs as the tests run it; candidates are checked after every
    command (and, for a rebuild failure, rebuilt after every command: a
    correct rebuild changes nothing, so that is a fair test).
    """
    try:
        run_stream(
            seed,
            length,
            full=full,
            deep=deep,
            rebuild_every=300 if seed % 4 == 0 and not deep else 0,
        )
    except Disagreement as failure:
        commands = list(failure.history)
        rebuild_every = 1 if "rebuild" in str(failure) else 0
    else:
        return []

    def fails(candidate: list[object]) -> bool:
        try:
            run_stream(
                seed,
                0,
                full=full,
                commands=candidate,
                check_every=1,
                rebuild_every=rebuild_every,
            )
        except Disagreement:
            return True
        except (AssertionError, KeyError, ValueError, TypeError):
            return False
        return False

    chunk = max(1, len(commands) // 2)
    while chunk >= 1:
        start = 0
        while start < len(commands):
            candidate = commands[:start] + commands[start + chunk :]
            if candidate and fails(candidate):
                commands = candidate
            else:
                start += chunk
        chunk //= 2
    return commands


# --------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------

PLAIN_SEEDS = range(40)
FULL_SEEDS = 200
FULL_LENGTH = 1500
SEED_GROUPS = 10


def test_plain_limit_streams_agree() -> None:
    """Limit/market orders, GTC/IOC/FOK, cancels and restores only."""
    for seed in PLAIN_SEEDS:
        run_stream(10_000 + seed, 1000, full=False)


def test_deep_level_streams_agree() -> None:
    """Three prices, small orders, many cancels: 12 seeds x 4,000 commands."""
    for seed in range(12):
        run_stream(50_000 + seed, 4000, full=True, deep=True, check_every=250)


@pytest.mark.parametrize("group", range(SEED_GROUPS))
def test_full_streams_agree(group: int) -> None:
    """Every command and order option; 200 seeds x 1,500 commands in all."""
    per_group = FULL_SEEDS // SEED_GROUPS
    for seed in range(group * per_group, (group + 1) * per_group):
        # Every fourth stream is also rebuilt from snapshots every 300 commands.
        run_stream(
            seed,
            FULL_LENGTH,
            full=True,
            rebuild_every=300 if seed % 4 == 0 else 0,
        )


# --------------------------------------------------------------------------
# The reference itself, on hand-worked cases from the contract
# --------------------------------------------------------------------------


def _ref(*commands: Any) -> tuple[ReferenceBook, list[list[Any]]]:
    book = ReferenceBook()
    return book, [book.apply(command) for command in commands]


def test_reference_iceberg_refreshes_and_is_reached_again() -> None:
    from exchange.engine.types import Accepted, Fill, Replenished, Rested

    book, events = _ref(
        NewOrder(1, Side.SELL, LIMIT, GTC, 10, 100, display_quantity=3),
        NewOrder(2, Side.SELL, LIMIT, GTC, 2, 100),
        NewOrder(3, Side.BUY, LIMIT, IOC, 6, 100),
    )
    assert events[0] == [Accepted(1), Rested(1, Side.SELL, 100, 10, visible=3)]
    assert events[2] == [
        Accepted(3),
        Fill(1, 1, 3, 0, 0, Side.BUY, 100, 3, 7, 3),
        Replenished(1, Side.SELL, 100, 7, 3),
        Fill(2, 2, 3, 0, 0, Side.BUY, 100, 2, 0, 1),
        Fill(3, 1, 3, 0, 0, Side.BUY, 100, 1, 6, 0),
    ]
    assert book.depth() == ([], [(100, 2, 1)])


def test_reference_self_trade_prevention() -> None:
    from exchange.engine.types import Accepted, Cancelled, CancelReason, Fill

    # CANCEL_OLDEST drops own maker 1 and trades with 2; CANCEL_NEWEST stops.
    _, events = _ref(
        NewOrder(1, Side.SELL, LIMIT, GTC, 5, 100, 7),
        NewOrder(2, Side.SELL, LIMIT, GTC, 5, 100, 8),
        NewOrder(3, Side.BUY, LIMIT, GTC, 4, 100, 7, stp=SelfTrade.CANCEL_OLDEST),
    )
    assert events[2] == [
        Accepted(3),
        Cancelled(1, 5, CancelReason.SELF_TRADE),
        Fill(1, 2, 3, 8, 7, Side.BUY, 100, 4, 1, 0),
    ]
    _, events = _ref(
        NewOrder(1, Side.SELL, LIMIT, GTC, 5, 100, 7),
        NewOrder(3, Side.BUY, LIMIT, GTC, 4, 100, 7, stp=SelfTrade.CANCEL_BOTH),
    )
    assert events[1] == [
        Accepted(3),
        Cancelled(1, 5, CancelReason.SELF_TRADE),
        Cancelled(3, 4, CancelReason.SELF_TRADE),
    ]
    _, events = _ref(
        NewOrder(1, Side.SELL, LIMIT, GTC, 5, 100, 7),
        NewOrder(3, Side.BUY, LIMIT, GTC, 4, 100, 7),  # NONE: they trade
    )
    assert events[1] == [Accepted(3), Fill(1, 1, 3, 7, 7, Side.BUY, 100, 4, 1, 0)]


def test_reference_stop_cascade_and_oco() -> None:
    from exchange.engine.types import (
        Accepted,
        Cancelled,
        CancelReason,
        Fill,
        Rested,
        Triggered,
        Waiting,
    )

    book, events = _ref(
        NewOrder(1, Side.BUY, LIMIT, GTC, 5, 99),
        NewOrder(2, Side.BUY, LIMIT, GTC, 5, 98),
        # A sell stop at 99 and its OCO partner, a take-profit at 105.
        NewOrder(3, Side.SELL, STOP, IOC, 5, owner=4, stop_price=99),
        NewOrder(4, Side.SELL, LIMIT, GTC, 5, 105, 4, oco_with=3),
        # A second sell stop at 98: fires once stop 3's sale prints at 98.
        NewOrder(5, Side.SELL, STOP, IOC, 5, stop_price=98),
        NewOrder(6, Side.SELL, LIMIT, IOC, 1, 99),
    )
    assert events[2] == [Accepted(3), Waiting(3, 99)]
    assert events[3] == [Accepted(4), Rested(4, Side.SELL, 105, 5)]
    assert events[5] == [
        Accepted(6),
        Fill(1, 1, 6, 0, 0, Side.SELL, 99, 1, 4, 0),
        Triggered(3, 99),
        Cancelled(4, 5, CancelReason.OCO),
        Fill(2, 1, 3, 0, 4, Side.SELL, 99, 4, 0, 1),
        Fill(3, 2, 3, 0, 4, Side.SELL, 98, 1, 4, 0),
        Triggered(5, 98),
        Fill(4, 2, 5, 0, 0, Side.SELL, 98, 4, 0, 1),
        Cancelled(5, 1, CancelReason.MARKET_REMAINDER),
    ]
    assert book.snapshot() == []


def test_reference_market_to_limit_rests_at_its_first_fill_price() -> None:
    from exchange.engine.types import Accepted, Fill, Rested

    # It takes only the best level (101) and rests the rest there.
    _, events = _ref(
        NewOrder(1, Side.SELL, LIMIT, GTC, 2, 101),
        NewOrder(2, Side.SELL, LIMIT, GTC, 2, 102),
        NewOrder(3, Side.BUY, MARKET_TO_LIMIT, GTC, 7),
    )
    assert events[2] == [
        Accepted(3),
        Fill(1, 1, 3, 0, 0, Side.BUY, 101, 2, 0, 5),
        Rested(3, Side.BUY, 101, 5),
    ]


def test_reference_uncross() -> None:
    from exchange.engine.types import Accepted, Fill, Rested

    # price  buy>=  sell<=  exec
    #   99     8      3      3
    #  100     8      7      7   <- equilibrium, surplus 1 (buy)
    #  101     5      7      5
    book, events = _ref(
        SetAuction(True),
        NewOrder(1, Side.SELL, LIMIT, GTC, 3, 99),
        NewOrder(2, Side.BUY, LIMIT, GTC, 5, 101),
        NewOrder(3, Side.SELL, LIMIT, GTC, 4, 100),
        NewOrder(4, Side.BUY, LIMIT, GTC, 3, 100),
        Uncross(),
    )
    assert events[2] == [Accepted(2), Rested(2, Side.BUY, 101, 5)]
    # Front buy 2 against front sell 1 (1 is older: maker), then sell 3.
    assert events[5] == [
        Fill(1, 1, 2, 0, 0, None, 100, 3, 0, 2),
        Fill(2, 2, 3, 0, 0, None, 100, 2, 0, 2),
        Fill(3, 3, 4, 0, 0, None, 100, 2, 0, 1),
    ]
    assert book.depth() == ([(100, 1, 1)], [])
    assert book.auction and book.last_price == 100


# --------------------------------------------------------------------------
# Running by hand: python tests/exchange/engine/test_differential.py SEED...
# (dSEED for a deep-level stream)
# --------------------------------------------------------------------------

if __name__ == "__main__":
    for arg in sys.argv[1:]:
        deep = arg.startswith("d")
        seed = int(arg.lstrip("d"))
        start = time.perf_counter()
        found = minimize(seed, 4000 if deep else FULL_LENGTH, deep=deep)
        took = time.perf_counter() - start
        if not found:
            print(f"seed {arg}: agree ({took:.1f}s)")
            continue
        print(f"seed {arg}: {len(found)} commands still disagree ({took:.1f}s)")
        for command in found:
            print("   ", command)
        try:
            run_stream(seed, 0, full=True, commands=found, check_every=1)
        except Disagreement as failure:
            print(failure.args[0])
