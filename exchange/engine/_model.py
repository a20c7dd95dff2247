"""The engine's internal, mutable order and level records (private).

A plain limit order (no special instruction) is one small :class:`_Order` with
``ext`` None and ``flags`` 0: that is all the hot path ever builds or reads.
Everything special lives in an :class:`_Ext` hung off the order, and the few
properties the matching loop must notice on a *maker* (iceberg, OCO link) are
bits of ``flags``, so the loop tests one integer per maker.
"""

from __future__ import annotations

from exchange.engine.types import (
    OrderType,
    PostOnly,
    SelfTrade,
    Side,
    TimeInForce,
    TriggerRef,
)

#: Shows only ``visible`` of its ``remaining``; refreshes from hidden quantity.
ICEBERG = 1
#: Linked one-to-one with another live order (``ext.oco``).
LINKED = 2
#: No longer live (filled, cancelled); may still sit in a level being matched.
DEAD = 4
#: The incoming order of the matching pass under way.
TAKING = 8
#: Fired by a stop check, waiting in the fire queue for its turn.
QUEUED = 16

#: Flags the matching loop has to look at on a maker.
MAKER_SPECIAL = ICEBERG | LINKED | DEAD


class _Ext:
    """The special instructions of an order (absent on plain limit orders)."""

    __slots__ = (
        "display",
        "kind",
        "min_quantity",
        "oco",
        "post_only",
        "stop_price",
        "stp",
        "trail_amount",
        "trail_bps",
        "trigger",
    )

    def __init__(
        self,
        kind: OrderType,
        *,
        display: int | None = None,
        post_only: PostOnly = PostOnly.NONE,
        stp: SelfTrade = SelfTrade.NONE,
        min_quantity: int = 0,
        stop_price: int | None = None,
        trigger: TriggerRef = TriggerRef.LAST,
        trail_amount: int | None = None,
        trail_bps: int | None = None,
    ) -> None:
        #: The order type now: the original one while parked or matching; LIMIT
        #: once it rests (a MARKET_TO_LIMIT or fired STOP_LIMIT remainder).
        self.kind = kind
        self.display = display
        self.post_only = post_only
        self.stp = stp
        self.min_quantity = min_quantity
        self.stop_price = stop_price
        self.trigger = trigger
        self.trail_amount = trail_amount
        self.trail_bps = trail_bps
        #: The linked partner (both sides point at each other), or None.
        self.oco: _Order | None = None


class _Order:
    """A live order: resting, parked, queued to fire, or the taker being matched.

    ``price`` is the limit (resting, LIMIT and STOP_LIMIT) or the protection
    limit (MARKET, MARKET_TO_LIMIT, STOP, TRAILING_STOP; may be None).
    ``remaining`` includes an iceberg's hidden quantity; ``visible`` is set only
    on icebergs.  ``seq`` ranks parked stops by acceptance (set on parking); a
    resting order's time priority is its place in the book's index, which keeps
    insertion order.
    """

    __slots__ = (
        "ext",
        "flags",
        "order_id",
        "owner",
        "price",
        "remaining",
        "seq",
        "side",
        "tif",
        "visible",
    )

    def __init__(
        self,
        order_id: int,
        side: Side,
        price: int | None,
        remaining: int,
        owner: int,
        tif: TimeInForce,
    ) -> None:
        self.order_id = order_id
        self.side = side
        self.price = price
        self.remaining = remaining
        self.owner = owner
        self.tif = tif
        self.flags = 0
        self.ext: _Ext | None = None
        self.visible: int  # icebergs only
        self.seq: int  # parked stops only

    def shown(self) -> int:
        """What the book shows of this resting order."""
        return self.visible if self.flags & ICEBERG else self.remaining


# A level whose dict has had at least this many deletions, and more deletions
# than live orders, is rebuilt.  CPython dicts leave a hole for every deleted
# entry and iteration walks over the holes, so a deep level drained from the
# front would otherwise make "find the oldest order" slower and slower.
COMPACT_MIN_HOLES = 32


class _Level:
    """The orders resting at one price in time priority, with their totals.

    ``total`` is the visible quantity (what depth shows); ``hidden`` the
    icebergs' hidden quantity on top of it.
    """

    __slots__ = ("hidden", "holes", "orders", "total")

    def __init__(self) -> None:
        self.orders: dict[int, _Order] = {}
        self.total = 0
        self.hidden = 0
        self.holes = 0

    def note_deletions(self, count: int) -> None:
        holes = self.holes + count
        if holes >= COMPACT_MIN_HOLES and holes > len(self.orders):
            # Re-inserting into a fresh dict drops the holes, keeping order.
            self.orders = {oid: order for oid, order in self.orders.items()}
            holes = 0
        self.holes = holes
