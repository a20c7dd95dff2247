"""A price-time priority limit order book and matcher.

Pure Python and deterministic: the same sequence of commands always yields
the same sequence of events.  No I/O, no clocks, no randomness.

Layout
------
Each side is a :class:`sortedcontainers.SortedDict` mapping a price (ticks)
to a :class:`_Level`.  A level keeps its orders in a plain ``dict`` keyed by
order id: dicts preserve insertion order, so iterating a level visits orders
in time priority, and cancelling any order is a single O(1) ``del``.  The
level also keeps a running total of its remaining quantity.  The best bid is
the last key of the bid side, the best ask the first key of the ask side.

An index maps every resting order id to its :class:`_Order`, which carries
the side and price needed to find its level.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

from sortedcontainers import SortedDict

from exchange.engine.types import (
    Accepted,
    Cancelled,
    CancelOrder,
    CancelReason,
    Command,
    Event,
    Fill,
    NewOrder,
    OrderType,
    Rejected,
    RejectReason,
    Rested,
    RestoreOrder,
    Side,
    TimeInForce,
)

__all__ = ["OrderBook"]

_BUY = Side.BUY
_MARKET = OrderType.MARKET
_GTC = TimeInForce.GTC
_FOK = TimeInForce.FOK

_REQUESTED = CancelReason.REQUESTED
_IOC_REMAINDER = CancelReason.IOC_REMAINDER
_FOK_UNFILLABLE = CancelReason.FOK_UNFILLABLE
_MARKET_REMAINDER = CancelReason.MARKET_REMAINDER

_DUPLICATE = RejectReason.DUPLICATE_ORDER_ID
_UNKNOWN = RejectReason.UNKNOWN_ORDER
_BAD_QUANTITY = RejectReason.INVALID_QUANTITY
_BAD_PRICE = RejectReason.INVALID_PRICE

# A level whose dict has had at least this many deletions, and more deletions
# than live orders, is rebuilt.  CPython dicts leave a hole for every deleted
# entry and iteration walks over the holes, so a deep level drained from the
# front would otherwise make "find the oldest order" slower and slower.
_COMPACT_MIN_HOLES = 32


class _Order:
    """A resting order.  Mutable: ``remaining`` shrinks as it is filled."""

    __slots__ = ("order_id", "owner", "price", "remaining", "side")

    def __init__(
        self, order_id: int, side: Side, price: int, remaining: int, owner: int
    ) -> None:
        self.order_id = order_id
        self.side = side
        self.price = price
        self.remaining = remaining
        self.owner = owner


class _Level:
    """The orders resting at one price, oldest first, with their total."""

    __slots__ = ("holes", "orders", "total")

    def __init__(self) -> None:
        self.orders: dict[int, _Order] = {}
        self.total = 0
        self.holes = 0

    def note_deletions(self, count: int) -> None:
        holes = self.holes + count
        if holes >= _COMPACT_MIN_HOLES and holes > len(self.orders):
            # Re-inserting into a fresh dict drops the holes, keeping order.
            self.orders = {oid: order for oid, order in self.orders.items()}
            holes = 0
        self.holes = holes


class OrderBook:
    """One instrument's order book.  Feed it commands with :meth:`apply`.

    A valid NewOrder yields ``Accepted``, then its ``Fill`` events in execution
    order (each at the maker's price), then one ``Rested`` (GTC limit) or
    ``Cancelled`` (IOC/market remainder, unfillable FOK) if anything is left.
    A FOK order, limit or market, is checked for full fillability before any
    fill.  Market orders never rest; their ``price`` is a protection limit.
    An invalid command yields a single ``Rejected`` and changes nothing.
    ``RestoreOrder`` rests without matching and yields ``Rested``; one that
    would cross the book is rejected (INVALID_PRICE).  Trade ids come from
    ``next_trade_id`` and are drawn only when a fill happens.
    """

    __slots__ = ("_asks", "_bids", "_index", "_next_trade_id")

    def __init__(self, *, next_trade_id: Callable[[], int] | None = None) -> None:
        # price -> level; best bid is the last key, best ask the first key.
        self._bids: SortedDict[int, _Level] = SortedDict()
        self._asks: SortedDict[int, _Level] = SortedDict()
        self._index: dict[int, _Order] = {}
        self._next_trade_id: Callable[[], int] = (
            itertools.count(1).__next__ if next_trade_id is None else next_trade_id
        )

    # ------------------------------------------------------------------
    # Commands
    # ------------------------------------------------------------------

    def apply(self, command: Command) -> list[Event]:
        """Apply one command and return the events it produced, in order."""
        if type(command) is NewOrder:
            return self._new_order(command)
        if type(command) is CancelOrder:
            return self._cancel(command.order_id)
        if type(command) is RestoreOrder:
            return self._restore(command)
        # Subclasses of the command classes take the slow road.
        if isinstance(command, NewOrder):
            return self._new_order(command)
        if isinstance(command, CancelOrder):
            return self._cancel(command.order_id)
        if isinstance(command, RestoreOrder):
            return self._restore(command)
        raise TypeError(f"not an engine command: {command!r}")

    def _new_order(self, command: NewOrder) -> list[Event]:
        order_id = command.order_id
        if order_id in self._index:
            return [Rejected(order_id, _DUPLICATE)]
        quantity = command.quantity
        # Exact type checks: bools and floats are not lots or ticks.
        if type(quantity) is not int or quantity <= 0:
            return [Rejected(order_id, _BAD_QUANTITY)]
        price = command.price
        order_type = command.order_type
        if price is None:
            if order_type is not _MARKET:
                return [Rejected(order_id, _BAD_PRICE)]
        elif type(price) is not int or price <= 0:
            return [Rejected(order_id, _BAD_PRICE)]

        side = command.side
        time_in_force = command.time_in_force
        events: list[Event] = [Accepted(order_id)]
        if time_in_force is _FOK and not self._can_fill(side, price, quantity):
            events.append(Cancelled(order_id, quantity, _FOK_UNFILLABLE))
            return events

        remaining = self._match(order_id, command.owner, side, price, quantity, events)
        if remaining:
            if order_type is _MARKET:
                events.append(Cancelled(order_id, remaining, _MARKET_REMAINDER))
            elif time_in_force is _GTC and price is not None:
                # (A limit order always has a price: validated above.)
                self._rest(order_id, side, price, remaining, command.owner)
                events.append(Rested(order_id, side, price, remaining))
            else:
                # IOC (a FOK that passed the check is always filled in full).
                events.append(Cancelled(order_id, remaining, _IOC_REMAINDER))
        return events

    def _cancel(self, order_id: int) -> list[Event]:
        order = self._index.pop(order_id, None)
        if order is None:
            return [Rejected(order_id, _UNKNOWN)]
        price = order.price
        side_book = self._bids if order.side is _BUY else self._asks
        level = side_book[price]
        del level.orders[order_id]
        if level.orders:
            level.total -= order.remaining
            level.note_deletions(1)
        else:
            del side_book[price]
        return [Cancelled(order_id, order.remaining, _REQUESTED)]

    def _restore(self, command: RestoreOrder) -> list[Event]:
        order_id = command.order_id
        if order_id in self._index:
            return [Rejected(order_id, _DUPLICATE)]
        quantity = command.quantity
        if type(quantity) is not int or quantity <= 0:
            return [Rejected(order_id, _BAD_QUANTITY)]
        price = command.price
        if type(price) is not int or price <= 0:
            return [Rejected(order_id, _BAD_PRICE)]
        side = command.side
        # Restoring never matches, so an order that would cross the book is
        # refused rather than leaving the book crossed.
        if side is _BUY:
            if self._asks and price >= self._asks.keys()[0]:
                return [Rejected(order_id, _BAD_PRICE)]
        elif self._bids and price <= self._bids.keys()[-1]:
            return [Rejected(order_id, _BAD_PRICE)]
        self._rest(order_id, side, price, quantity, command.owner)
        return [Rested(order_id, side, price, quantity)]

    # ------------------------------------------------------------------
    # Matching
    # ------------------------------------------------------------------

    def _can_fill(self, side: Side, limit: int | None, quantity: int) -> bool:
        """Whether ``quantity`` can be filled in full at acceptable prices."""
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
        for price in prices:
            quantity -= book[price].total
            if quantity <= 0:
                return True
        return False

    def _match(
        self,
        taker_id: int,
        taker_owner: int,
        side: Side,
        limit: int | None,
        quantity: int,
        events: list[Event],
    ) -> int:
        """Match against the opposite side; return the unfilled quantity."""
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

        while quantity and book:
            price, level = book.peekitem(best)
            if limit is not None and (price > limit if buying else price < limit):
                break
            orders = level.orders
            done: list[int] = []
            traded = 0
            for maker in orders.values():
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
        return quantity

    def _rest(
        self, order_id: int, side: Side, price: int, quantity: int, owner: int
    ) -> None:
        book = self._bids if side is _BUY else self._asks
        level = book.get(price)
        if level is None:
            level = _Level()
            book[price] = level
        order = _Order(order_id, side, price, quantity, owner)
        level.orders[order_id] = order
        level.total += quantity
        self._index[order_id] = order

    # ------------------------------------------------------------------
    # Queries
    # ------------------------------------------------------------------

    def best_bid(self) -> tuple[int, int, int] | None:
        """(price, total quantity, order count) of the best bid, or None."""
        if not self._bids:
            return None
        price, level = self._bids.peekitem(-1)
        return price, level.total, len(level.orders)

    def best_ask(self) -> tuple[int, int, int] | None:
        """(price, total quantity, order count) of the best ask, or None."""
        if not self._asks:
            return None
        price, level = self._asks.peekitem(0)
        return price, level.total, len(level.orders)

    def level(self, side: Side, price: int) -> tuple[int, int]:
        """(total quantity, order count) resting at ``price``; (0, 0) if none."""
        book = self._bids if side is _BUY else self._asks
        found = book.get(price)
        if found is None:
            return 0, 0
        return found.total, len(found.orders)

    def depth(
        self, levels: int | None = None
    ) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        """Bids and asks, each best first, as (price, quantity, count).

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

        Bids best first, then asks best first; each level in time priority,
        which is exactly the order to restore them in.
        """
        result: list[tuple[int, Side, int, int, int]] = []
        sides = ((self._bids, reversed(self._bids)), (self._asks, iter(self._asks)))
        for book, prices in sides:
            for price in prices:
                result.extend(
                    (o.order_id, o.side, o.price, o.remaining, o.owner)
                    for o in book[price].orders.values()
                )
        return result

    def get(self, order_id: int) -> tuple[Side, int, int] | None:
        """(side, price, remaining) of a resting order, or None."""
        order = self._index.get(order_id)
        if order is None:
            return None
        return order.side, order.price, order.remaining

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._index

    def __repr__(self) -> str:
        return (
            f"<OrderBook bid={self.best_bid()} ask={self.best_ask()}"
            f" orders={len(self)}>"
        )
