"""JSON shapes of balances and holdings, shared by REST and the streams."""

from typing import Any

from registry.models import Balance


def balance_to_wire(balance: Balance) -> dict[str, Any]:
    """A cash (or any asset) position; ``balance.asset`` must be loaded."""
    asset = balance.asset
    return {
        "asset": asset.code,
        "available": str(asset.quantize(balance.available)),
        "held": str(asset.quantize(balance.held)),
        "unsettled": str(asset.quantize(balance.unsettled)),
        "total": str(asset.quantize(balance.total)),
    }


def holding_to_wire(balance: Balance, *, price_places: int = 4) -> dict[str, Any]:
    """A security position, with its average cost in the trading currency.

    A listed security's asset code is its symbol identifier (``XSX:XS01``).
    """
    asset = balance.asset
    return {
        "symbol": asset.code,
        "quantity": str(asset.quantize(balance.total)),
        "available": str(asset.quantize(balance.available)),
        "held": str(asset.quantize(balance.held)),
        "unsettled": str(asset.quantize(balance.unsettled)),
        "average_cost": str(
            balance.average_cost.quantize(asset.unit.scaleb(-price_places))
        ),
        "cost": str(balance.cost.quantize(asset.unit.scaleb(-price_places))),
    }
