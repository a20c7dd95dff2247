"""What an order holds: protection prices, buy reservations, hold postings."""

from decimal import Decimal

from django.db.models import Max, Min

from exchange.fees import FeeRates, buy_cash_needed, fee_rates_for, order_fee_rates
from exchange.models import Symbol, Trade
from oms.errors import OrderError, User
from oms.models import (
    RESTING_STATUSES,
    Order,
)
from oms.specs import OrderSpec
from registry.ledger import InsufficientBalanceError, LedgerBatch, Line
from registry.models import (
    Account,
    Asset,
    Balance,
    Bucket,
    JournalEntry,
)


def _best_price(symbol: Symbol, side: str) -> Decimal | None:
    """The best resting price on ``side`` of the book (from the stored orders)."""
    resting = Order.objects.filter(
        symbol=symbol, side=side, status__in=RESTING_STATUSES
    )
    aggregate = Max("price") if side == Order.Side.BUY else Min("price")
    return resting.aggregate(p=aggregate)["p"]


def _last_price(symbol: Symbol) -> Decimal | None:
    return (
        Trade.objects.filter(symbol=symbol)
        .order_by("-seq")
        .values_list("price", flat=True)
        .first()
    )


def _no_reference(symbol: Symbol) -> OrderError:
    return OrderError(
        "no_reference_price",
        f"{symbol.identifier} has no price to bound this order; use a limit order.",
        status=422,
    )


def collared_price(symbol: Symbol, side: str, reference: Decimal) -> Decimal:
    """``reference`` moved by the market's collar against the client, on the grid."""
    collar = symbol.market.market_order_collar_percent / Decimal(100)
    if side == Order.Side.BUY:
        return symbol.price_ceiling(reference * (1 + collar))
    floor = symbol.price_floor(reference * (1 - collar))
    return floor if floor > 0 else symbol.price_ceiling(symbol.tick_size)


def trailing_stop_initial(spec: OrderSpec, symbol: Symbol) -> Decimal:
    """Where a trailing stop starts: the trigger reference moved by the trail (the
    engine sets the exact level when it accepts the order; this bounds it)."""
    if spec.trigger == Order.Trigger.BID:
        reference = _best_price(symbol, Order.Side.BUY)
    elif spec.trigger == Order.Trigger.ASK:
        reference = _best_price(symbol, Order.Side.SELL)
    else:
        reference = _last_price(symbol)
    if reference is None:
        raise _no_reference(symbol)
    if spec.trail_amount is not None:
        trail = spec.trail_amount
    else:
        assert spec.trail_bps is not None
        trail = symbol.from_ticks(
            max(1, symbol.ticks_floor(reference * spec.trail_bps / Decimal(10000)))
        )
    if spec.side == Order.Side.BUY:
        return reference + trail
    return max(symbol.from_ticks(1), reference - trail)


def protection_price(spec: OrderSpec, symbol: Symbol) -> Decimal:
    """The worst price an order without a limit may trade at.

    Market and market-to-limit orders: the best opposite resting price (else the
    last trade) moved by the market's collar. Stops: their stop price moved by the
    collar; trailing stops: their starting level moved by the collar (a trailing
    stop only moves in the client's favour, so this bound holds)."""
    if spec.type == Order.Type.STOP:
        assert spec.stop_price is not None
        return collared_price(symbol, spec.side, spec.stop_price)
    if spec.type == Order.Type.TRAILING_STOP:
        return collared_price(symbol, spec.side, trailing_stop_initial(spec, symbol))
    opposite = Order.Side.SELL if spec.side == Order.Side.BUY else Order.Side.BUY
    reference = _best_price(symbol, opposite)
    if reference is None:
        reference = _last_price(symbol)
    if reference is None:
        raise _no_reference(symbol)
    return collared_price(symbol, spec.side, reference)


def buy_reservation(
    *,
    price: Decimal,
    quantity: Decimal,
    currency: Asset,
    rates: FeeRates,
    accrued: Decimal = Decimal(0),
    charged: Decimal = Decimal(0),
) -> Decimal:
    """Cash held for a buy of ``quantity`` at up to ``price``: the value plus the
    worst-case fee under ``rates`` given the fee the order has already ``accrued``
    and been ``charged`` (both zero for a new order). It is exactly the most the
    fills can consume (``exchange.fees.buy_cash_needed``), so a reservation never
    runs short and what is left once the order is done is released."""
    return buy_cash_needed(
        rates=rates,
        price=price,
        quantity=quantity,
        currency=currency,
        accrued=accrued,
        charged=charged,
    )


