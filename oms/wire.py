"""The one JSON shape of an order, shared by REST, WebSocket and the stream publisher."""

from decimal import Decimal
from typing import Any

from oms.models import Order


def _decimal(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def order_to_wire(order: Order) -> dict[str, Any]:
    """Serialize an order; its symbol (with market, asset, currency) must be loaded."""
    symbol = order.symbol
    asset = symbol.asset
    currency = symbol.currency
    average = order.average_price
    is_market = order.type == Order.Type.MARKET
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
        "status": order.status,
        "status_reason": order.status_reason,
        "client_order_id": order.client_order_id,
        "created_at": order.created_at.isoformat(),
        "updated_at": order.updated_at.isoformat(),
    }
