"""Parked stop orders and their trigger check (private to the engine).

Every parked stop sits in one sorted list per (reference, side), keyed by
``(stop_price, seq)``: the stops a reference fires are a prefix (buy stops fire
when reference >= stop) or a suffix (sell stops fire when reference <= stop),
found by bisection, so a check costs O(log n) however many stops wait.
Trailing stops are also walked when their reference moves, to move their level
(and their place in the sorted list) in the client's favour.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from sortedcontainers import SortedList

from exchange.engine._model import _Ext, _Order
from exchange.engine.types import OrderType, Side, TriggerRef

__all__ = ["Park", "trail_level"]

_BUY = Side.BUY
_TRAILING = OrderType.TRAILING_STOP
_TRIGGERS = tuple(TriggerRef)
_BIG = 1 << 62


def trail_level(side: Side, ext: _Ext, reference: int) -> int:
    """The trigger level a trailing stop takes from ``reference``.

    The distance is ``trail_amount``, or ``reference * trail_bps / 10000``
    rounded down to whole ticks and at least 1 tick.  A sell stop trails below
    the reference, a buy stop above it.
    """
    if ext.trail_amount is not None:
        distance = ext.trail_amount
    else:
        assert ext.trail_bps is not None
        distance = max(1, reference * ext.trail_bps // 10000)
    return reference + distance if side is _BUY else reference - distance


class Park:
    """The stops waiting for their trigger, in acceptance (``seq``) order."""

    __slots__ = ("_lists", "_moved", "_seen", "_trailing", "orders")

    def __init__(self) -> None:
        #: Every parked stop by order id.
        self.orders: dict[int, _Order] = {}
        # (trigger, side) -> SortedList of (stop_price, seq, order_id)
        self._lists: dict[tuple[TriggerRef, Side], SortedList] = {
            (trigger, side): SortedList() for trigger in _TRIGGERS for side in Side
        }
        self._trailing: dict[int, _Order] = {}
        # The reference each trigger's trailing stops are up to date with
        # (None: walk them at the next check).
        self._seen: dict[TriggerRef, int | None] = dict.fromkeys(_TRIGGERS)
        # Trailing stops that moved during the current command: they move at
        # most once per command.
        self._moved: set[int] = set()

    def __bool__(self) -> bool:
        return bool(self.orders)

    def __len__(self) -> int:
        return len(self.orders)

    def in_order(self) -> Iterator[_Order]:
        """The parked stops, oldest acceptance first."""
        return iter(sorted(self.orders.values(), key=_by_seq))

    def add(self, order: _Order) -> None:
        """Park ``order`` (its ``ext.stop_price`` is its current level)."""
        ext = order.ext
        assert ext is not None and ext.stop_price is not None
        self.orders[order.order_id] = order
        self._lists[ext.trigger, order.side].add(
            (ext.stop_price, order.seq, order.order_id)
        )
        if ext.kind is _TRAILING:
            self._trailing[order.order_id] = order
            # Its level is arbitrary (new, restored, back from the queue).
            self._seen[ext.trigger] = None

    def remove(self, order: _Order) -> None:
        """Take ``order`` out of the park."""
        ext = order.ext
        assert ext is not None and ext.stop_price is not None
        del self.orders[order.order_id]
        self._lists[ext.trigger, order.side].remove(
            (ext.stop_price, order.seq, order.order_id)
        )
        if ext.kind is _TRAILING:
            del self._trailing[order.order_id]

    def set_stop(self, order: _Order, stop_price: int) -> None:
        """Move a parked stop's trigger level (an amend)."""
        self.remove(order)
        assert order.ext is not None
        order.ext.stop_price = stop_price
        self.add(order)

    def new_command(self) -> None:
        """A new command starts: every trailing stop may move once again."""
        self._moved.clear()

    def trail(self, references: Mapping[TriggerRef, int | None]) -> list[_Order]:
        """Move trailing stops in the client's favour; return those that moved.

        A sell stop rises to ``reference - distance``, a buy stop falls to
        ``reference + distance``, never the other way; a stop that already
        moved in this command stays.  Oldest acceptance first.
        """
        if not self._trailing:
            return []
        seen = self._seen
        walk = {
            trigger: reference
            for trigger, reference in references.items()
            if reference is not None and reference != seen[trigger]
        }
        if not walk:
            return []
        moved: list[_Order] = []
        frozen: set[TriggerRef] = set()
        for order_id, order in self._trailing.items():
            ext = order.ext
            assert ext is not None and ext.stop_price is not None
            reference = walk.get(ext.trigger)
            if reference is None:
                continue
            if order_id in self._moved:
                # Not brought up to ``reference``: walk again next time.
                frozen.add(ext.trigger)
                continue
            side = order.side
            level = trail_level(side, ext, reference)
            if level < ext.stop_price if side is _BUY else level > ext.stop_price:
                moved.append(order)
        for order in moved:
            ext = order.ext
            assert ext is not None and ext.stop_price is not None
            reference = walk[ext.trigger]
            entries = self._lists[ext.trigger, order.side]
            entries.remove((ext.stop_price, order.seq, order.order_id))
            ext.stop_price = trail_level(order.side, ext, reference)
            entries.add((ext.stop_price, order.seq, order.order_id))
            self._moved.add(order.order_id)
        for trigger, reference in walk.items():
            seen[trigger] = None if trigger in frozen else reference
        if len(moved) > 1:
            moved.sort(key=_by_seq)
        return moved

    def collect(
        self, references: Mapping[TriggerRef, int | None]
    ) -> list[tuple[_Order, int]]:
        """Take out every stop that fires at ``references``.

        Returns ``(order, reference price)`` pairs, oldest acceptance first.  A
        reference that is None fires nothing.
        """
        fired: list[tuple[_Order, int]] = []
        orders = self.orders
        for (trigger, side), entries in self._lists.items():
            reference = references[trigger]
            if reference is None or not entries:
                continue
            if side is _BUY:
                start, end = 0, entries.bisect_right((reference, _BIG))
            else:
                start, end = entries.bisect_left((reference, -1)), len(entries)
            if start == end:
                continue
            for _, _, order_id in entries[start:end]:
                order = orders.pop(order_id)
                self._trailing.pop(order_id, None)
                fired.append((order, reference))
            del entries[start:end]
        if len(fired) > 1:
            fired.sort(key=_pair_seq)
        return fired


def _by_seq(order: _Order) -> int:
    return order.seq


def _pair_seq(pair: tuple[_Order, int]) -> int:
    return pair[0].seq
