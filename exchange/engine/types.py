"""Commands, events and enums of the matching engine.

Everything here is an immutable value: frozen, slotted dataclasses and plain
enums.  Prices are integer ticks and quantities integer lots.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "Accepted",
    "CancelOrder",
    "CancelReason",
    "Cancelled",
    "Command",
    "Event",
    "Fill",
    "NewOrder",
    "OrderType",
    "RejectReason",
    "Rejected",
    "Rested",
    "RestoreOrder",
    "Side",
    "TimeInForce",
]


class Side(enum.Enum):
    BUY = "buy"
    SELL = "sell"


class OrderType(enum.Enum):
    LIMIT = "limit"
    MARKET = "market"


class TimeInForce(enum.Enum):
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"


class CancelReason(enum.Enum):
    REQUESTED = "requested"
    IOC_REMAINDER = "ioc_remainder"
    FOK_UNFILLABLE = "fok_unfillable"
    MARKET_REMAINDER = "market_remainder"


class RejectReason(enum.Enum):
    DUPLICATE_ORDER_ID = "duplicate_order_id"
    UNKNOWN_ORDER = "unknown_order"
    INVALID_QUANTITY = "invalid_quantity"
    INVALID_PRICE = "invalid_price"


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewOrder:
    """Submit an order.

    ``price`` is required (> 0) for LIMIT orders.  For MARKET orders it is an
    optional protection limit: a buy never fills above it, a sell never below
    it; ``None`` means unlimited.
    """

    order_id: int
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    quantity: int
    price: int | None
    owner: int = 0


@dataclass(frozen=True, slots=True)
class CancelOrder:
    """Remove a resting order from the book."""

    order_id: int


@dataclass(frozen=True, slots=True)
class RestoreOrder:
    """Put a stored open order back on the book without matching.

    The order is appended at the back of its price level, so callers must
    restore orders in priority order.
    """

    order_id: int
    side: Side
    price: int
    quantity: int
    owner: int = 0


Command: TypeAlias = NewOrder | CancelOrder | RestoreOrder


# --------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    """A NewOrder passed validation and entered matching."""

    order_id: int


@dataclass(frozen=True, slots=True)
class Fill:
    """A trade between a resting maker and an incoming taker.

    ``price`` is always the maker's price; the remainders are after the fill.
    """

    trade_id: int
    maker_order_id: int
    taker_order_id: int
    maker_owner: int
    taker_owner: int
    aggressor: Side
    price: int
    quantity: int
    maker_remaining: int
    taker_remaining: int


@dataclass(frozen=True, slots=True)
class Rested:
    """The (rest of the) order now sits on the book."""

    order_id: int
    side: Side
    price: int
    remaining: int


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The order was removed from the book, or its remainder never rested."""

    order_id: int
    remaining: int
    reason: CancelReason


@dataclass(frozen=True, slots=True)
class Rejected:
    """The command was invalid and changed nothing."""

    order_id: int
    reason: RejectReason


Event: TypeAlias = Accepted | Fill | Rested | Cancelled | Rejected
