"""The order book's state and its matching (private; see ``book.py``).

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
from collections.abc import Callable, Iterable

from sortedcontainers import SortedDict, SortedList

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
from exchange.engine._park import Park
from exchange.engine.types import (
    BandBreached,
    Cancelled,
    CancelReason,
    Event,
    Fill,
    OrderType,
    PostOnly,
    Replenished,
    Rested,
    SelfTrade,
    Side,
    TimeInForce,
    TriggerRef,
)

__all__ = ["BookCore"]

_BUY = Side.BUY
_LIMIT = OrderType.LIMIT
_MARKET = OrderType.MARKET
_MTL = OrderType.MARKET_TO_LIMIT
_GTC = TimeInForce.GTC
_IOC = TimeInForce.IOC
_FOK = TimeInForce.FOK
_LAST = TriggerRef.LAST
_BID = TriggerRef.BID
_REJECT = PostOnly.REJECT
_NO_STP = SelfTrade.NONE
_CANCEL_NEWEST = SelfTrade.CANCEL_NEWEST
_CANCEL_BOTH = SelfTrade.CANCEL_BOTH

_IOC_REMAINDER = CancelReason.IOC_REMAINDER
_FOK_UNFILLABLE = CancelReason.FOK_UNFILLABLE
_MARKET_REMAINDER = CancelReason.MARKET_REMAINDER
_MIN_QUANTITY = CancelReason.MIN_QUANTITY
_SELF_TRADE = CancelReason.SELF_TRADE
_OCO = CancelReason.OCO


_IMMEDIATE = frozenset((_IOC, _FOK))
# Prices are ticks > 0: these bounds stand for "no band".
_NO_LOW = 0
_NO_HIGH = 1 << 62


def _key_lists(book: SortedDict) -> list[list[int]]:
    """The sublists in which ``book`` keeps its keys, sorted.

    An implementation detail of sortedcontainers 2.4 (pinned): a SortedDict
    keeps its keys in a SortedList (``_list``), which keeps them in a list of
    sorted sublists (``_lists``) that it only ever changes in place.  So the
    lowest key is ``lists[0][0]`` and the highest ``lists[-1][-1]`` (while the
    dict is not empty), with no Python call; ``peekitem()`` costs two.  The
    engine's tests compare these with the public API after every command.
    """
    keys = book._list
    lists = keys._lists
    if not isinstance(keys, SortedList) or type(lists) is not list:
        raise RuntimeError("unsupported sortedcontainers version")
    return lists


class BookCore:
    """The book's state and its matching: placing, removing, matching orders.

    :class:`~exchange.engine.book.OrderBook` is the public face; this base holds
    what every command shares.
    """

    __slots__ = (
        "_active",
        "_active_done",
        "_ask_lists",
        "_asks",
        "_auction",
        "_band",
        "_bid_lists",
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
        # The best prices are read straight from the sorted keys' sublists
        # (see _key_lists): the hot path's cheapest way to them.
        self._bid_lists = _key_lists(self._bids)
        self._ask_lists = _key_lists(self._asks)
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
        if kind is _MTL:
            self._mtl_limit(order)
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

    def _mtl_limit(self, order: _Order) -> None:
        """A market-to-limit order takes only the best opposite price: that price
        (if within its protection) becomes its limit, so it is also the price its
        remainder rests at."""
        buying = order.side is _BUY
        opposite = self._asks if buying else self._bids
        if not opposite:
            return
        best = opposite.keys()[0] if buying else opposite.keys()[-1]
        protection = order.price
        if protection is None or (best <= protection if buying else best >= protection):
            order.price = best

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
        order = _Order(order_id, side, price, quantity, owner, time_in_force)
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
        self._cancelled(order, reason, events)

    def _cancelled(
        self, order: _Order, reason: CancelReason, events: list[Event]
    ) -> None:
        """``order`` is out of the book/park: mark it, report it, end its link."""
        flags = order.flags
        order.flags = (flags & ~QUEUED) | DEAD
        events.append(Cancelled(order.order_id, order.remaining, reason))
        if flags & LINKED:
            self._oco_fire(order, events)

    def _live(self, order_id: int) -> _Order | None:
        return self._index.get(order_id) or self._parked.get(order_id)

    def _oco_partner(self, partner_id: int, order_id: int, owner: int) -> _Order | None:
        """The live, unlinked order of the same owner ``order_id`` may link to."""
        if not owner or partner_id == order_id:
            return None
        partner = self._live(partner_id)
        if partner is None or partner.owner != owner:
            return None
        ext = partner.ext
        if ext is not None and ext.oco is not None:
            return None
        return partner

    def _oco_fire(self, order: _Order, events: list[Event]) -> None:
        """``order`` filled, fired or left: dissolve its link, cancel the partner."""
        ext = order.ext
        assert ext is not None and ext.oco is not None
        partner = ext.oco
        ext.oco = None
        order.flags &= ~LINKED
        partner_ext = partner.ext
        assert partner_ext is not None
        partner_ext.oco = None
        partner.flags &= ~LINKED
        self._kill(partner, _OCO, events)

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
            prices = self._ask_lists
            best = 0
        else:
            book = self._bids
            prices = self._bid_lists
            best = -1
        index = self._index
        next_trade_id = self._next_trade_id
        append = events.append
        low = self._low
        high = self._high

        while quantity and book:
            price = prices[best][best]
            level = book[price]
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
                taker = _Order(taker_id, side, limit, quantity, taker_owner, _GTC)
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
            prices = self._ask_lists
            best = 0
        else:
            book = self._bids
            prices = self._bid_lists
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
            price = prices[best][best]
            level = book[price]
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
        # The index keeps time priority across the book: to its end.
        index = self._index
        del index[order.order_id]
        index[order.order_id] = order
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
            best = self._ask_lists[0][0]
            if price < best:
                return price
            price = best - 1
        else:
            if not self._bids:
                return price
            best = self._bid_lists[-1][-1]
            if price > best:
                return price
            price = best + 1
        if mode is _REJECT or price <= 0:
            return None
        return price

    def _reference(self, trigger: TriggerRef) -> int | None:
        if trigger is _LAST:
            return self._last
        if trigger is _BID:
            return self._bid_lists[-1][-1] if self._bids else None
        return self._ask_lists[0][0] if self._asks else None

    def _crossed(self) -> bool:
        return bool(
            self._bids
            and self._asks
            and self._bid_lists[-1][-1] >= self._ask_lists[0][0]
        )


def _link(order: _Order, partner: _Order) -> None:
    """Link two live orders one-to-one (OCO)."""
    if partner.ext is None:
        partner.ext = _Ext(_LIMIT)
    assert order.ext is not None
    order.ext.oco = partner
    partner.ext.oco = order
    order.flags |= LINKED
    partner.flags |= LINKED
