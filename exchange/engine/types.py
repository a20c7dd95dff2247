"""Commands, events and enums of the matching engine.

Everything here is an immutable value: frozen, slotted dataclasses and plain
enums.  Prices are integer ticks and quantities integer lots.  The semantics are
those of ``docs/engine.md``.

New fields were added keyword-only with defaults, so the original positional
forms (``NewOrder(order_id, side, order_type, time_in_force, quantity, price,
owner)``, ``Rested(order_id, side, price, remaining)``, ...) still construct the
same values.
"""

from __future__ import annotations

import enum
from dataclasses import KW_ONLY, dataclass
from typing import TypeAlias

__all__ = [
    "Accepted",
    "AmendOrder",
    "Amended",
    "BandBreached",
    "CancelOrder",
    "CancelReason",
    "Cancelled",
    "Command",
    "Event",
    "ExpireOrder",
    "Fill",
    "NewOrder",
    "OrderType",
    "OrderView",
    "PostOnly",
    "RejectReason",
    "Rejected",
    "Replenished",
    "Rested",
    "RestoreOrder",
    "SelfTrade",
    "SetAuction",
    "SetBand",
    "SetLastPrice",
    "Side",
    "StopMoved",
    "TimeInForce",
    "TriggerRef",
    "Triggered",
    "Uncross",
    "Waiting",
]


class Side(enum.Enum):
    BUY = "buy"
    SELL = "sell"


class OrderType(enum.Enum):
    LIMIT = "limit"
    MARKET = "market"
    #: Takes the best opposite price, the remainder rests as a limit there.
    MARKET_TO_LIMIT = "market_to_limit"
    #: Parked until its trigger, then a MARKET order.
    STOP = "stop"
    #: Parked until its trigger, then a LIMIT order at ``price``.
    STOP_LIMIT = "stop_limit"
    #: A STOP whose trigger follows the reference in the client's favour.
    TRAILING_STOP = "trailing_stop"


class TimeInForce(enum.Enum):
    GTC = "gtc"
    #: Good for the day: GTC inside the engine; the worker sends ExpireOrder.
    DAY = "day"
    #: Good till a date: GTC inside the engine; the worker sends ExpireOrder.
    GTD = "gtd"
    IOC = "ioc"
    FOK = "fok"


class TriggerRef(enum.Enum):
    """The reference price a stop order watches."""

    LAST = "last"
    BID = "bid"
    ASK = "ask"


class PostOnly(enum.Enum):
    """What happens to a post-only order that would execute on entry."""

    NONE = "none"
    REJECT = "reject"
    REPRICE = "reprice"


class SelfTrade(enum.Enum):
    """Self-trade prevention, chosen by the incoming (taker) order."""

    NONE = "none"
    CANCEL_NEWEST = "cancel_newest"
    CANCEL_OLDEST = "cancel_oldest"
    CANCEL_BOTH = "cancel_both"


class CancelReason(enum.Enum):
    REQUESTED = "requested"
    EXPIRED = "expired"
    IOC_REMAINDER = "ioc_remainder"
    FOK_UNFILLABLE = "fok_unfillable"
    MARKET_REMAINDER = "market_remainder"
    MIN_QUANTITY = "min_quantity"
    SELF_TRADE = "self_trade"
    OCO = "oco"


class RejectReason(enum.Enum):
    DUPLICATE_ORDER_ID = "duplicate_order_id"
    UNKNOWN_ORDER = "unknown_order"
    INVALID_QUANTITY = "invalid_quantity"
    INVALID_PRICE = "invalid_price"
    INVALID_STOP = "invalid_stop"
    #: The time in force is not allowed for the order type.
    INVALID_TIME_IN_FORCE = "invalid_time_in_force"
    #: Post-only on an order that is not a LIMIT GTC/DAY/GTD.
    INVALID_POST_ONLY = "invalid_post_only"
    POST_ONLY_WOULD_TAKE = "post_only_would_take"
    NO_REFERENCE_PRICE = "no_reference_price"
    NOT_ALLOWED_IN_AUCTION = "not_allowed_in_auction"
    INVALID_OCO = "invalid_oco"
    NOT_AMENDABLE = "not_amendable"


