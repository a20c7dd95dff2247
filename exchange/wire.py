"""JSON shapes of exchange resources shared by REST and the streams."""

from typing import Any

from exchange.models import Trade


def trade_to_wire(trade: Trade) -> dict[str, Any]:
    symbol = trade.symbol
    return {
        "id": trade.pk,
        "seq": trade.seq,
        "symbol": symbol.identifier,
        "price": str(symbol.format_price(trade.price)),
        "quantity": str(symbol.asset.quantize(trade.quantity)),
        "aggressor_side": trade.aggressor_side,
        "executed_at": trade.executed_at.isoformat(),
        # A busted trade stays on the tape, flagged; market data excludes it.
        "busted": trade.busted_at is not None,
    }
