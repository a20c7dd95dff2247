"""A price-time priority order book and matcher for one instrument.

Pure Python and deterministic: the same sequence of commands always yields
the same sequence of events.  No I/O, no clocks, no randomness.  The contract
is ``docs/engine.md``.  :class:`OrderBook` takes the commands and answers the
queries; the matching lives in ``_core.py`` (state, placing, matching, OCO),
``_cascade.py`` (stop triggers, auction uncross) and ``_park.py`` (parked
stops), validation in ``_checks.py``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

from exchange.engine._cascade import CascadeBook
from exchange.engine._checks import STOP_TYPES, check_new, check_restore, is_lots
from exchange.engine._core import _link
from exchange.engine._model import (
    ICEBERG,
    _Ext,
    _Order,
)
from exchange.engine._park import trail_level
from exchange.engine.types import (
    Accepted,
    Amended,
    AmendOrder,
    Cancelled,
    CancelOrder,
    CancelReason,
    Command,
    Event,
    ExpireOrder,
    NewOrder,
    OrderType,
    OrderView,
    PostOnly,
    Rejected,
    RejectReason,
    Rested,
    RestoreOrder,
    SelfTrade,
    SetAuction,
    SetBand,
    SetLastPrice,
    Side,
    TimeInForce,
    TriggerRef,
    Uncross,
    Waiting,
)

__all__ = ["OrderBook"]

_BUY = Side.BUY
_LIMIT = OrderType.LIMIT
_MARKET = OrderType.MARKET
_MTL = OrderType.MARKET_TO_LIMIT
_TRAILING = OrderType.TRAILING_STOP
_IOC = TimeInForce.IOC
_FOK = TimeInForce.FOK
_LAST = TriggerRef.LAST
_NO_POST_ONLY = PostOnly.NONE
_REPRICE = PostOnly.REPRICE
_NO_STP = SelfTrade.NONE

_REQUESTED = CancelReason.REQUESTED
_EXPIRED = CancelReason.EXPIRED
_IOC_REMAINDER = CancelReason.IOC_REMAINDER
_FOK_UNFILLABLE = CancelReason.FOK_UNFILLABLE

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


class OrderBook(CascadeBook):
    """One instrument's order book.  Feed it commands with :meth:`apply`.

    Every command yields its events in order (``docs/engine.md``); an invalid
    command yields a single ``Rejected`` and changes nothing.  Trade ids come
    from ``next_trade_id`` and are drawn only when a fill happens.
    """

    __slots__ = ()

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
        # Most limit orders do not cross: spare them the matching loop.
        if side is _BUY:
            book = self._asks
            crosses = book and self._ask_lists[0][0] <= price
        else:
            book = self._bids
            crosses = book and self._bid_lists[-1][-1] >= price
        if crosses:
            remaining = self._match(
                order_id, command.owner, side, price, quantity, events
            )
        else:
            remaining = quantity
        if remaining:
            if time_in_force is _IOC or time_in_force is _FOK:
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
            partner = self._oco_partner(command.oco_with, order_id, command.owner)
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
            order_id, side, price, command.quantity, command.owner, time_in_force
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
        order = self._index.pop(order_id, None)
        if order is None or order.flags:
            events: list[Event] = []
            if order is not None:
                # An iceberg or a linked order (already out of the index).
                self._unrest(order)
                self._cancelled(order, reason, events)
                return events
            order = self._parked.get(order_id)
            if order is None:
                return [Rejected(order_id, _UNKNOWN)]
            self._kill(order, reason, events)
            return events
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
            partner = self._oco_partner(command.oco_with, order_id, command.owner)
            # A partner not restored yet is fine: restoring it naming this
            # order back links the two.
            if partner is None and self._live(command.oco_with) is not None:
                return [Rejected(order_id, _BAD_OCO)]
        side = command.side
        price = command.price
        parked = command.order_type in STOP_TYPES
        # Restoring never matches, so an order that would cross the book is
        # refused rather than leaving it crossed (allowed in auction).
        if not parked and not self._auction and price is not None:
            if side is _BUY:
                if self._asks and price >= self._ask_lists[0][0]:
                    return [Rejected(order_id, _BAD_PRICE)]
            elif self._bids and price <= self._bid_lists[-1][-1]:
                return [Rejected(order_id, _BAD_PRICE)]

        order = _Order(
            order_id, side, price, quantity, command.owner, command.time_in_force
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

    def best_bid(self) -> tuple[int, int, int] | None:
        """(price, visible quantity, order count) of the best bid, or None."""
        if not self._bids:
            return None
        price = self._bid_lists[-1][-1]
        level = self._bids[price]
        return price, level.total, len(level.orders)

    def best_ask(self) -> tuple[int, int, int] | None:
        """(price, visible quantity, order count) of the best ask, or None."""
        if not self._asks:
            return None
        price = self._ask_lists[0][0]
        level = self._asks[price]
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
        return [_view(order, parked=False) for order in self._index.values()] + [
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
        oco_with=None if ext.oco is None else ext.oco.order_id,
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