_LIMIT = OrderType.LIMIT
_GTC = TimeInForce.GTC
_LAST = TriggerRef.LAST
_NO_POST_ONLY = PostOnly.NONE
_NO_STP = SelfTrade.NONE


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewOrder:
    """Submit an order.

    ``price`` is required (> 0) for LIMIT and STOP_LIMIT orders.  For MARKET,
    MARKET_TO_LIMIT, STOP and TRAILING_STOP orders it is an optional protection
    limit: a buy never fills above it, a sell never below it; ``None`` means
    unlimited.  The keyword-only fields are the special instructions of
    ``docs/engine.md``.
    """

    order_id: int
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    quantity: int
    price: int | None = None
    owner: int = 0
    _: KW_ONLY
    stop_price: int | None = None
    trigger: TriggerRef = _LAST
    trail_amount: int | None = None
    trail_bps: int | None = None
    display_quantity: int | None = None
    post_only: PostOnly = _NO_POST_ONLY
    min_quantity: int = 0
    stp: SelfTrade = _NO_STP
    oco_with: int | None = None


@dataclass(frozen=True, slots=True)
class CancelOrder:
    """Remove a live order (resting or parked stop) at the client's request."""

    order_id: int


@dataclass(frozen=True, slots=True)
class ExpireOrder:
    """Remove a live order whose DAY/GTD validity ended (reason EXPIRED)."""

    order_id: int


@dataclass(frozen=True, slots=True)
class AmendOrder:
    """Change a live order; ``None`` leaves a field as it is.

    ``quantity`` is the new *remaining* quantity.
    """

    order_id: int
    quantity: int | None = None
    price: int | None = None
    stop_price: int | None = None


@dataclass(frozen=True, slots=True)
class RestoreOrder:
    """Put a stored live order back without matching.

    Resting orders (LIMIT, or a MARKET_TO_LIMIT remainder) are appended at the
    back of their price level and parked stops at the back of the park, so
    callers restore in the order :meth:`OrderBook.snapshot` lists them.
    ``visible`` is an iceberg's current visible part (``None``: a full
    ``min(display_quantity, quantity)``); ``stop_price`` of a trailing stop is
    its current trigger level.  ``post_only`` and ``min_quantity`` are kept for
    a later amend / trigger.
    """

    order_id: int
    side: Side
    price: int | None
    quantity: int
    owner: int = 0
    _: KW_ONLY
    order_type: OrderType = _LIMIT
    time_in_force: TimeInForce = _GTC
    stop_price: int | None = None
    trigger: TriggerRef = _LAST
    trail_amount: int | None = None
    trail_bps: int | None = None
    display_quantity: int | None = None
    visible: int | None = None
    post_only: PostOnly = _NO_POST_ONLY
    min_quantity: int = 0
    stp: SelfTrade = _NO_STP
    oco_with: int | None = None


@dataclass(frozen=True, slots=True)
class SetAuction:
    """Switch the book into (``on=True``) or out of auction mode."""

    on: bool


@dataclass(frozen=True, slots=True)
class Uncross:
    """Execute the auction equilibrium; ``reference`` breaks price ties."""

    reference: int | None = None


@dataclass(frozen=True, slots=True)
class SetBand:
    """Bound continuous fills to ``[low, high]`` (``None``: unbounded)."""

    low: int | None
    high: int | None


@dataclass(frozen=True, slots=True)
class SetLastPrice:
    """Set the last trade price, the LAST trigger reference (``None``: none)."""

    price: int | None


Command: TypeAlias = (
    NewOrder
    | CancelOrder
    | ExpireOrder
    | AmendOrder
    | RestoreOrder
    | SetAuction
    | Uncross
    | SetBand
    | SetLastPrice
)


# --------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    """A NewOrder passed validation and entered matching."""

    order_id: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """The command was invalid and changed nothing."""

    order_id: int
    reason: RejectReason


@dataclass(frozen=True, slots=True)
class Waiting:
    """A stop order is parked until its trigger fires."""

    order_id: int
    stop_price: int


@dataclass(frozen=True, slots=True)
class StopMoved:
    """A trailing stop's trigger level moved (in the client's favour)."""

    order_id: int
    stop_price: int


@dataclass(frozen=True, slots=True)
class Triggered:
    """A stop fired at ``reference_price``; its matching events follow."""

    order_id: int
    reference_price: int


