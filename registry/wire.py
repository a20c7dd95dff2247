"""JSON shapes of balances and holdings, shared by REST and the streams."""

from decimal import Decimal
from typing import Any

from registry.models import Asset, Balance, Posting

#: Extra decimal places of cost figures beyond the security's own scale.
COST_PLACES = 4


def cost_text(asset: Asset, cost: Decimal) -> str:
    """A cost figure of a position in ``asset`` (in its trading currency), as text."""
    return str(cost.quantize(asset.unit.scaleb(-COST_PLACES)))


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


def holding_to_wire(
    balance: Balance, *, price_places: int = COST_PLACES
) -> dict[str, Any]:
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


def transaction_to_wire(
    posting: Posting,
    *,
    balance: Decimal,
    total: Decimal,
    cost: Decimal,
    description: str,
) -> dict[str, Any]:
    """One ledger line of an account with its running figures right after it.

    ``posting.entry`` and ``posting.asset`` must be loaded. ``balance`` is the
    posting's bucket, ``total`` all buckets of the asset, ``cost`` the cost base
    (null, like ``cost_delta``, for a currency).
    """
    entry = posting.entry
    asset = posting.asset
    is_security = asset.kind == Asset.Kind.SECURITY
    return {
        "id": posting.pk,
        "entry": entry.pk,
        "created_at": entry.created_at.isoformat(),
        "kind": entry.kind,
        "reference": entry.reference,
        "reason": entry.reason,
        "description": description,
        "asset": asset.code,
        "bucket": posting.bucket,
        "amount": str(asset.quantize(posting.amount)),
        "balance": str(asset.quantize(balance)),
        "total": str(asset.quantize(total)),
        # Cost bases belong to security positions; cash has none.
        "cost_delta": cost_text(asset, posting.cost_delta) if is_security else None,
        "cost": cost_text(asset, cost) if is_security else None,
    }
