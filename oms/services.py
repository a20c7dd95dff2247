"""Order entry: authorise, validate, vet, reserve and store, in one transaction.

Every door (REST, WebSocket, the web app) calls these services. An order is
acknowledged only after the transaction that stores it, its first event, its
reservation and its matching request has committed.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import IntegrityError, transaction
from django.db.models import Max, Min, QuerySet
from django.utils import timezone

from exchange.fees import FeeRates, buy_cash_needed, fee_rates_for, order_fee_rates
from exchange.models import Market, Symbol, Trade, TradingState
from exchange.selectors import symbol_find
from exchange.streams import publish_on_commit
from exchange.trading import (
    TradingError,
    limits_check,
    price_band_check,
    price_grid_check,
    trading_check,
)
from exchange.wakeup import market_notify
from oms.models import (
    LIMIT_TYPES,
    OPEN_STATUSES,
    RESTING_STATUSES,
    STOP_TYPES,
    Order,
    OrderEvent,
    OrderRequest,
    OrderStatus,
)
from oms.publish import private_messages
from registry.ledger import InsufficientBalanceError, LedgerBatch, Line
from registry.models import (
    Account,
    AccountAccess,
    Asset,
    Balance,
    Bucket,
    JournalEntry,
)
from registry.services import audit_record

User = AbstractBaseUser | AnonymousUser

#: Above this an order's value (and its reservation) would not fit the ledger's
#: NUMERIC(30, 10) amounts.
MAX_ORDER_VALUE = Decimal(10) ** 18


class OrderError(Exception):
    """An order request that cannot be carried out; nothing was changed.

    ``code`` is the machine code of the API error, ``status`` its HTTP status.
    """

    def __init__(
        self, code: str, message: str, *, field: str = "", status: int = 400
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.status = status


IMMEDIATE_TIFS = frozenset({Order.TimeInForce.IOC, Order.TimeInForce.FOK})
RESTING_TIFS = frozenset(
    {Order.TimeInForce.GTC, Order.TimeInForce.DAY, Order.TimeInForce.GTD}
)
#: The times in force each type accepts.
ALLOWED_TIFS: dict[str, frozenset[str]] = {
    Order.Type.LIMIT: IMMEDIATE_TIFS | RESTING_TIFS,
    Order.Type.STOP_LIMIT: IMMEDIATE_TIFS | RESTING_TIFS,
    Order.Type.MARKET: IMMEDIATE_TIFS,
    Order.Type.STOP: IMMEDIATE_TIFS,
    Order.Type.TRAILING_STOP: IMMEDIATE_TIFS,
    Order.Type.MARKET_TO_LIMIT: RESTING_TIFS,
}


def default_time_in_force(order_type: str) -> str:
    """GTC for orders that can rest, IOC for the others."""
    if Order.TimeInForce.GTC in ALLOWED_TIFS.get(order_type, frozenset()):
        return Order.TimeInForce.GTC
    return Order.TimeInForce.IOC


def _trading(check: Callable[..., object], *args: object) -> None:
    """Run an ``exchange.trading`` check; its refusal becomes an ``OrderError``
    with the same code, message, field and status."""
    try:
        check(*args)
    except TradingError as error:
        raise OrderError(
            error.code, error.message, field=error.field, status=error.status
        ) from error


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

    def same_as(self, order: Order) -> bool:
        """Does this request describe ``order`` (for idempotent resubmission)?"""
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


@dataclass(frozen=True, slots=True)
class PlaceResult:
    order: Order
    created: bool


def account_for_trading(*, user: User, account_id: int) -> Account:
    """The account, if ``user`` may trade it; raises ``OrderError`` otherwise."""
    access = (
        AccountAccess.objects.select_related("account")
        .filter(user_id=user.pk, account_id=account_id)
        .first()
        if user.is_authenticated
        else None
    )
    if access is None or not access.may_trade:
        raise OrderError(
            "account_forbidden",
            f"You may not trade account {account_id}.",
            field="account",
            status=403,
        )
    if access.account.status != Account.Status.ACTIVE:
        raise OrderError(
            "account_inactive",
            f"Account {access.account.number} is {access.account.status}.",
            field="account",
            status=422,
        )
    return access.account


def symbol_resolve(identifier: str) -> Symbol:
    """Look up ``MARKET:CODE``; raises ``OrderError`` (unknown_symbol)."""
    symbol = symbol_find(identifier)
    if symbol is None:
        raise OrderError(
            "unknown_symbol", f"There is no symbol {identifier!r}.", field="symbol"
        )
    return symbol


def _check_quantity(
    symbol: Symbol, quantity: Decimal, *, field: str, minimum: Decimal | None = None
) -> None:
    if quantity <= 0:
        raise OrderError(
            "invalid_quantity", f"The {field} must be positive.", field=field
        )
    if quantity % symbol.lot_size:
        raise OrderError(
            "quantity_off_lot",
            f"The {field} must be a multiple of the lot size "
            f"{symbol.lot_size.normalize()}.",
            field=field,
        )
    if minimum is not None and quantity < minimum:
        raise OrderError(
            "quantity_below_minimum",
            f"The minimum quantity is {minimum.normalize()}.",
            field=field,
        )


def _check_price(symbol: Symbol, price: Decimal, *, field: str = "price") -> None:
    if price <= 0:
        raise OrderError("invalid_price", f"The {field} must be positive.", field=field)
    try:
        price_grid_check(symbol, price)
    except TradingError as error:
        raise OrderError(
            error.code,
            error.message.replace("The price", f"The {field}", 1),
            field=field,
            status=error.status,
        ) from error


def _require(condition: bool, code: str, message: str, field: str) -> None:
    if not condition:
        raise OrderError(code, message, field=field)


def _validate_prices(spec: OrderSpec, symbol: Symbol) -> None:
    if spec.type in LIMIT_TYPES:
        _require(
            spec.price is not None,
            "price_required",
            f"A {spec.type} order needs a price.",
            "price",
        )
        assert spec.price is not None
        _check_price(symbol, spec.price)
    else:
        _require(
            spec.price is None,
            "price_not_allowed",
            f"A {spec.type.replace('_', '-')} order takes no price.",
            "price",
        )
    if spec.type in (Order.Type.STOP, Order.Type.STOP_LIMIT):
        _require(
            spec.stop_price is not None,
            "stop_price_required",
            f"A {spec.type.replace('_', '-')} order needs a stop price.",
            "stop_price",
        )
        assert spec.stop_price is not None
        _check_price(symbol, spec.stop_price, field="stop_price")
    else:
        _require(
            spec.stop_price is None,
            "stop_price_not_allowed",
            "Only stop and stop-limit orders take a stop price.",
            "stop_price",
        )
    if spec.type == Order.Type.TRAILING_STOP:
        _require(
            (spec.trail_amount is None) != (spec.trail_bps is None),
            "trail_required",
            "A trailing stop needs exactly one of trail_amount and trail_bps.",
            "trail_amount",
        )
        if spec.trail_amount is not None:
            _check_price(symbol, spec.trail_amount, field="trail_amount")
        if spec.trail_bps is not None:
            _require(
                1 <= spec.trail_bps <= 9999,
                "invalid_trail",
                "trail_bps must be between 1 and 9999.",
                "trail_bps",
            )
    else:
        _require(
            spec.trail_amount is None and spec.trail_bps is None,
            "trail_not_allowed",
            "Only trailing stops take a trail.",
            "trail_amount" if spec.trail_amount is not None else "trail_bps",
        )


def _validate_instructions(spec: OrderSpec, symbol: Symbol, now: datetime) -> None:
    tif = spec.time_in_force
    _require(
        tif in ALLOWED_TIFS[spec.type],
        "invalid_time_in_force",
        f"A {spec.type.replace('_', '-')} order is "
        + " or ".join(
            t.upper() for t in Order.TimeInForce.values if t in ALLOWED_TIFS[spec.type]
        )
        + ".",
        "time_in_force",
    )
    if tif == Order.TimeInForce.GTD:
        _require(
            spec.expire_at is not None,
            "expire_at_required",
            "A GTD order needs expire_at.",
            "expire_at",
        )
        assert spec.expire_at is not None
        _require(
            spec.expire_at > now,
            "expire_at_in_past",
            "expire_at must be in the future.",
            "expire_at",
        )
    else:
        _require(
            spec.expire_at is None,
            "expire_at_not_allowed",
            "Only GTD orders take expire_at.",
            "expire_at",
        )
    can_rest = spec.type == Order.Type.LIMIT and tif in RESTING_TIFS
    if spec.display_quantity is not None:
        _require(
            can_rest,
            "display_not_allowed",
            "Only limit GTC, DAY or GTD orders can be icebergs.",
            "display_quantity",
        )
        _check_quantity(symbol, spec.display_quantity, field="display_quantity")
        _require(
            spec.display_quantity < spec.quantity,
            "invalid_display_quantity",
            "The display quantity must be below the quantity.",
            "display_quantity",
        )
    if spec.post_only != Order.PostOnly.NONE:
        _require(
            can_rest,
            "post_only_not_allowed",
            "Only limit GTC, DAY or GTD orders can be post-only.",
            "post_only",
        )
    if spec.min_quantity:
        _check_quantity(symbol, spec.min_quantity, field="min_quantity")
        _require(
            spec.min_quantity <= spec.quantity,
            "invalid_min_quantity",
            "The minimum quantity cannot exceed the quantity.",
            "min_quantity",
        )
    if spec.trigger != Order.Trigger.LAST:
        _require(
            spec.type in STOP_TYPES,
            "trigger_not_allowed",
            "Only stop orders take a trigger.",
            "trigger",
        )


def _validate_spec(spec: OrderSpec, symbol: Symbol, now: datetime) -> None:
    _check_quantity(
        symbol, spec.quantity, field="quantity", minimum=symbol.min_quantity
    )
    _validate_prices(spec, symbol)
    _validate_instructions(spec, symbol, now)


def market_check_trading(
    market: Market, symbol: Symbol, action: str = "place"
) -> TradingState:
    """Raise unless ``action`` (place, amend, cancel) may be taken on ``symbol``
    now: the trading state in effect (the symbol's own, else its market's) and the
    holiday calendar (``exchange.trading.trading_check``). Returns that state."""
    try:
        return trading_check(symbol, action)
    except TradingError as error:
        raise OrderError(
            error.code, error.message, field=error.field, status=error.status
        ) from error


def _check_auction(spec: OrderSpec, state: TradingState) -> None:
    """In a call auction orders only accumulate: nothing that must trade at once."""
    immediate = spec.type in (Order.Type.MARKET, Order.Type.MARKET_TO_LIMIT) or (
        spec.type == Order.Type.LIMIT and spec.time_in_force in IMMEDIATE_TIFS
    )
    if state.is_auction and (immediate or spec.post_only == Order.PostOnly.REPRICE):
        raise OrderError(
            "not_allowed_in_auction",
            f"{state.name}: only orders that can wait for the auction are taken "
            "(no market, market-to-limit, IOC/FOK limit or repricing post-only).",
            field="type",
            status=422,
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


def _collared(symbol: Symbol, side: str, reference: Decimal) -> Decimal:
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


def _protection_price(spec: OrderSpec, symbol: Symbol) -> Decimal:
    """The worst price an order without a limit may trade at.

    Market and market-to-limit orders: the best opposite resting price (else the
    last trade) moved by the market's collar. Stops: their stop price moved by the
    collar; trailing stops: their starting level moved by the collar (a trailing
    stop only moves in the client's favour, so this bound holds)."""
    if spec.type == Order.Type.STOP:
        assert spec.stop_price is not None
        return _collared(symbol, spec.side, spec.stop_price)
    if spec.type == Order.Type.TRAILING_STOP:
        return _collared(symbol, spec.side, trailing_stop_initial(spec, symbol))
    opposite = Order.Side.SELL if spec.side == Order.Side.BUY else Order.Side.BUY
    reference = _best_price(symbol, opposite)
    if reference is None:
        reference = _last_price(symbol)
    if reference is None:
        raise _no_reference(symbol)
    return _collared(symbol, spec.side, reference)


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


def day_order_expiry(market: Market, now: datetime) -> datetime:
    """When a DAY order placed at ``now`` expires at the latest: the end of the
    market's local trading date (the session close expires it earlier)."""
    local = now.astimezone(market.tzinfo)
    midnight = datetime.combine(
        local.date() + timedelta(days=1), time(0), tzinfo=market.tzinfo
    )
    return midnight


def order_vet(spec: OrderSpec, symbol: Symbol) -> Decimal:
    """Validate ``spec`` and vet it against the market now; return the price it
    would be placed at (its limit, or its protection price). Raises
    ``OrderError``; reads only."""
    _validate_spec(spec, symbol, timezone.now())
    _check_auction(spec, market_check_trading(symbol.market, symbol))
    price = spec.price if spec.type in LIMIT_TYPES else _protection_price(spec, symbol)
    assert price is not None
    if spec.type in LIMIT_TYPES:
        # The grid was checked with the spec; here the static price band.
        _trading(price_band_check, symbol, price)
    _trading(limits_check, symbol, spec.quantity, price * spec.quantity)
    if price * spec.quantity >= MAX_ORDER_VALUE:
        raise OrderError(
            "order_too_large",
            f"The order's value must be below {MAX_ORDER_VALUE:,}.",
            field="quantity",
            status=422,
        )
    return price


def order_place(*, user: User, spec: OrderSpec) -> PlaceResult:
    """Place an order. Returns the stored order (``created=False`` for a resubmission
    of the same ``client_order_id`` and body). Raises ``OrderError``; on error
    nothing is stored and nothing is held.

    Side effects on commit: wakes the market's matching worker and publishes the
    order on the account's ``orders`` stream.
    """
    account = account_for_trading(user=user, account_id=spec.account_id)
    if spec.client_order_id:
        existing = _existing(account, spec)
        if existing is not None:
            return existing
    symbol = symbol_resolve(spec.symbol)
    price = order_vet(spec, symbol)
    held_asset, held_amount, rates = order_reservation(
        account=account, symbol=symbol, spec=spec, price=price
    )
    client_order_id = spec.client_order_id or uuid.uuid4().hex
    try:
        with transaction.atomic(durable=True):
            order = _store(
                user,
                account,
                symbol,
                spec,
                price,
                held_asset,
                held_amount,
                client_order_id,
                rates,
            )
    except IntegrityError:
        # A concurrent request with the same client_order_id won the race.
        existing = _existing(account, spec) if spec.client_order_id else None
        if existing is None:
            raise
        return existing
    return PlaceResult(order=order, created=True)


def _existing(account: Account, spec: OrderSpec) -> PlaceResult | None:
    order = (
        Order.objects.select_related(
            "symbol__market", "symbol__asset", "symbol__currency"
        )
        .filter(account=account, client_order_id=spec.client_order_id)
        .first()
    )
    if order is None:
        return None
    if not spec.same_as(order):
        raise OrderError(
            "duplicate_client_order_id",
            f"client_order_id {spec.client_order_id!r} was used for a different order.",
            field="client_order_id",
            status=409,
        )
    return PlaceResult(order=order, created=False)


def _oco_partner(account: Account, symbol: Symbol, order_id: int) -> Order:
    """Lock and return the open order an OCO order pairs with."""
    partner = (
        Order.objects.select_for_update(of=("self",))
        .filter(pk=order_id, account=account, symbol=symbol)
        .first()
    )
    if partner is None or partner.status not in OPEN_STATUSES:
        raise OrderError(
            "invalid_oco",
            "oco_with must be an open order of the same account and symbol.",
            field="oco_with",
            status=422,
        )
    if partner.oco_with_id is not None:
        raise OrderError(
            "invalid_oco",
            f"Order {partner.pk} is already in an OCO pair.",
            field="oco_with",
            status=422,
        )
    return partner


def _store(
    user: User,
    account: Account,
    symbol: Symbol,
    spec: OrderSpec,
    price: Decimal,
    held_asset: Asset,
    held_amount: Decimal,
    client_order_id: str,
    rates: FeeRates,
) -> Order:
    market = symbol.market
    partner = _oco_partner(account, symbol, spec.oco_with) if spec.oco_with else None
    expire_at = spec.expire_at
    if spec.time_in_force == Order.TimeInForce.DAY:
        expire_at = day_order_expiry(market, timezone.now())
    batch = LedgerBatch([(account.pk, held_asset.pk)])
    hold_lines, held_unsettled = _hold_lines(
        account, batch.balance(account.pk, held_asset.pk), spec.side, held_amount
    )
    order = Order.objects.create(
        account=account,
        symbol=symbol,
        market=market,
        side=spec.side,
        type=spec.type,
        time_in_force=spec.time_in_force,
        price=price,
        quantity=spec.quantity,
        stop_price=spec.stop_price,
        trigger=spec.trigger,
        trail_amount=spec.trail_amount,
        trail_bps=spec.trail_bps,
        display_quantity=spec.display_quantity,
        post_only=spec.post_only,
        min_quantity=spec.min_quantity,
        self_trade_prevention=spec.self_trade_prevention
        or market.self_trade_prevention,
        oco_with=partner,
        expire_at=expire_at,
        status=OrderStatus.PENDING,
        client_order_id=client_order_id,
        held_asset=held_asset,
        held_amount=held_amount,
        held_unsettled=held_unsettled,
        placed_by_id=user.pk,
        **rates.as_order_fields(),
    )
    if partner is not None:
        partner.oco_with = order
        partner.save(update_fields=["oco_with", "updated_at"])
    try:
        batch.post(
            kind=JournalEntry.Kind.HOLD,
            lines=hold_lines,
            reference=f"order:{order.pk}",
            acting_user_id=user.pk,
        )
    except InsufficientBalanceError as error:
        raise _short(held_asset, held_amount, error) from error
    batch.flush()
    publish_on_commit(
        private_messages(orders=[order], balances=batch.balances.values())
    )
    OrderEvent.objects.create(
        order=order,
        from_status=OrderStatus.NEW,
        to_status=OrderStatus.PENDING,
        acting_user_id=user.pk,
    )
    OrderRequest.objects.create(
        market=market,
        order=order,
        kind=OrderRequest.Kind.PLACE,
        requested_by_id=user.pk,
    )
    market_notify(market.code)
    return order


def _hold(
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
        raise _short(asset, amount, error) from error


def _short(
    asset: Asset, amount: Decimal, error: InsufficientBalanceError
) -> OrderError:
    is_cash = asset.kind == Asset.Kind.CURRENCY
    return OrderError(
        "insufficient_funds" if is_cash else "insufficient_holdings",
        f"{amount.normalize():f} {asset.code} needed, "
        f"{(amount - error.shortfall).normalize():f} available.",
        status=422,
    )


def _hold_lines(
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
        from_unsettled = max(Decimal(0), held_amount - max(balance.available, 0))
    lines = [
        Line(*key, Bucket.AVAILABLE, -(held_amount - from_unsettled)),
        Line(*key, Bucket.UNSETTLED, -from_unsettled),
        Line(*key, Bucket.HELD, held_amount),
    ]
    return lines, from_unsettled


def order_cancel(*, user: User, order_id: int) -> Order:
    """Ask the matching worker to cancel an open order.

    The cancel is queued behind earlier requests for the market and carried out in
    arrival order; the order stays open until then. Raises ``OrderError``:
    ``order_not_found`` (404), ``account_forbidden`` (403) or ``order_not_open``
    (409); a repeated cancel of an order already being cancelled is accepted.
    """
    order = (
        Order.objects.select_related(
            "symbol__market", "symbol__asset", "symbol__currency"
        )
        .filter(pk=order_id, account__access__user_id=user.pk)
        .first()
    )
    if order is None:
        raise OrderError(
            "order_not_found", f"There is no order {order_id}.", status=404
        )
    account_for_trading(user=user, account_id=order.account_id)
    market_check_trading(order.symbol.market, order.symbol, "cancel")
    return order_cancel_queue(order_id=order.pk, acting_user=user)


def order_cancel_queue(
    *, order_id: int, acting_user: User, audit_reason: str = ""
) -> Order:
    """Queue a cancel request for an open order (no access check: callers do it).

    Idempotent: a cancel already queued is not queued again. With ``audit_reason``
    an audit record names ``acting_user`` (staff acting on a client's order).
    Raises ``OrderError`` ``order_not_open`` (409). On commit wakes the matcher.
    """
    with transaction.atomic(durable=True):
        order = (
            Order.objects.select_for_update(of=("self",))
            .select_related("symbol__market", "symbol__asset", "symbol__currency")
            .get(pk=order_id)
        )
        if order.status not in OPEN_STATUSES:
            raise OrderError(
                "order_not_open", f"Order {order.pk} is {order.status}.", status=409
            )
        already = OrderRequest.objects.filter(
            order=order, kind=OrderRequest.Kind.CANCEL, processed_at__isnull=True
        ).exists()
        if not already:
            OrderRequest.objects.create(
                market_id=order.market_id,
                order=order,
                kind=OrderRequest.Kind.CANCEL,
                requested_by_id=acting_user.pk,
            )
            if audit_reason:
                audit_record(
                    actor=acting_user,
                    action="order_cancel",
                    target=order,
                    reason=audit_reason,
                )
            market_notify(order.symbol.market.code)
    return order


def _order_for_trading(user: User, order_id: int, *, lock: bool = False) -> Order:
    """The order, if ``user`` may trade its account; raises ``OrderError``."""
    orders = Order.objects.select_related(
        "symbol__market", "symbol__asset", "symbol__currency"
    )
    if lock:
        orders = orders.select_for_update(of=("self",))
    order = orders.filter(pk=order_id, account__access__user_id=user.pk).first()
    if order is None:
        raise OrderError(
            "order_not_found", f"There is no order {order_id}.", status=404
        )
    account_for_trading(user=user, account_id=order.account_id)
    return order


@dataclass(frozen=True, slots=True)
class AmendSpec:
    """An amend request: the new total quantity, limit price and stop price (None:
    unchanged)."""

    quantity: Decimal | None = None
    price: Decimal | None = None
    stop_price: Decimal | None = None


#: Types that may be amended, and which of their fields.
AMENDABLE_FIELDS: dict[str, frozenset[str]] = {
    Order.Type.LIMIT: frozenset({"quantity", "price"}),
    Order.Type.MARKET_TO_LIMIT: frozenset({"quantity", "price"}),
    Order.Type.STOP_LIMIT: frozenset({"quantity", "price", "stop_price"}),
    Order.Type.STOP: frozenset({"quantity", "stop_price"}),
    Order.Type.TRAILING_STOP: frozenset({"quantity"}),
}


def _validate_amend(order: Order, amend: AmendSpec) -> None:
    symbol = order.symbol
    if order.status not in OPEN_STATUSES:
        raise OrderError(
            "order_not_open", f"Order {order.pk} is {order.status}.", status=409
        )
    allowed = AMENDABLE_FIELDS.get(order.type, frozenset())
    if order.type == Order.Type.MARKET_TO_LIMIT and order.status == OrderStatus.PENDING:
        allowed = frozenset()
    if order.time_in_force in IMMEDIATE_TIFS:
        allowed = frozenset()
    changes = {
        name: value
        for name, value in (
            ("quantity", amend.quantity),
            ("price", amend.price),
            ("stop_price", amend.stop_price),
        )
        if value is not None
    }
    if not changes:
        raise OrderError(
            "nothing_to_amend", "Give a new quantity, price or stop price."
        )
    for name in changes:
        if name not in allowed:
            raise OrderError(
                "not_amendable",
                f"The {name} of a {order.type.replace('_', '-')} "
                f"{order.time_in_force.upper()} order cannot be amended.",
                field=name,
                status=422,
            )
    if amend.quantity is not None:
        _check_quantity(symbol, amend.quantity, field="quantity")
        if amend.quantity <= order.filled_quantity:
            raise OrderError(
                "quantity_below_filled",
                f"The quantity must exceed the filled "
                f"{order.filled_quantity.normalize():f}.",
                field="quantity",
            )
    if amend.price is not None:
        _check_price(symbol, amend.price)
    if amend.stop_price is not None:
        _check_price(symbol, amend.stop_price, field="stop_price")


def order_amend(*, user: User, order_id: int, amend: AmendSpec) -> Order:
    """Ask the matching worker to amend an open order.

    Quantity down keeps the order's time priority; a price change or a quantity up
    loses it (the worker re-enters the order). A buy whose new price or quantity
    needs more cash holds the difference now (``insufficient_funds`` if short); a
    sell holds more of the security; what the amended order no longer needs is
    released when the worker applies the amend. Raises ``OrderError``
    (``order_not_found`` 404, ``account_forbidden`` 403, ``order_not_open`` 409,
    ``not_amendable``/``nothing_to_amend``/grid errors 400/422).
    Side effects on commit: wakes the matcher, publishes the balance.
    """
    with transaction.atomic(durable=True):
        order = _order_for_trading(user, order_id, lock=True)
        _validate_amend(order, amend)
        symbol = order.symbol
        market_check_trading(symbol.market, symbol, "amend")
        quantity = amend.quantity or order.quantity
        remaining = quantity - order.filled_quantity
        price = amend.price or order.price
        if order.type == Order.Type.STOP and amend.stop_price is not None:
            # The protection price follows the stop.
            price = _collared(symbol, order.side, amend.stop_price)
        assert price is not None
        if order.side == Order.Side.BUY:
            if price * remaining >= MAX_ORDER_VALUE:
                raise OrderError(
                    "order_too_large",
                    f"The order's value must be below {MAX_ORDER_VALUE:,}.",
                    field="quantity",
                    status=422,
                )
            needed = order_buy_reservation(order, price=price, quantity=remaining)
        else:
            needed = remaining
        if needed > order.held_amount:
            batch = LedgerBatch([(order.account_id, order.held_asset_id)])
            extra = needed - order.held_amount
            _hold(
                batch, order.account, order.held_asset, extra, f"order:{order.pk}", user
            )
            batch.flush()
            order.held_amount = needed
            order.save(update_fields=["held_amount", "updated_at"])
            publish_on_commit(
                private_messages(orders=[], balances=batch.balances.values())
            )
        OrderRequest.objects.create(
            market_id=order.market_id,
            order=order,
            kind=OrderRequest.Kind.AMEND,
            quantity=amend.quantity,
            price=price if price != order.price else None,
            stop_price=amend.stop_price,
            requested_by_id=user.pk,
        )
        market_notify(symbol.market.code)
    return order


def order_cancel_all(
    *,
    user: User,
    account_id: int,
    symbol: str | None = None,
    side: str | None = None,
) -> list[Order]:
    """Queue a cancel for every open order of the account (optionally of one symbol
    and/or side); returns the orders. Orders already being cancelled are included
    but not queued twice. Raises ``OrderError`` (``account_forbidden``,
    ``unknown_symbol``)."""
    account = account_for_trading(user=user, account_id=account_id)
    orders = Order.objects.filter(account=account, status__in=OPEN_STATUSES)
    if symbol is not None:
        orders = orders.filter(symbol=symbol_resolve(symbol))
    if side is not None:
        orders = orders.filter(side=side)
    with transaction.atomic(durable=True):
        locked = list(
            orders.select_for_update(of=("self",))
            .select_related("symbol__market", "symbol__asset", "symbol__currency")
            .order_by("pk")
        )
        _queue(locked, OrderRequest.Kind.CANCEL, user)
    return locked


def _queue(orders: list[Order], kind: str, user: User | None) -> int:
    """Queue a ``kind`` request (cancel/expire) for each order (locked, open) that
    has none waiting; wakes their markets on commit. Returns how many were queued."""
    if not orders:
        return 0
    waiting = set(
        OrderRequest.objects.filter(
            order__in=orders,
            kind__in=(OrderRequest.Kind.CANCEL, OrderRequest.Kind.EXPIRE),
            processed_at__isnull=True,
        ).values_list("order_id", flat=True)
    )
    new = [
        OrderRequest(
            market_id=order.market_id,
            order=order,
            kind=kind,
            requested_by_id=None if user is None else user.pk,
        )
        for order in orders
        if order.pk not in waiting
    ]
    OrderRequest.objects.bulk_create(new)
    for code in sorted({order.market.code for order in orders}):
        market_notify(code)
    return len(new)


def orders_expire_due(
    *, now: datetime | None = None, market: Market | None = None
) -> int:
    """Queue the expiry of every open order whose ``expire_at`` has passed (GTD at
    its time, DAY at the end of its trading date), optionally of one market.
    Idempotent (an order with an expiry or cancel waiting is skipped) and safe to
    run concurrently; returns how many expiries were queued. The matching worker
    carries them out and releases the reservations."""
    orders = Order.objects.filter(
        status__in=OPEN_STATUSES, expire_at__lte=now or timezone.now()
    )
    if market is not None:
        orders = orders.filter(market=market)
    return _expire(orders)


def orders_expire_day(*, market: Market) -> int:
    """Queue the expiry of every open DAY order of ``market`` (its session closed)."""
    return _expire(
        Order.objects.filter(
            market=market,
            status__in=OPEN_STATUSES,
            time_in_force=Order.TimeInForce.DAY,
        )
    )


def _expire(orders: QuerySet[Order]) -> int:
    with transaction.atomic():
        locked = list(
            orders.select_for_update(of=("self",), skip_locked=True)
            .select_related("market")
            .order_by("pk")
        )
        return _queue(locked, OrderRequest.Kind.EXPIRE, None)


def orders_expire_at_close(
    market: Market, previous: TradingState, new: TradingState, now: datetime
) -> None:
    """Market transition hook: when a market closes, its DAY orders expire (the
    matching worker uncrosses a closing auction first, then carries out the
    expiries in the same order as they were queued)."""
    if new.code == Market.State.CLOSED and previous.code != Market.State.CLOSED:
        orders_expire_day(market=market)
