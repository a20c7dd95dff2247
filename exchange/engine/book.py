"""A price-time priority order book and matcher for one instrument.

Pure Python and deterministic: the same sequence of commands always yields
the same sequence of events.  No I/O, no clocks, no randomness.  The contract
is ``docs/engine.md``.

Layout
------
Each side is a :class:`sortedcontainers.SortedDict` mapping a price (ticks)
to a ``_Level``.  A level keeps its orders in a plain ``dict`` keyed by order
id: dicts preserve insertion order, so iterating a level visits orders in time
priority, and cancelling any order is a single O(1) ``del``.  The level keeps
running totals of the visible and the hidden (iceberg) quantity.  The best bid
is the last key of the bid side, the best ask the first key of the ask side.
An index maps every resting order id to its ``_Order``.  Parked stops live in
a :class:`~exchange.engine._park.Park`.

The hot path (a plain limit order, a cancel of a plain order) never touches
the special machinery: a plain order has no ``ext`` and zero ``flags``, the
matching loop hands over to the general loop only when it meets a maker with
flags (iceberg, OCO link), and stops are checked only while some are parked.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from sortedcontainers import SortedDict

from exchange.engine._checks import STOP_TYPES, check_new, check_restore, is_lots
from exchange.engine._model import (
    DEAD,
    ICEBERG,
    LINKED,
    QUEUED,
    TAKING,
    _Ext,
    _Level,
    _Order,
)
from exchange.engine._park import Park, trail_level
from exchange.engine.auction import Equilibrium, equilibrium
from exchange.engine.types import (
    Accepted,
    Amended,
    AmendOrder,
    BandBreached,
    Cancelled,
    CancelOrder,
    CancelReason,
    Command,
    Event,
    ExpireOrder,
    Fill,
    NewOrder,
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
    StopMoved,
    TimeInForce,
    Triggered,
    TriggerRef,
    Uncross,
    Waiting,
)

__all__ = ["OrderBook"]

_BUY = Side.BUY
_LIMIT = OrderType.LIMIT
_MARKET = OrderType.MARKET
_MTL = OrderType.MARKET_TO_LIMIT
_STOP_LIMIT = OrderType.STOP_LIMIT
_TRAILING = OrderType.TRAILING_STOP
_GTC = TimeInForce.GTC
_IOC = TimeInForce.IOC
_FOK = TimeInForce.FOK
_LAST = TriggerRef.LAST
_BID = TriggerRef.BID
_ASK = TriggerRef.ASK
_NO_POST_ONLY = PostOnly.NONE
_REJECT = PostOnly.REJECT
_REPRICE = PostOnly.REPRICE
_NO_STP = SelfTrade.NONE
_CANCEL_NEWEST = SelfTrade.CANCEL_NEWEST
_CANCEL_BOTH = SelfTrade.CANCEL_BOTH

_REQUESTED = CancelReason.REQUESTED
_EXPIRED = CancelReason.EXPIRED
_IOC_REMAINDER = CancelReason.IOC_REMAINDER
_FOK_UNFILLABLE = CancelReason.FOK_UNFILLABLE
_MARKET_REMAINDER = CancelReason.MARKET_REMAINDER
_MIN_QUANTITY = CancelReason.MIN_QUANTITY
_SELF_TRADE = CancelReason.SELF_TRADE
_OCO = CancelReason.OCO

_DUPLICATE = RejectReason.DUPLICATE_ORDER_ID
_UNKNOWN = RejectReason.UNKNOWN_ORDER
_BAD_QUANTITY = RejectReason.INVALID_QUANTITY
_BAD_PRICE = RejectReason.INVALID_PRICE
_BAD_STOP = RejectReason.INVALID_STOP
_WOULD_TAKE = RejectReason.POST_ONLY_WOULD_TAKE
_NO_REFERENCE = RejectReason.NO_REFERENCE_PRICE
_IN_AUCTION = RejectReason.NOT_ALLOWED_IN_AUCTION
_BAD_OCO = RejectReason.INVALID_OCO
_NOT_AMENDABLE = RejectReason.NOT_AMENDABLE

_IMMEDIATE = frozenset((_IOC, _FOK))
# Prices are ticks > 0: these bounds stand for "no band".
_NO_LOW = 0
_NO_HIGH = 1 << 62


class OrderBook:
    """One instrument's order book.  Feed it commands with :meth:`apply`.

    Every command yields its events in order (``docs/engine.md``); an invalid
    command yields a single ``Rejected`` and changes nothing.  Trade ids come
    from ``next_trade_id`` and are drawn only when a fill happens.
    """

    __slots__ = (
        "_active",
        "_active_done",
        "_asks",
        "_auction",
        "_band",
        "_bids",
        "_high",
        "_index",
        "_last",
        "_low",
        "_next_trade_id",
        "_park",
        "_parked",
        "_queue",
        "_seq",
    )

    def __init__(self, *, next_trade_id: Callable[[], int] | None = None) -> None:
        # price -> level; best bid is the last key, best ask the first key.
        self._bids: SortedDict[int, _Level] = SortedDict()
        self._asks: SortedDict[int, _Level] = SortedDict()
        self._index: dict[int, _Order] = {}
        self._next_trade_id: Callable[[], int] = (
            itertools.count(1).__next__ if next_trade_id is None else next_trade_id
        )
        self._seq: Callable[[], int] = itertools.count(1).__next__
        self._park = Park()
        self._parked = self._park.orders
        self._queue: deque[tuple[_Order, int]] = deque()
        self._auction = False
        self._last: int | None = None
        self._band: tuple[int | None, int | None] = (None, None)
        self._low = _NO_LOW
        self._high = _NO_HIGH
        # The level a matching pass is walking: orders removed from it are only
        # marked (DEAD) and collected here, the pass deletes them at its end.
        self._active: _Level | None = None
        self._active_done: list[_Order] = []

    # ------------------------------------------------------------------
    # Commands
    # ------------------------------------------------------------------

    def apply(self, command: Command) -> list[Event]:
        """Apply one command and return the events it produced, in order."""
        kind = type(command)
        if kind is NewOrder:
            events = self._new_order(command)  # type: ignore[arg-type]
        elif kind is CancelOrder:
            events = self._cancel(command.order_id, _REQUESTED)  # type: ignore[union-attr]
        else:
            handler = _HANDLERS.get(kind)
            if handler is None:
                # Subclasses of the command classes take the slow road.
                for base, found in _HANDLERS.items():
                    if isinstance(command, base):
                        handler = found
                        break
                else:
                    raise TypeError(f"not an engine command: {command!r}")
            if handler is OrderBook._restore:
                # Restoring never matches nor fires stops.
                return self._restore(command)  # type: ignore[arg-type]
            events = handler(self, command)
        if self._parked and (not events or type(events[0]) is not Rejected):
            self._run_stops(events)
        return events

    def _new_order(self, command: NewOrder) -> list[Event]:
        order_id = command.order_id
        if order_id in self._index or order_id in self._parked:
            return [Rejected(order_id, _DUPLICATE)]
        quantity = command.quantity
        # Exact type checks: bools and floats are not lots or ticks.
        if type(quantity) is not int or quantity <= 0:
            return [Rejected(order_id, _BAD_QUANTITY)]
        if (
            command.order_type is not _LIMIT
            or self._auction
            or command.display_quantity is not None
            or command.stp is not _NO_STP
            or command.post_only is not _NO_POST_ONLY
            or command.oco_with is not None
            or command.min_quantity
            or command.stop_price is not None
            or command.trail_amount is not None
            or command.trail_bps is not None
            or command.trigger is not _LAST
        ):
            return self._new_special(command)

        # The hot path: a plain limit order.
        price = command.price
        if type(price) is not int or price <= 0:
            return [Rejected(order_id, _BAD_PRICE)]
        side = command.side
        time_in_force = command.time_in_force
        events: list[Event] = [Accepted(order_id)]
        if time_in_force is _FOK and self._executable(side, price, quantity) < quantity:
            events.append(Cancelled(order_id, quantity, _FOK_UNFILLABLE))
            return events
        remaining = self._match(order_id, command.owner, side, price, quantity, events)
        if remaining:
            if time_in_force is _IOC or time_in_force is _FOK:
                # (A FOK that passed the check only keeps a remainder when a
                # band stopped it.)
                events.append(Cancelled(order_id, remaining, _IOC_REMAINDER))
            else:
                self._rest_plain(
                    order_id, side, price, remaining, command.owner, time_in_force
                )
                events.append(Rested(order_id, side, price, remaining, remaining))
        return events

    def _new_special(self, command: NewOrder) -> list[Event]:
        """A NewOrder of any type or instruction (validated in full here)."""
        order_id = command.order_id
        reason = check_new(command)
        if reason is not None:
            return [Rejected(order_id, reason)]
        order_type = command.order_type
        side = command.side
        time_in_force = command.time_in_force
        partner = None
        if command.oco_with is not None:
            partner = self._oco_partner(
                command.oco_with, order_id, command.owner, restoring=False
            )
            if partner is None:
                return [Rejected(order_id, _BAD_OCO)]
        if self._auction and (
            order_type is _MARKET
            or order_type is _MTL
            or (order_type is _LIMIT and time_in_force in _IMMEDIATE)
            or command.post_only is _REPRICE
        ):
            return [Rejected(order_id, _IN_AUCTION)]
        ext = _Ext(
            order_type,
            display=command.display_quantity,
            post_only=command.post_only,
            stp=command.stp,
            min_quantity=command.min_quantity,
            stop_price=command.stop_price,
            trigger=command.trigger,
            trail_amount=command.trail_amount,
            trail_bps=command.trail_bps,
        )
        if order_type is _TRAILING:
            reference = self._reference(command.trigger)
            if reference is None:
                return [Rejected(order_id, _NO_REFERENCE)]
            ext.stop_price = trail_level(side, ext, reference)
        price = command.price
        if command.post_only is not _NO_POST_ONLY and not self._auction:
            assert price is not None
            price = self._post_only_price(side, price, command.post_only)
            if price is None:
                return [Rejected(order_id, _WOULD_TAKE)]

        order = _Order(
            order_id, side, price, command.quantity, command.owner, 0, time_in_force
        )
        order.ext = ext
        if ext.display is not None:
            order.flags = ICEBERG
        events: list[Event] = [Accepted(order_id)]
        if partner is not None:
            _link(order, partner)
        if order_type in STOP_TYPES:
            assert ext.stop_price is not None
            order.seq = self._seq()
            self._park.add(order)
            events.append(Waiting(order_id, ext.stop_price))
        else:
            self._enter(order, events, command.min_quantity)
        return events

    def _cancel(self, order_id: int, reason: CancelReason) -> list[Event]:
        order = self._index.get(order_id)
        if order is None or order.flags:
            order = order or self._parked.get(order_id)
            if order is None:
                return [Rejected(order_id, _UNKNOWN)]
            events: list[Event] = []
            self._kill(order, reason, events)
            return events
        del self._index[order_id]
        price = order.price
        side_book = self._bids if order.side is _BUY else self._asks
        level = side_book[price]
        del level.orders[order_id]
        if level.orders:
            level.total -= order.remaining
            level.note_deletions(1)
        else:
            del side_book[price]
        return [Cancelled(order_id, order.remaining, reason)]

    def _expire(self, command: ExpireOrder) -> list[Event]:
        return self._cancel(command.order_id, _EXPIRED)

    def _amend(self, command: AmendOrder) -> list[Event]:
        order_id = command.order_id
        order = self._index.get(order_id)
        parked = order is None
        if order is None:
            order = self._parked.get(order_id)
            if order is None:
                return [Rejected(order_id, _UNKNOWN)]
        quantity = command.quantity
        price = command.price
        if quantity is not None and not is_lots(quantity):
            return [Rejected(order_id, _BAD_QUANTITY)]
        if price is not None and not is_lots(price):
            return [Rejected(order_id, _BAD_PRICE)]
        if parked:
            return self._amend_stop(order, quantity, price, command.stop_price)
        if command.stop_price is not None:
            return [Rejected(order_id, _NOT_AMENDABLE)]
        new_quantity = order.remaining if quantity is None else quantity
        old_price = order.price
        assert old_price is not None
        new_price = old_price if price is None else price
        if new_price == old_price and new_quantity <= order.remaining:
            self._reduce(order, new_quantity)
            return [
                Amended(order_id, new_price, new_quantity, order.shown(), None, True)
            ]

        # Price change or more quantity: off the book and in again, as new.
        ext = order.ext
        if ext is not None and ext.post_only is not _NO_POST_ONLY and not self._auction:
            repriced = self._post_only_price(order.side, new_price, ext.post_only)
            if repriced is None:
                return [Rejected(order_id, _WOULD_TAKE)]
            new_price = repriced
        del self._index[order_id]
        self._unrest(order)
        order.price = new_price
        order.remaining = new_quantity
        if order.flags & ICEBERG:
            assert ext is not None and ext.display is not None
            order.visible = min(ext.display, new_quantity)
        events: list[Event] = [
            Amended(order_id, new_price, new_quantity, order.shown(), None, False)
        ]
        self._enter(order, events)
        return events

    def _amend_stop(
        self,
        order: _Order,
        quantity: int | None,
        price: int | None,
        stop_price: int | None,
    ) -> list[Event]:
        order_id = order.order_id
        ext = order.ext
        assert ext is not None
        if stop_price is not None:
            if ext.kind is _TRAILING:
                # Its level belongs to the reference it trails.
                return [Rejected(order_id, _NOT_AMENDABLE)]
            if not is_lots(stop_price):
                return [Rejected(order_id, _BAD_STOP)]
        new_quantity = order.remaining if quantity is None else quantity
        if new_quantity < ext.min_quantity:
            return [Rejected(order_id, _BAD_QUANTITY)]
        order.remaining = new_quantity
        if price is not None:
            order.price = price
        if stop_price is not None:
            self._park.set_stop(order, stop_price)
        return [Amended(order_id, order.price, new_quantity, 0, ext.stop_price, True)]

    def _restore(self, command: RestoreOrder) -> list[Event]:
        order_id = command.order_id
        if order_id in self._index or order_id in self._parked:
            return [Rejected(order_id, _DUPLICATE)]
        quantity = command.quantity
        if type(quantity) is not int or quantity <= 0:
            return [Rejected(order_id, _BAD_QUANTITY)]
        reason = check_restore(command)
        if reason is not None:
            return [Rejected(order_id, reason)]
        partner = None
        if command.oco_with is not None:
            if not command.owner or command.oco_with == order_id:
                return [Rejected(order_id, _BAD_OCO)]
            partner = self._oco_partner(
                command.oco_with, order_id, command.owner, restoring=True
            )
            # A partner not restored yet is fine: the link waits for it.
            if partner is None and self._live(command.oco_with) is not None:
                return [Rejected(order_id, _BAD_OCO)]
        side = command.side
        price = command.price
        parked = command.order_type in STOP_TYPES
        # Restoring never matches, so an order that would cross the book is
        # refused rather than leaving it crossed (allowed in auction).
        if not parked and not self._auction and price is not None:
            if side is _BUY:
                if self._asks and price >= self._asks.keys()[0]:
                    return [Rejected(order_id, _BAD_PRICE)]
            elif self._bids and price <= self._bids.keys()[-1]:
                return [Rejected(order_id, _BAD_PRICE)]

        order = _Order(
            order_id, side, price, quantity, command.owner, 0, command.time_in_force
        )
        plain = (
            not parked
            and command.display_quantity is None
            and command.post_only is _NO_POST_ONLY
            and command.stp is _NO_STP
            and command.oco_with is None
        )
        if not plain:
            order.ext = _Ext(
                command.order_type if parked else _LIMIT,
                display=command.display_quantity,
                post_only=command.post_only,
                stp=command.stp,
                min_quantity=command.min_quantity if parked else 0,
                stop_price=command.stop_price,
                trigger=command.trigger,
                trail_amount=command.trail_amount,
                trail_bps=command.trail_bps,
            )
            if partner is not None:
                _link(order, partner)
            elif command.oco_with is not None:
                # Its partner is not back yet: linked when it is restored.
                order.ext.oco_id = command.oco_with
                order.flags |= LINKED
        if parked:
            assert order.ext is not None and command.stop_price is not None
            order.seq = self._seq()
            self._park.add(order)
            return [Waiting(order_id, command.stop_price)]
        if command.display_quantity is not None:
            order.flags |= ICEBERG
            order.visible = (
                min(command.display_quantity, quantity)
                if command.visible is None
                else command.visible
            )
        self._place(order)
        assert price is not None
        return [Rested(order_id, side, price, quantity, order.shown())]

    def _set_auction(self, command: SetAuction) -> list[Event]:
        events: list[Event] = []
        if command.on:
            self._auction = True
        elif self._auction:
            # Leaving the auction on a crossed book uncrosses it first.
            if self._crossed():
                self._uncross(self._last, events)
            self._auction = False
        return events

    def _uncross_command(self, command: Uncross) -> list[Event]:
        reference = command.reference
        if reference is not None and not is_lots(reference):
            return [Rejected(0, _BAD_PRICE)]
        events: list[Event] = []
        self._uncross(reference, events)
        return events

    def _set_band(self, command: SetBand) -> list[Event]:
        low, high = command.low, command.high
        if (
            (low is not None and not is_lots(low))
            or (high is not None and not is_lots(high))
            or (low is not None and high is not None and low > high)
        ):
            return [Rejected(0, _BAD_PRICE)]
        self._band = (low, high)
        self._low = _NO_LOW if low is None else low
        self._high = _NO_HIGH if high is None else high
        return []

    def _set_last_price(self, command: SetLastPrice) -> list[Event]:
        price = command.price
        if price is not None and not is_lots(price):
            return [Rejected(0, _BAD_PRICE)]
        self._last = price
        return []

    # ------------------------------------------------------------------
    # Entering and leaving the book
    # ------------------------------------------------------------------

    def _enter(self, order: _Order, events: list[Event], min_quantity: int = 0) -> None:
        """Match an accepted (or fired, or re-entered) order, then rest or end it."""
        if self._auction:
            # Only limit orders get here in auction: they rest unmatched.
            self._rest(order, events)
            return
        ext = order.ext
        kind = _LIMIT if ext is None else ext.kind
        side = order.side
        quantity = order.remaining
        time_in_force = order.tif
        if time_in_force is _FOK or min_quantity:
            available = self._executable(side, order.price, max(quantity, min_quantity))
            if time_in_force is _FOK and available < quantity:
                self._end(order, quantity, _FOK_UNFILLABLE, events)
                return
            if available < min_quantity:
                self._end(order, quantity, _MIN_QUANTITY, events)
                return
        remaining = self._match_general(order, order.price, quantity, events)
        if order.flags & DEAD or not remaining:
            return
        if kind is _MARKET:
            self._end(order, remaining, _MARKET_REMAINDER, events)
        elif kind is _MTL:
            if remaining < quantity:
                # Rests as a limit at its first fill price (set by the match).
                self._rest(order, events)
            else:
                self._end(order, remaining, _MARKET_REMAINDER, events)
        elif time_in_force in _IMMEDIATE:
            self._end(order, remaining, _IOC_REMAINDER, events)
        else:
            self._rest(order, events)

    def _end(
        self, order: _Order, remaining: int, reason: CancelReason, events: list[Event]
    ) -> None:
        """An incoming order's remainder never rests: cancel it (and its link)."""
        order.remaining = remaining
        order.flags |= DEAD
        events.append(Cancelled(order.order_id, remaining, reason))
        if order.flags & LINKED:
            self._oco_fire(order, events)

    def _rest(self, order: _Order, events: list[Event]) -> None:
        ext = order.ext
        if ext is not None:
            ext.kind = _LIMIT
            ext.min_quantity = 0
            if order.flags & ICEBERG:
                assert ext.display is not None
                order.visible = min(ext.display, order.remaining)
        self._place(order)
        price = order.price
        assert price is not None
        events.append(
            Rested(order.order_id, order.side, price, order.remaining, order.shown())
        )

    def _place(self, order: _Order) -> None:
        """Put ``order`` at the back of its level with time priority now."""
        price = order.price
        assert price is not None
        book = self._bids if order.side is _BUY else self._asks
        level = book.get(price)
        if level is None:
            level = _Level()
            book[price] = level
        order.seq = self._seq()
        shown = order.shown()
        level.orders[order.order_id] = order
        level.total += shown
        level.hidden += order.remaining - shown
        self._index[order.order_id] = order

    def _rest_plain(
        self,
        order_id: int,
        side: Side,
        price: int,
        quantity: int,
        owner: int,
        time_in_force: TimeInForce,
    ) -> None:
        book = self._bids if side is _BUY else self._asks
        level = book.get(price)
        if level is None:
            level = _Level()
            book[price] = level
        order = _Order(
            order_id, side, price, quantity, owner, self._seq(), time_in_force
        )
        level.orders[order_id] = order
        level.total += quantity
        self._index[order_id] = order

    def _unrest(self, order: _Order) -> None:
        """Take a resting order (already out of the index) off its level."""
        price = order.price
        book = self._bids if order.side is _BUY else self._asks
        level = book[price]
        shown = order.shown()
        level.total -= shown
        level.hidden -= order.remaining - shown
        if level is self._active:
            # A matching pass is walking this level: it deletes it at its end.
            order.flags |= DEAD
            self._active_done.append(order)
            return
        del level.orders[order.order_id]
        if level.orders:
            level.note_deletions(1)
        else:
            del book[price]

    def _reduce(self, order: _Order, quantity: int) -> None:
        """Lower a resting order's remaining in place (it keeps its priority)."""
        level = (self._bids if order.side is _BUY else self._asks)[order.price]
        if order.flags & ICEBERG:
            visible = min(order.visible, quantity)
            level.total -= order.visible - visible
            level.hidden -= (order.remaining - order.visible) - (quantity - visible)
            order.visible = visible
        else:
            level.total -= order.remaining - quantity
        order.remaining = quantity

    def _kill(self, order: _Order, reason: CancelReason, events: list[Event]) -> None:
        """Cancel a live order wherever it is, then its OCO partner.

        Resting, parked, queued to fire or the taker being matched; an order
        that is no longer live is left alone.
        """
        order_id = order.order_id
        flags = order.flags
        if self._index.get(order_id) is order:
            del self._index[order_id]
            self._unrest(order)
        elif self._parked.get(order_id) is order:
            self._park.remove(order)
        elif flags & DEAD or not flags & (QUEUED | TAKING):
            return
        order.flags = (flags & ~QUEUED) | DEAD
        events.append(Cancelled(order_id, order.remaining, reason))
        if flags & LINKED:
            self._oco_fire(order, events)

    # ------------------------------------------------------------------
    # OCO links
    # ------------------------------------------------------------------

    def _live(self, order_id: int) -> _Order | None:
        return self._index.get(order_id) or self._parked.get(order_id)

    def _oco_partner(
        self, partner_id: int, order_id: int, owner: int, *, restoring: bool
    ) -> _Order | None:
        """The live, unlinked order of the same owner ``order_id`` may link to.

        A restored order may also link to one waiting for it (a pending link).
        """
        if not owner or partner_id == order_id:
            return None
        partner = self._live(partner_id)
        if partner is None or partner.owner != owner:
            return None
        ext = partner.ext
        if ext is not None and ext.oco_id is not None:
            if not restoring or ext.oco is not None or ext.oco_id != order_id:
                return None
        return partner

    def _oco_fire(self, order: _Order, events: list[Event]) -> None:
        """``order`` filled, fired or left: dissolve its link, cancel the partner.

        A pending link (the partner was never restored) is just dropped.
        """
        ext = order.ext
        assert ext is not None
        partner = ext.oco
        ext.oco = None
        ext.oco_id = None
        order.flags &= ~LINKED
        if partner is None:
            return
        partner_ext = partner.ext
        assert partner_ext is not None
        partner_ext.oco = None
        partner_ext.oco_id = None
        partner.flags &= ~LINKED
        self._kill(partner, _OCO, events)

    # ------------------------------------------------------------------
    # Matching
    # ------------------------------------------------------------------

    def _executable(self, side: Side, limit: int | None, needed: int) -> int:
        """How much could execute now, self-trades ignored (at least ``needed``
        tells it may stop counting).

        Walks the opposite side from the best price while prices are within
        ``limit`` and the band (matching would stop there, so a FOK never
        breaches the band); hidden iceberg quantity counts.
        """
        prices: Iterable[int]
        if side is _BUY:
            book = self._asks
            prices = book if limit is None else book.irange(maximum=limit)
        else:
            book = self._bids
            prices = (
                reversed(book)
                if limit is None
                else book.irange(minimum=limit, reverse=True)
            )
        low = self._low
        high = self._high
        found = 0
        for price in prices:
            if price < low or price > high:
                break
            level = book[price]
            found += level.total + level.hidden
            if found >= needed:
                break
        return found

    def _match(
        self,
        taker_id: int,
        taker_owner: int,
        side: Side,
        limit: int,
        quantity: int,
        events: list[Event],
    ) -> int:
        """Match a plain limit order; return the unfilled quantity.

        Hands over to :meth:`_match_general` at the first maker with flags.
        """
        buying = side is _BUY
        if buying:
            book = self._asks
            best = 0
        else:
            book = self._bids
            best = -1
        index = self._index
        next_trade_id = self._next_trade_id
        append = events.append
        low = self._low
        high = self._high

        while quantity and book:
            price, level = book.peekitem(best)
            if price > limit if buying else price < limit:
                break
            if price < low or price > high:
                self._breach(taker_id, price, events)
                break
            orders = level.orders
            done: list[int] = []
            traded = 0
            special = False
            for maker in orders.values():
                if maker.flags:
                    special = True
                    break
                maker_remaining = maker.remaining
                if maker_remaining <= quantity:
                    size = maker_remaining
                    maker_remaining = 0
                    done.append(maker.order_id)
                else:
                    size = quantity
                    maker_remaining -= size
                    maker.remaining = maker_remaining
                quantity -= size
                traded += size
                append(
                    Fill(
                        next_trade_id(),
                        maker.order_id,
                        taker_id,
                        maker.owner,
                        taker_owner,
                        side,
                        price,
                        size,
                        maker_remaining,
                        quantity,
                    )
                )
                if not quantity:
                    break
            if traded:
                self._last = price
            if len(done) == len(orders):
                del book[price]
            else:
                level.total -= traded
                for order_id in done:
                    del orders[order_id]
                if done:
                    level.note_deletions(len(done))
            for order_id in done:
                del index[order_id]
            if special:
                taker = _Order(taker_id, side, limit, quantity, taker_owner, 0, _GTC)
                return self._match_general(taker, limit, quantity, events)
        return quantity

    def _match_general(
        self, taker: _Order, limit: int | None, quantity: int, events: list[Event]
    ) -> int:
        """Match ``taker`` with every rule; return the unfilled quantity.

        Per maker, oldest first at the best price: self-trade prevention by the
        taker's ``stp``, then the band, then the fill (an iceberg from its
        visible part), then the OCO partners of the maker and of the taker,
        then an iceberg maker's refresh to the back of its level.  A
        market-to-limit order's first fill price is kept in ``taker.price``.
        The taker may end up cancelled (DEAD) by self-trade prevention or OCO.
        """
        side = taker.side
        buying = side is _BUY
        if buying:
            book = self._asks
            best = 0
        else:
            book = self._bids
            best = -1
        index = self._index
        next_trade_id = self._next_trade_id
        append = events.append
        taker_id = taker.order_id
        taker_owner = taker.owner
        ext = taker.ext
        stp = ext.stp if ext is not None and taker_owner else _NO_STP
        to_limit = ext is not None and ext.kind is _MTL
        low = self._low
        high = self._high
        taker.flags |= TAKING
        taker.remaining = quantity

        while quantity and book:
            price, level = book.peekitem(best)
            if limit is not None and (price > limit if buying else price < limit):
                break
            orders = level.orders
            done: list[_Order] = []
            moved: list[_Order] = []
            self._active = level
            self._active_done = done
            traded = halt = breach = False
            for maker in orders.values():
                flags = maker.flags
                if flags & DEAD:
                    continue
                if stp is not _NO_STP and maker.owner == taker_owner:
                    if stp is _CANCEL_NEWEST:
                        halt = True
                        break
                    self._kill(maker, _SELF_TRADE, events)
                    if stp is _CANCEL_BOTH:
                        halt = True
                        break
                    if taker.flags & DEAD:
                        break
                    continue
                if price < low or price > high:
                    breach = True
                    break
                if flags & ICEBERG:
                    size = maker.visible if maker.visible < quantity else quantity
                    maker.visible -= size
                else:
                    size = maker.remaining if maker.remaining < quantity else quantity
                maker.remaining -= size
                level.total -= size
                quantity -= size
                taker.remaining = quantity
                traded = True
                append(
                    Fill(
                        next_trade_id(),
                        maker.order_id,
                        taker_id,
                        maker.owner,
                        taker_owner,
                        side,
                        price,
                        size,
                        maker.remaining,
                        quantity,
                    )
                )
                if not maker.remaining:
                    maker.flags |= DEAD
                    del index[maker.order_id]
                    done.append(maker)
                if maker.flags & LINKED:
                    self._oco_fire(maker, events)
                if taker.flags & LINKED:
                    self._oco_fire(taker, events)
                if flags & ICEBERG and not maker.visible and not maker.flags & DEAD:
                    self._replenish(maker, level, events)
                    moved.append(maker)
                if not quantity or taker.flags & DEAD:
                    break
            self._active = None
            for maker in moved:
                if not maker.flags & DEAD:
                    # To the back of the level, behind everything in this pass.
                    del orders[maker.order_id]
                    orders[maker.order_id] = maker
            for maker in done:
                del orders[maker.order_id]
            if not orders:
                del book[price]
            elif done or moved:
                level.note_deletions(len(done) + len(moved))
            if traded:
                self._last = price
                if to_limit:
                    taker.price = price
                    to_limit = False
            if breach:
                self._breach(taker_id, price, events)
                break
            if halt and not taker.flags & DEAD:
                self._end(taker, quantity, _SELF_TRADE, events)
            if taker.flags & DEAD:
                break
        taker.flags &= ~TAKING
        return quantity

    def _replenish(self, order: _Order, level: _Level, events: list[Event]) -> None:
        """Refresh an iceberg's used-up visible part; it loses its priority."""
        ext = order.ext
        assert ext is not None and ext.display is not None and order.price is not None
        visible = min(ext.display, order.remaining)
        order.visible = visible
        level.total += visible
        level.hidden -= visible
        order.seq = self._seq()
        events.append(
            Replenished(
                order.order_id, order.side, order.price, order.remaining, visible
            )
        )

    def _breach(self, order_id: int, price: int, events: list[Event]) -> None:
        events.append(BandBreached(order_id, price))
        self._auction = True

    def _post_only_price(self, side: Side, price: int, mode: PostOnly) -> int | None:
        """The price a post-only order rests at, or None if it must be rejected."""
        if side is _BUY:
            if not self._asks:
                return price
            best = self._asks.keys()[0]
            if price < best:
                return price
            price = best - 1
        else:
            if not self._bids:
                return price
            best = self._bids.keys()[-1]
            if price > best:
                return price
            price = best + 1
        if mode is _REJECT or price <= 0:
            return None
        return price

    # ------------------------------------------------------------------
    # Stops
    # ------------------------------------------------------------------

    def _reference(self, trigger: TriggerRef) -> int | None:
        if trigger is _LAST:
            return self._last
        if trigger is _BID:
            return self._bids.keys()[-1] if self._bids else None
        return self._asks.keys()[0] if self._asks else None

    def _references(self) -> dict[TriggerRef, int | None]:
        return {
            _LAST: self._last,
            _BID: self._bids.keys()[-1] if self._bids else None,
            _ASK: self._asks.keys()[0] if self._asks else None,
        }

    def _check(self, events: list[Event]) -> None:
        """One trigger check: move trailing stops, then queue what fires.

        Trailing stops move even in auction; nothing fires there.
        """
        references = self._references()
        for order in self._park.trail(references):
            assert order.ext is not None and order.ext.stop_price is not None
            events.append(StopMoved(order.order_id, order.ext.stop_price))
        if self._auction:
            return
        for order, reference in self._park.collect(references):
            order.flags |= QUEUED
            self._queue.append((order, reference))

    def _run_stops(self, events: list[Event]) -> None:
        """Fire every triggered stop, in trigger order, until none fires.

        Stops one check finds join the fire queue oldest acceptance first; each
        fired order is processed in full, then the check runs again.  If the
        book goes into auction (a band breach) the stops still queued have not
        fired: they go back to the park.
        """
        self._park.new_command()
        queue = self._queue
        self._check(events)
        while queue and not self._auction:
            order, reference = queue.popleft()
            if order.flags & DEAD:
                continue
            order.flags &= ~QUEUED
            events.append(Triggered(order.order_id, reference))
            if order.flags & LINKED:
                self._oco_fire(order, events)
            self._fire(order, events)
            if self._parked:
                self._check(events)
        while queue:
            order, _ = queue.popleft()
            if not order.flags & DEAD:
                order.flags &= ~QUEUED
                self._park.add(order)

    def _fire(self, order: _Order, events: list[Event]) -> None:
        """Process a fired stop as a new order: a LIMIT or a MARKET."""
        ext = order.ext
        assert ext is not None
        ext.kind = _LIMIT if ext.kind is _STOP_LIMIT else _MARKET
        ext.stop_price = None
        ext.trigger = _LAST
        ext.trail_amount = ext.trail_bps = None
        self._enter(order, events, ext.min_quantity)

    # ------------------------------------------------------------------
    # Auction
    # ------------------------------------------------------------------

    def _crossed(self) -> bool:
        return bool(
            self._bids and self._asks and self._bids.keys()[-1] >= self._asks.keys()[0]
        )

    def _uncross(self, reference: int | None, events: list[Event]) -> None:
        """Execute the equilibrium until the book is no longer crossed.

        One round always suffices unless an OCO cancellation removed orders
        the equilibrium counted on.
        """
        while True:
            found = self.indicative(reference)
            if found is None:
                return
            self._execute_uncross(found.price, events)
            if not self._crossed():
                return

    def _execute_uncross(self, price: int, events: list[Event]) -> None:
        """Pair the front buy at or above ``price`` with the front sell at or
        below it, fill the smaller remaining (hidden quantity takes part) at
        ``price``, until one side has nothing left there.

        The maker of each fill is the older order.  After a fill come the OCO
        cancellations (maker's partner, then taker's), then the refresh of an
        iceberg whose visible part is used up (to the back of its level).
        """
        bids = self._bids
        asks = self._asks
        while bids and asks:
            bid_price, bid_level = bids.peekitem(-1)
            ask_price, ask_level = asks.peekitem(0)
            if bid_price < price or ask_price > price:
                return
            buy = next(iter(bid_level.orders.values()))
            sell = next(iter(ask_level.orders.values()))
            size = min(buy.remaining, sell.remaining)
            self._take(buy, bid_level, size)
            self._take(sell, ask_level, size)
            maker, taker = (buy, sell) if buy.seq < sell.seq else (sell, buy)
            events.append(
                Fill(
                    self._next_trade_id(),
                    maker.order_id,
                    taker.order_id,
                    maker.owner,
                    taker.owner,
                    None,
                    price,
                    size,
                    maker.remaining,
                    taker.remaining,
                )
            )
            self._last = price
            if maker.flags & LINKED:
                self._oco_fire(maker, events)
            if taker.flags & LINKED:
                self._oco_fire(taker, events)
            for order in (maker, taker):
                if order.flags & ICEBERG and not order.flags & DEAD:
                    if not order.visible:
                        level = (bids if order.side is _BUY else asks)[order.price]
                        del level.orders[order.order_id]
                        level.orders[order.order_id] = order
                        level.note_deletions(1)
                        self._replenish(order, level, events)

    def _take(self, order: _Order, level: _Level, size: int) -> None:
        """Fill ``size`` of a resting order in an uncross (visible part first)."""
        order.remaining -= size
        if order.flags & ICEBERG:
            shown = min(order.visible, size)
            order.visible -= shown
            level.total -= shown
            level.hidden -= size - shown
        else:
            level.total -= size
        if not order.remaining:
            order.flags |= DEAD
            del self._index[order.order_id]
            del level.orders[order.order_id]
            if level.orders:
                level.note_deletions(1)
            else:
                (self._bids if order.side is _BUY else self._asks).pop(order.price)

    # ------------------------------------------------------------------
    # Queries
    # ------------------------------------------------------------------

    @property
    def in_auction(self) -> bool:
        """Whether the book is in auction mode (orders rest without matching)."""
        return self._auction

    @property
    def last_price(self) -> int | None:
        """The last trade price (the LAST trigger reference), or None."""
        return self._last

    @property
    def band(self) -> tuple[int | None, int | None]:
        """The price band ``(low, high)`` bounding continuous fills."""
        return self._band

    def indicative(self, reference: int | None = None) -> Equilibrium | None:
        """The equilibrium an :class:`Uncross` would execute now, or None.

        Only the crossed part of the book can trade, so only it is handed to
        :func:`~exchange.engine.auction.equilibrium` (hidden quantity included).
        """
        if not self._crossed():
            return None
        bids = self._bids
        asks = self._asks
        best_bid = bids.keys()[-1]
        best_ask = asks.keys()[0]
        return equilibrium(
            [
                (price, bids[price].total + bids[price].hidden)
                for price in bids.irange(minimum=best_ask)
            ],
            [
                (price, asks[price].total + asks[price].hidden)
                for price in asks.irange(maximum=best_bid)
            ],
            reference,
        )

    def best_bid(self) -> tuple[int, int, int] | None:
        """(price, visible quantity, order count) of the best bid, or None."""
        if not self._bids:
            return None
        price, level = self._bids.peekitem(-1)
        return price, level.total, len(level.orders)

    def best_ask(self) -> tuple[int, int, int] | None:
        """(price, visible quantity, order count) of the best ask, or None."""
        if not self._asks:
            return None
        price, level = self._asks.peekitem(0)
        return price, level.total, len(level.orders)

    def level(self, side: Side, price: int) -> tuple[int, int]:
        """(visible quantity, order count) resting at ``price``; (0, 0) if none."""
        book = self._bids if side is _BUY else self._asks
        found = book.get(price)
        if found is None:
            return 0, 0
        return found.total, len(found.orders)

    def depth(
        self, levels: int | None = None
    ) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        """Bids and asks, each best first, as (price, visible quantity, count).

        ``levels`` caps how many price levels each side reports.
        """
        if levels is not None and levels < 0:
            raise ValueError("levels must be >= 0")
        bids = self._bids
        asks = self._asks
        bid_prices = itertools.islice(reversed(bids), levels)
        ask_prices = itertools.islice(asks, levels)
        return (
            [(p, bids[p].total, len(bids[p].orders)) for p in bid_prices],
            [(p, asks[p].total, len(asks[p].orders)) for p in ask_prices],
        )

    def orders(self) -> list[tuple[int, Side, int, int, int]]:
        """Every resting order as (order_id, side, price, remaining, owner).

        Bids best first, then asks best first; each level in time priority.
        ``remaining`` includes hidden iceberg quantity.  Parked stops are not
        listed: :meth:`snapshot` has everything, in the order to restore it.
        """
        result: list[tuple[int, Side, int, int, int]] = []
        for order in self._resting():
            assert order.price is not None
            result.append(
                (order.order_id, order.side, order.price, order.remaining, order.owner)
            )
        return result

    def _resting(self) -> Iterator[_Order]:
        sides = ((self._bids, reversed(self._bids)), (self._asks, iter(self._asks)))
        for book, prices in sides:
            for price in prices:
                yield from book[price].orders.values()

    def get(self, order_id: int) -> tuple[Side, int, int] | None:
        """(side, price, remaining) of a resting order, or None.

        None also for a parked stop (see :meth:`view`).
        """
        order = self._index.get(order_id)
        if order is None:
            return None
        assert order.price is not None
        return order.side, order.price, order.remaining

    def view(self, order_id: int) -> OrderView | None:
        """The :class:`OrderView` of a live order (resting or parked), or None."""
        order = self._index.get(order_id)
        if order is not None:
            return _view(order, parked=False)
        order = self._parked.get(order_id)
        return None if order is None else _view(order, parked=True)

    def snapshot(self) -> list[OrderView]:
        """Every live order, in the order to restore them.

        Resting orders in time priority across the whole book (the order they
        took their places), then parked stops in acceptance order.  Applying
        ``view.restore()`` for each, after :meth:`restore_commands`' settings,
        rebuilds an identical book.
        """
        resting = sorted(self._index.values(), key=_seq_of)
        return [_view(order, parked=False) for order in resting] + [
            _view(order, parked=True) for order in self._park.in_order()
        ]

    def restore_commands(self) -> list[Command]:
        """Commands that rebuild this book on an empty one, events aside.

        The band, the auction flag and the last price first, then one
        ``RestoreOrder`` per :meth:`snapshot` entry.
        """
        commands: list[Command] = []
        low, high = self._band
        if low is not None or high is not None:
            commands.append(SetBand(low, high))
        if self._auction:
            commands.append(SetAuction(True))
        if self._last is not None:
            commands.append(SetLastPrice(self._last))
        commands.extend(view.restore() for view in self.snapshot())
        return commands

    def __len__(self) -> int:
        """The number of live orders: resting and parked."""
        return len(self._index) + len(self._parked)

    def __contains__(self, order_id: object) -> bool:
        """Whether ``order_id`` is live: resting or parked."""
        return order_id in self._index or order_id in self._parked

    def __repr__(self) -> str:
        return (
            f"<OrderBook bid={self.best_bid()} ask={self.best_ask()}"
            f" orders={len(self)}{' auction' if self._auction else ''}>"
        )