def order_buy_reservation(
    order: Order, *, price: Decimal | None = None, quantity: Decimal | None = None
) -> Decimal:
    """What an open buy order must hold for its remaining quantity (or
    ``quantity``) at its price (or ``price``, e.g. an amend), under the rates it
    was placed with and the fees its fills have accrued and been charged. The
    order's symbol (with currency) must be loaded."""
    limit = order.price if price is None else price
    assert limit is not None
    return buy_reservation(
        price=limit,
        quantity=order.remaining_quantity if quantity is None else quantity,
        currency=order.symbol.currency,
        rates=order_fee_rates(order),
        accrued=order.fee_accrued,
        charged=order.fees,
    )


def order_reservation(
    *, account: Account, symbol: Symbol, spec: OrderSpec, price: Decimal
) -> tuple[Asset, Decimal, FeeRates]:
    """What placing ``spec`` at ``price`` (its limit, or a market order's
    protection price) would hold, and the fee rates the order would be placed
    under: a buy holds ``buy_reservation`` of the currency, a sell its quantity of
    the security."""
    rates = fee_rates_for(market=symbol.market, account=account)
    if spec.side == Order.Side.BUY:
        amount = buy_reservation(
            price=price, quantity=spec.quantity, currency=symbol.currency, rates=rates
        )
        return symbol.currency, amount, rates
    return symbol.asset, spec.quantity, rates


def hold_post(
    batch: LedgerBatch,
    account: Account,
    asset: Asset,
    amount: Decimal,
    reference: str,
    user: User,
) -> None:
    """Move ``amount`` from available to held; raises ``OrderError`` if short."""
    try:
        batch.post(
            kind=JournalEntry.Kind.HOLD,
            lines=[
                Line(account.pk, asset.pk, Bucket.AVAILABLE, -amount),
                Line(account.pk, asset.pk, Bucket.HELD, amount),
            ],
            reference=reference,
            acting_user_id=user.pk,
        )
    except InsufficientBalanceError as error:
        raise shortfall_error(asset, amount, error) from error


def shortfall_error(
    asset: Asset, amount: Decimal, error: InsufficientBalanceError
) -> OrderError:
    is_cash = asset.kind == Asset.Kind.CURRENCY
    return OrderError(
        "insufficient_funds" if is_cash else "insufficient_holdings",
        f"{amount.normalize():f} {asset.code} needed, "
        f"{(amount - error.shortfall).normalize():f} available.",
        status=422,
    )


def hold_lines(
    account: Account, balance: Balance, side: str, held_amount: Decimal
) -> tuple[list[Line], Decimal]:
    """The postings of an order's hold and the part drawn from unsettled cash.

    A hold draws from available; a buy of an account that trades unsettled
    proceeds draws from available first, then from unsettled cash. Precondition:
    ``balance`` is locked. If both together fall short the posting raises
    ``InsufficientBalanceError``.
    """
    key = (balance.account_id, balance.asset_id)
    from_unsettled = Decimal(0)
    if side == Order.Side.BUY and account.trade_unsettled_proceeds:
        from_unsettled = max(
            Decimal(0), held_amount - max(balance.available, Decimal(0))
        )
    lines = [
        Line(*key, Bucket.AVAILABLE, -(held_amount - from_unsettled)),
        Line(*key, Bucket.UNSETTLED, -from_unsettled),
        Line(*key, Bucket.HELD, held_amount),
    ]
    return lines, from_unsettled


def oco_leg_hold(partner: Order, held_asset: Asset, needed: Decimal) -> Decimal:
    """What a new OCO leg needing ``needed`` of ``held_asset`` adds to the hold of
    its open ``partner`` (locked).

    Only one leg of a pair can execute, so a pair on one side (same held asset)
    holds what its larger leg needs: the new leg adds what it needs beyond the
    partner's hold. Legs on opposite sides hold different assets: each holds its
    own need. The matching batch keeps the pair's hold at the larger need as the
    legs fill, amend or end (``BatchBooking._settle_pair``)."""
    if partner.held_asset_id != held_asset.pk:
        return needed
    return max(Decimal(0), needed - partner.held_amount)