@dataclass(frozen=True, slots=True)
class Fill:
    """A trade between a maker and a taker.

    Continuous trading: the maker rested, the taker came in, ``price`` is the
    maker's and ``aggressor`` the taker's side.  Auction uncross: both rested,
    the maker is the older order, ``price`` the uncross price and ``aggressor``
    is ``None``.  The remainders are after the fill (hidden iceberg quantity
    included).
    """

    trade_id: int
    maker_order_id: int
    taker_order_id: int
    maker_owner: int
    taker_owner: int
    aggressor: Side | None
    price: int
    quantity: int
    maker_remaining: int
    taker_remaining: int


@dataclass(frozen=True, slots=True, init=False)
class Rested:
    """The (rest of the) order now sits on the book, with time priority now.

    ``visible`` is what the book shows (an iceberg's visible part); it defaults
    to ``remaining``.
    """

    order_id: int
    side: Side
    price: int
    remaining: int
    visible: int

    def __init__(
        self,
        order_id: int,
        side: Side,
        price: int,
        remaining: int,
        visible: int | None = None,
    ) -> None:
        # Hand-written (the engine builds one per resting order): the default
        # of ``visible`` depends on ``remaining``.
        _set = object.__setattr__
        _set(self, "order_id", order_id)
        _set(self, "side", side)
        _set(self, "price", price)
        _set(self, "remaining", remaining)
        _set(self, "visible", remaining if visible is None else visible)


@dataclass(frozen=True, slots=True)
class Replenished:
    """An iceberg's visible part was refreshed; it moved to the back of its level."""

    order_id: int
    side: Side
    price: int
    remaining: int
    visible: int


@dataclass(frozen=True, slots=True)
class Amended:
    """An amend was applied.

    ``priority_kept`` is False when the order lost its place (price change or
    quantity up) and was re-entered: its matching events follow.  ``visible``
    is 0 and ``price`` the limit/protection (or ``None``) for a parked stop.
    """

    order_id: int
    price: int | None
    remaining: int
    visible: int
    stop_price: int | None
    priority_kept: bool


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The order was removed from the book, or its remainder never rested."""

    order_id: int
    remaining: int
    reason: CancelReason


@dataclass(frozen=True, slots=True)
class BandBreached:
    """The next fill of ``order_id`` would be at ``price``, outside the band.

    The book switched to auction mode.
    """

    order_id: int
    price: int


Event: TypeAlias = (
    Accepted
    | Rejected
    | Waiting
    | StopMoved
    | Triggered
    | Fill
    | Rested
    | Replenished
    | Amended
    | Cancelled
    | BandBreached
)


# --------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderView:
    """One live order as :meth:`OrderBook.snapshot` reports it.

    ``parked`` is True for a stop waiting for its trigger (``visible`` is then
    ``None``); otherwise the order rests on the book, ``order_type`` is LIMIT
    (a MARKET_TO_LIMIT or fired STOP_LIMIT remainder rests as a limit) and
    ``visible`` is what the book shows.  ``stop_price`` of a trailing stop is
    its current level.  :meth:`restore` gives the command that puts it back.
    """

    order_id: int
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    price: int | None
    remaining: int
    visible: int | None
    owner: int
    parked: bool
    stop_price: int | None = None
    trigger: TriggerRef = _LAST
    trail_amount: int | None = None
    trail_bps: int | None = None
    display_quantity: int | None = None
    post_only: PostOnly = _NO_POST_ONLY
    min_quantity: int = 0
    stp: SelfTrade = _NO_STP
    oco_with: int | None = None

    def restore(self) -> RestoreOrder:
        """The ``RestoreOrder`` that puts this order back exactly."""
        return RestoreOrder(
            self.order_id,
            self.side,
            self.price,
            self.remaining,
            self.owner,
            order_type=self.order_type,
            time_in_force=self.time_in_force,
            stop_price=self.stop_price,
            trigger=self.trigger,
            trail_amount=self.trail_amount,
            trail_bps=self.trail_bps,
            display_quantity=self.display_quantity,
            visible=self.visible,
            post_only=self.post_only,
            min_quantity=self.min_quantity,
            stp=self.stp,
            oco_with=self.oco_with,
        )