def _seq_of(order: _Order) -> int:
    return order.seq


def _link(order: _Order, partner: _Order) -> None:
    """Link two live orders one-to-one (OCO)."""
    if partner.ext is None:
        partner.ext = _Ext(_LIMIT)
    assert order.ext is not None
    order.ext.oco = partner
    order.ext.oco_id = partner.order_id
    partner.ext.oco = order
    partner.ext.oco_id = order.order_id
    order.flags |= LINKED
    partner.flags |= LINKED


def _view(order: _Order, *, parked: bool) -> OrderView:
    ext = order.ext
    if ext is None:
        return OrderView(
            order.order_id,
            order.side,
            _LIMIT,
            order.tif,
            order.price,
            order.remaining,
            order.remaining,
            order.owner,
            False,
        )
    return OrderView(
        order.order_id,
        order.side,
        ext.kind,
        order.tif,
        order.price,
        order.remaining,
        None if parked else order.shown(),
        order.owner,
        parked,
        stop_price=ext.stop_price,
        trigger=ext.trigger,
        trail_amount=ext.trail_amount,
        trail_bps=ext.trail_bps,
        display_quantity=ext.display,
        post_only=ext.post_only,
        min_quantity=ext.min_quantity,
        stp=ext.stp,
        oco_with=ext.oco_id,
    )


_HANDLERS: dict[type, Callable[[OrderBook, object], list[Event]]] = {
    NewOrder: OrderBook._new_order,  # type: ignore[dict-item]
    CancelOrder: lambda book, command: book._cancel(command.order_id, _REQUESTED),  # type: ignore[attr-defined]
    ExpireOrder: OrderBook._expire,  # type: ignore[dict-item]
    AmendOrder: OrderBook._amend,  # type: ignore[dict-item]
    RestoreOrder: OrderBook._restore,  # type: ignore[dict-item]
    SetAuction: OrderBook._set_auction,  # type: ignore[dict-item]
    Uncross: OrderBook._uncross_command,  # type: ignore[dict-item]
    SetBand: OrderBook._set_band,  # type: ignore[dict-item]
    SetLastPrice: OrderBook._set_last_price,  # type: ignore[dict-item]
}
