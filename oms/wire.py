"""The one JSON shape of an order, shared by REST, WebSocket and the stream publisher."""

from decimal import Decimal
from typing import Any

from oms.models import PROTECTED_TYPES, RESTING_STATUSES, Order


def _decimal(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _price(symbol: Any, value: Decimal | None) -> str | None:
    return None if value is None else str(symbol.format_price(value))


def _quantity(asset: Any, value: Decimal | None) -> str | None:
    return None if value is None else str(asset.quantize(value))


def order_to_wire(order: Order) -> dict[str, Any]:
    """Serialize an order; its symbol (with market, asset, currency) must be loaded."""
    symbol = order.symbol
    asset = symbol.asset
    currency = symbol.currency
    average = order.average_price
    # A market-to-limit order that rested has become a limit at its first fill price.
    is_market = order.type in PROTECTED_TYPES and not (
        order.type == Order.Type.MARKET_TO_LIMIT and order.status in RESTING_STATUSES
    )
    price = None if order.price is None else symbol.format_price(order.price)
    return {
        "id": order.pk,
        "account": order.account_id,
        "symbol": symbol.identifier,
        "side": order.side,
        "type": order.type,
        "time_in_force": order.time_in_force,
        "price": None if is_market else _decimal(price),
        "protection_price": _decimal(price) if is_market else None,
        "quantity": _decimal(asset.quantize(order.quantity)),
        "filled_quantity": _decimal(asset.quantize(order.filled_quantity)),
        "remaining_quantity": _decimal(asset.quantize(order.remaining_quantity)),
        "average_price": _decimal(
            None if average is None else average.quantize(symbol.price_unit.scaleb(-4))
        ),
        "fees": _decimal(currency.quantize(order.fees)),
        "stop_price": _price(symbol, order.stop_price),
        "trigger": order.trigger,
        "trail_amount": _price(symbol, order.trail_amount),
        "trail_bps": order.trail_bps,
        "display_quantity": _quantity(asset, order.display_quantity),
        "visible_quantity": _quantity(asset, order.visible_quantity),
        "post_only": order.post_only,
        "min_quantity": _decimal(asset.quantize(order.min_quantity)),
        "self_trade_prevention": order.self_trade_prevention,
        "oco_with": order.oco_with_id,
        "expire_at": None if order.expire_at is None else order.expire_at.isoformat(),
        "status": order.status,
        "status_reason": order.status_reason,
        "client_order_id": order.client_order_id,
        "created_at": order.created_at.isoformat(),
        "updated_at": order.updated_at.isoformat(),
    }
