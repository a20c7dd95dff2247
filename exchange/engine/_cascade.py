"""Stop triggers (the fire cascade) and the auction uncross (private).

Both run on top of :class:`~exchange.engine._core.BookCore`: a fired stop and
an uncross fill go through the same placing, OCO and iceberg machinery as
continuous matching.
"""

from __future__ import annotations

import itertools

from exchange.engine._core import BookCore
from exchange.engine._model import (
    DEAD,
    ICEBERG,
    LINKED,
    QUEUED,
    _Level,
    _Order,
)
from exchange.engine.auction import Equilibrium, equilibrium
from exchange.engine.types import (
    Event,
    Fill,
    OrderType,
    Side,
    StopMoved,
    TimeInForce,
    Triggered,
    TriggerRef,
)

__all__ = ["CascadeBook"]

_BUY = Side.BUY
_LIMIT = OrderType.LIMIT
_MARKET = OrderType.MARKET
_STOP_LIMIT = OrderType.STOP_LIMIT
_IOC = TimeInForce.IOC
_FOK = TimeInForce.FOK
_LAST = TriggerRef.LAST
_BID = TriggerRef.BID
_ASK = TriggerRef.ASK


# Prices are ticks > 0: these bounds stand for "no band".


class CascadeBook(BookCore):
    """Stop triggers (the fire cascade) and the auction uncross."""

    __slots__ = ()

    def _references(self) -> dict[TriggerRef, int | None]:
        return {
            _LAST: self._last,
            _BID: self._bid_lists[-1][-1] if self._bids else None,
            _ASK: self._ask_lists[0][0] if self._asks else None,
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
        # Time priority across the book is the order of the index.
        rank = {order_id: i for i, order_id in enumerate(self._index)}
        later = itertools.count(len(rank))
        while bids and asks:
            bid_price = self._bid_lists[-1][-1]
            ask_price = self._ask_lists[0][0]
            if bid_price < price or ask_price > price:
                return
            bid_level = bids[bid_price]
            ask_level = asks[ask_price]
            buy = next(iter(bid_level.orders.values()))
            sell = next(iter(ask_level.orders.values()))
            size = min(buy.remaining, sell.remaining)
            self._take(buy, bid_level, size)
            self._take(sell, ask_level, size)
            if rank[buy.order_id] < rank[sell.order_id]:
                maker, taker = buy, sell
            else:
                maker, taker = sell, buy
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
                        rank[order.order_id] = next(later)

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

    def indicative(self, reference: int | None = None) -> Equilibrium | None:
        """The equilibrium an :class:`Uncross` would execute now, or None.

        Only the crossed part of the book can trade, so only it is handed to
        :func:`~exchange.engine.auction.equilibrium` (hidden quantity included).
        """
        if not self._crossed():
            return None
        bids = self._bids
        asks = self._asks
        best_bid = self._bid_lists[-1][-1]
        best_ask = self._ask_lists[0][0]
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
