"""Order estimates: what placing an order would cost and hold, without placing it.

``order_estimate`` authorises and validates exactly like ``order_place`` (same
checks in the same order, same ``OrderError`` codes and statuses) and then only
reads: no order, event, request, journal entry or stream message is written.
"""

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from exchange.fees import FeeRates, fee_estimate
from exchange.models import Symbol
from oms.models import LIMIT_TYPES, Order
from oms.services import (
    OrderSpec,
    User,
    account_for_trading,
    order_reservation,
    order_vet,
    symbol_resolve,
)
from registry.models import Account, Asset, Balance


@dataclass(frozen=True, slots=True)
class OrderEstimate:
    """The figures of an order not placed (amounts in ``symbol.currency``)."""

    account: Account
    symbol: Symbol
    spec: OrderSpec
    #: The limit price, or a market order's protection price (``price_basis``).
    price: Decimal
    value: Decimal
    rates: FeeRates
    #: The worst-case fee (every fill at the higher of the two rates, the
    #: minimum applied); for a sell, capped at the value.
    fees: Decimal
    #: The fee if the whole order fills as a taker.
    fees_at_taker_rate: Decimal
    #: Buy: value + worst-case fee (cash out). Sell: value - worst-case fee.
    total: Decimal
    reservation_asset: Asset
    reservation_amount: Decimal
    #: What the account has for this reservation now (for a buy of an account
    #: trading unsettled proceeds: available plus unsettled cash).
    available: Decimal

    @property
    def price_basis(self) -> str:
        return "limit" if self.spec.type in LIMIT_TYPES else "protection"

    @property
    def is_sufficient(self) -> bool:
        return self.available >= self.reservation_amount


def order_estimate(*, user: User, spec: OrderSpec) -> OrderEstimate:
    """Estimate ``spec`` as ``order_place`` would place it now, read-only.

    Raises ``OrderError`` with the codes of ``order_place`` (403 for an account
    ``user`` may not trade, unknown symbol, off-grid price or quantity, market
    closed or halted, no reference price for a market order, order too large).
    ``client_order_id`` is validated by the door but not looked up: an estimate
    never returns or conflicts with a placed order. Insufficient funds are not an
    error here: ``is_sufficient`` says whether placing it would pass.
    """
    account = account_for_trading(user=user, account_id=spec.account_id)
    symbol = symbol_resolve(spec.symbol)
    price = order_vet(spec, symbol)
    held_asset, held_amount, rates = order_reservation(
        account=account, symbol=symbol, spec=spec, price=price
    )
    currency = symbol.currency
    value = currency.quantize(price * spec.quantity)
    worst = fee_estimate(rates=rates, value=value, is_taker=None, currency=currency)
    taker = fee_estimate(rates=rates, value=value, is_taker=True, currency=currency)
    is_buy = spec.side == Order.Side.BUY
    if not is_buy:
        worst, taker = min(worst, value), min(taker, value)
    return OrderEstimate(
        account=account,
        symbol=symbol,
        spec=spec,
        price=price,
        value=value,
        rates=rates,
        fees=worst,
        fees_at_taker_rate=taker,
        total=value + worst if is_buy else value - worst,
        reservation_asset=held_asset,
        reservation_amount=held_amount,
        available=_available_for(account, held_asset, is_buy=is_buy),
    )


def _available_for(account: Account, asset: Asset, *, is_buy: bool) -> Decimal:
    balance = Balance.objects.filter(account=account, asset=asset).first()
    if balance is None:
        return Decimal(0)
    if is_buy and account.trade_unsettled_proceeds:
        return balance.available + balance.unsettled
    return balance.available


def _bps(value: Decimal) -> str:
    return f"{value.normalize():f}"


def estimate_to_wire(estimate: OrderEstimate) -> dict[str, Any]:
    """The JSON of ``POST /api/v1/orders/estimate``."""
    symbol = estimate.symbol
    currency = symbol.currency
    reservation = estimate.reservation_asset
    return {
        "account": estimate.account.pk,
        "symbol": symbol.identifier,
        "side": estimate.spec.side,
        "type": estimate.spec.type,
        "time_in_force": estimate.spec.time_in_force,
        "quantity": str(symbol.asset.quantize(estimate.spec.quantity)),
        "price": str(symbol.format_price(estimate.price)),
        "price_basis": estimate.price_basis,
        "currency": currency.code,
        "value": str(currency.quantize(estimate.value)),
        "fees": str(currency.quantize(estimate.fees)),
        "fees_at_taker_rate": str(currency.quantize(estimate.fees_at_taker_rate)),
        "total": str(currency.quantize(estimate.total)),
        "fee_schedule": {
            "maker_fee_bps": _bps(estimate.rates.maker_fee_bps),
            "taker_fee_bps": _bps(estimate.rates.taker_fee_bps),
            "min_fee": str(currency.quantize(estimate.rates.min_fee)),
        },
        "reservation": {
            "asset": reservation.code,
            "amount": str(reservation.quantize(estimate.reservation_amount)),
        },
        "available": str(reservation.quantize(estimate.available)),
        "sufficient": estimate.is_sufficient,
    }
