"""Pure-Python order matching engine: price-time priority, integer ticks and lots."""

from exchange.engine.book import OrderBook
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

__all__ = [
    "Accepted",
    "CancelOrder",
    "CancelReason",
    "Cancelled",
    "Command",
    "Event",
    "Fill",
    "NewOrder",
    "OrderBook",
    "OrderType",
    "RejectReason",
    "Rejected",
    "Rested",
    "RestoreOrder",
    "Side",
    "TimeInForce",
]
