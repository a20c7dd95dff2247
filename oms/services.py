"""Order entry: authorise, validate, vet, reserve and store, in one transaction.

Every door (REST, WebSocket, the web app) calls these services. An order is
acknowledged only after the transaction that stores it, its first event, its
reservation and its matching request has committed.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import IntegrityError, transaction
from django.db.models import Max, Min

from exchange.models import Market, Symbol, Trade
from exchange.selectors import symbol_find
from exchange.streams import publish_on_commit
from exchange.trading import (
    TradingError,
    limits_check,
    price_check,
    price_grid_check,
    trading_check,
)
from exchange.wakeup import market_notify
from oms.models import (
    OPEN_STATUSES,
    RESTING_STATUSES,
    Order,
    OrderEvent,
    OrderRequest,
    OrderStatus,
)
from oms.publish import private_messages
from registry.ledger import InsufficientBalanceError, LedgerBatch, Line
from registry.models import Account, AccountAccess, Asset, Bucket, JournalEntry
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

    def same_as(self, order: Order) -> bool:
        """Does this request describe ``order`` (for idempotent resubmission)?"""
        return (
            order.symbol.identifier == self.symbol
            and order.side == self.side
            and order.type == self.type
            and order.time_in_force == self.time_in_force
            and order.quantity == self.quantity
            and (self.type == Order.Type.MARKET or order.price == self.price)
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


def _validate_grid(spec: OrderSpec, symbol: Symbol) -> None:
    if spec.quantity <= 0:
        raise OrderError(
            "invalid_quantity", "The quantity must be positive.", field="quantity"
        )
    if spec.quantity % symbol.lot_size:
        raise OrderError(
            "quantity_off_lot",
            f"The quantity must be a multiple of the lot size {symbol.lot_size.normalize()}.",
            field="quantity",
        )
    if spec.quantity < symbol.min_quantity:
        raise OrderError(
            "quantity_below_minimum",
            f"The minimum quantity is {symbol.min_quantity.normalize()}.",
            field="quantity",
        )
    if spec.type == Order.Type.LIMIT:
        if spec.price is None:
            raise OrderError(
                "price_required", "A limit order needs a price.", field="price"
            )
        if spec.price <= 0:
            raise OrderError(
                "invalid_price", "The price must be positive.", field="price"
            )
        _trading(price_grid_check, symbol, spec.price)
    else:
        if spec.price is not None:
            raise OrderError(
                "price_not_allowed", "A market order takes no price.", field="price"
            )
        if spec.time_in_force not in (Order.TimeInForce.IOC, Order.TimeInForce.FOK):
            raise OrderError(
                "invalid_time_in_force",
                "A market order is IOC or FOK.",
                field="time_in_force",
            )


def market_check_trading(market: Market, symbol: Symbol) -> None:
    """Raise unless orders may be placed on ``symbol`` now: the trading state in
    effect (the symbol's own, else its market's) and the holiday calendar
    (``exchange.trading.trading_check``)."""
    _trading(trading_check, symbol, "place")


def _protection_price(spec: OrderSpec, symbol: Symbol) -> Decimal:
    """The worst price a market order may trade at: the best opposite resting price
    (else the last trade) moved by the market's collar, rounded outward to a tick."""
    resting = Order.objects.filter(symbol=symbol, status__in=RESTING_STATUSES)
    if spec.side == Order.Side.BUY:
        reference = resting.filter(side=Order.Side.SELL).aggregate(p=Min("price"))["p"]
    else:
        reference = resting.filter(side=Order.Side.BUY).aggregate(p=Max("price"))["p"]
    if reference is None:
        reference = (
            Trade.objects.filter(symbol=symbol)
            .order_by("-seq")
            .values_list("price", flat=True)
            .first()
        )
    if reference is None:
        raise OrderError(
            "no_reference_price",
            f"{symbol.identifier} has no price to bound a market order; use a limit order.",
            status=422,
        )
    collar = symbol.market.market_order_collar_percent / Decimal(100)
    if spec.side == Order.Side.BUY:
        return symbol.price_ceiling(reference * (1 + collar))
    floor = symbol.price_floor(reference * (1 - collar))
    return floor if floor > 0 else symbol.price_ceiling(symbol.tick_size)


def buy_reservation(
    *, price: Decimal, quantity: Decimal, market: Market, currency: Asset
) -> Decimal:
    """Cash held for a buy of ``quantity`` at up to ``price``: the value plus the
    worst-case fee, rounded up. Fees charged on fills round down, so what a fill
    consumes never exceeds the part of the reservation it frees."""
    value = price * quantity
    return currency.quantize(value) + currency.quantize_up(value * market.max_fee_rate)


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
    _validate_grid(spec, symbol)
    market = symbol.market
    market_check_trading(market, symbol)
    price = (
        spec.price if spec.type == Order.Type.LIMIT else _protection_price(spec, symbol)
    )
    assert price is not None
    if spec.type == Order.Type.LIMIT:
        _trading(price_check, symbol, price)  # the static price band
    _trading(limits_check, symbol, spec.quantity, price * spec.quantity)
    if price * spec.quantity >= MAX_ORDER_VALUE:
        raise OrderError(
            "order_too_large",
            f"The order's value must be below {MAX_ORDER_VALUE:,}.",
            field="quantity",
            status=422,
        )
    if spec.side == Order.Side.BUY:
        held_asset = symbol.currency
        held_amount = buy_reservation(
            price=price, quantity=spec.quantity, market=market, currency=held_asset
        )
    else:
        held_asset = symbol.asset
        held_amount = spec.quantity
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


def _store(
    user: User,
    account: Account,
    symbol: Symbol,
    spec: OrderSpec,
    price: Decimal,
    held_asset: Asset,
    held_amount: Decimal,
    client_order_id: str,
) -> Order:
    batch = LedgerBatch([(account.pk, held_asset.pk)])
    order = Order.objects.create(
        account=account,
        symbol=symbol,
        market=symbol.market,
        side=spec.side,
        type=spec.type,
        time_in_force=spec.time_in_force,
        price=price,
        quantity=spec.quantity,
        status=OrderStatus.PENDING,
        client_order_id=client_order_id,
        held_asset=held_asset,
        held_amount=held_amount,
        placed_by_id=user.pk,
    )
    try:
        batch.post(
            kind=JournalEntry.Kind.HOLD,
            lines=[
                Line(account.pk, held_asset.pk, Bucket.AVAILABLE, -held_amount),
                Line(account.pk, held_asset.pk, Bucket.HELD, held_amount),
            ],
            reference=f"order:{order.pk}",
            acting_user_id=user.pk,
        )
    except InsufficientBalanceError as error:
        is_cash = held_asset.kind == Asset.Kind.CURRENCY
        raise OrderError(
            "insufficient_funds" if is_cash else "insufficient_holdings",
            f"{held_amount.normalize():f} {held_asset.code} needed, "
            f"{(held_amount - error.shortfall).normalize():f} available.",
            status=422,
        ) from error
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
        market=symbol.market,
        order=order,
        kind=OrderRequest.Kind.PLACE,
        requested_by_id=user.pk,
    )
    market_notify(symbol.market.code)
    return order


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
