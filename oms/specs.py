"""Order and amend requests as the doors hand them to the services."""

import hashlib
import json
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal

from oms.models import (
    LIMIT_TYPES,
    Order,
)

IMMEDIATE_TIFS = frozenset({Order.TimeInForce.IOC, Order.TimeInForce.FOK})
RESTING_TIFS = frozenset(
    {Order.TimeInForce.GTC, Order.TimeInForce.DAY, Order.TimeInForce.GTD}
)
#: The times in force each type accepts.
ALLOWED_TIFS: dict[str, frozenset[str]] = {
    Order.Type.LIMIT: IMMEDIATE_TIFS | RESTING_TIFS,
    Order.Type.STOP_LIMIT: IMMEDIATE_TIFS | RESTING_TIFS,
    Order.Type.MARKET: IMMEDIATE_TIFS,
    # A stop's time in force is how long the stop lives (GTC, DAY, GTD) or what
    # its triggered order does (IOC, FOK); a triggered stop is a market order,
    # whose remainder never rests.
    Order.Type.STOP: IMMEDIATE_TIFS | RESTING_TIFS,
    Order.Type.TRAILING_STOP: IMMEDIATE_TIFS | RESTING_TIFS,
    Order.Type.MARKET_TO_LIMIT: RESTING_TIFS,
}


def default_time_in_force(order_type: str) -> str:
    """GTC for orders that can rest, IOC for the others."""
    if Order.TimeInForce.GTC in ALLOWED_TIFS.get(order_type, frozenset()):
        return Order.TimeInForce.GTC
    return Order.TimeInForce.IOC


@dataclass(frozen=True, slots=True)
class OrderSpec:
    """A place request as received (already type-checked by the door)."""

    account_id: int
    symbol: str
    side: str
    type: str
    time_in_force: str
    quantity: Decimal
    price: Decimal | None = None
    client_order_id: str = ""
    stop_price: Decimal | None = None
    trigger: str = Order.Trigger.LAST
    trail_amount: Decimal | None = None
    trail_bps: int | None = None
    display_quantity: Decimal | None = None
    post_only: str = Order.PostOnly.NONE
    min_quantity: Decimal = Decimal(0)
    #: Empty: the market's default.
    self_trade_prevention: str = ""
    oco_with: int | None = None
    expire_at: datetime | None = None

    def fingerprint(self) -> str:
        """The SHA-256 of this request, normalised (decimals without trailing
        zeros, times in UTC, defaults applied by the door): stored on the order at
        placement, so a resubmission is compared with what was placed, not with
        the order's fields that amends and fills change since."""
        canonical = {
            field.name: _canonical(getattr(self, field.name)) for field in fields(self)
        }
        text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def same_as(self, order: Order) -> bool:
        """Does this request describe ``order`` as it is now? Only for an order
        stored without a fingerprint (placed before fingerprints were kept): an
        amend since then makes a resubmission of its body differ."""
        return (
            order.symbol.identifier == self.symbol
            and order.side == self.side
            and order.type == self.type
            and order.time_in_force == self.time_in_force
            and order.quantity == self.quantity
            and (self.type not in LIMIT_TYPES or order.price == self.price)
            and (
                self.type == Order.Type.TRAILING_STOP
                or order.stop_price == self.stop_price
            )
            and order.trigger == self.trigger
            and order.trail_amount == self.trail_amount
            and order.trail_bps == self.trail_bps
            and order.display_quantity == self.display_quantity
            and order.post_only == self.post_only
            and order.min_quantity == self.min_quantity
            and (
                not self.self_trade_prevention
                or order.self_trade_prevention == self.self_trade_prevention
            )
            and order.oco_with_id == self.oco_with
            and (
                self.time_in_force != Order.TimeInForce.GTD
                or order.expire_at == self.expire_at
            )
        )


def _canonical(value: object) -> object:
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


@dataclass(frozen=True, slots=True)
class PlaceResult:
    order: Order
    created: bool


@dataclass(frozen=True, slots=True)
class AmendSpec:
    """An amend request: the new total quantity, limit price and stop price (None:
    unchanged)."""

    quantity: Decimal | None = None
    price: Decimal | None = None
    stop_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class AmendTerms:
    """An amend as validated: the amended order's total quantity and its price
    (the limit, or the protection price)."""

    quantity: Decimal
    price: Decimal


#: Types that may be amended, and which of their fields.
AMENDABLE_FIELDS: dict[str, frozenset[str]] = {
    Order.Type.LIMIT: frozenset({"quantity", "price"}),
    Order.Type.MARKET_TO_LIMIT: frozenset({"quantity", "price"}),
    Order.Type.STOP_LIMIT: frozenset({"quantity", "price", "stop_price"}),
    Order.Type.STOP: frozenset({"quantity", "stop_price"}),
    Order.Type.TRAILING_STOP: frozenset({"quantity"}),
}
