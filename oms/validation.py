"""One validation path: who may trade, the symbol, the order's grid, instructions, trading state, band and limits."""

from datetime import datetime
from decimal import Decimal

from django.utils import timezone

from exchange.models import Market, Symbol, TradingState
from exchange.selectors import symbol_find
from exchange.trading import (
    TradingError,
    limits_check,
    price_band_check,
    price_grid_check,
    trading_check,
)
from oms.errors import MAX_ORDER_VALUE, OrderError, User, trading_checked
from oms.models import (
    LIMIT_TYPES,
    OPEN_STATUSES,
    STOP_TYPES,
    Order,
    OrderRequest,
    OrderStatus,
)
from oms.reservations import collared_price, protection_price
from oms.specs import (
    ALLOWED_TIFS,
    AMENDABLE_FIELDS,
    IMMEDIATE_TIFS,
    RESTING_TIFS,
    AmendSpec,
    AmendTerms,
    OrderSpec,
)
from registry.models import (
    Account,
    AccountAccess,
)


def trading_user_id(user: User) -> int:
    """``user``'s id, to filter orders by account access; raises ``OrderError``
    ``not_authenticated`` (401) unless ``user`` is signed in.

    With no id, ``account__access__user_id=None`` would become ``IS NULL`` and, through
    the access join, match the orders of accounts that nobody has access to.
    """
    if not user.is_authenticated:
        raise OrderError("not_authenticated", "Sign in to trade.", status=401)
    return user.pk


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


def quantity_check(
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


def price_check(symbol: Symbol, price: Decimal, *, field: str = "price") -> None:
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
        price_check(symbol, spec.price)
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
        price_check(symbol, spec.stop_price, field="stop_price")
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
            price_check(symbol, spec.trail_amount, field="trail_amount")
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
        quantity_check(symbol, spec.display_quantity, field="display_quantity")
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
        quantity_check(symbol, spec.min_quantity, field="min_quantity")
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
    quantity_check(symbol, spec.quantity, field="quantity", minimum=symbol.min_quantity)
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


def order_value_check(
    symbol: Symbol, *, quantity: Decimal, price: Decimal, band: bool
) -> None:
    """The vetting every door that sets an order's price or quantity runs after the
    grid and the trading state: the static price band (``band``: a limit price is
    being set), the symbol's limits and ``MAX_ORDER_VALUE``, on ``price`` (the limit,
    or the protection price) x ``quantity`` (the order's total quantity).

    Raises ``OrderError``: ``price_outside_band`` (422), ``quantity_above_maximum``
    (400), ``value_below_minimum``, ``value_above_maximum``, ``order_too_large``
    (422). Reads only.
    """
    if band:
        trading_checked(price_band_check, symbol, price)
    trading_checked(limits_check, symbol, quantity, price * quantity)
    if price * quantity >= MAX_ORDER_VALUE:
        raise OrderError(
            "order_too_large",
            f"The order's value must be below {MAX_ORDER_VALUE:,}.",
            field="quantity",
            status=422,
        )


def order_vet(spec: OrderSpec, symbol: Symbol) -> Decimal:
    """Validate ``spec`` and vet it against the market now; return the price it
    would be placed at (its limit, or its protection price). Raises
    ``OrderError``; reads only."""
    _validate_spec(spec, symbol, timezone.now())
    _check_auction(spec, market_check_trading(symbol.market, symbol))
    price = spec.price if spec.type in LIMIT_TYPES else protection_price(spec, symbol)
    assert price is not None
    order_value_check(
        symbol, quantity=spec.quantity, price=price, band=spec.type in LIMIT_TYPES
    )
    return price


def amend_validate(order: Order, amend: AmendSpec) -> AmendTerms:
    """Validate ``amend`` of ``order`` (locked by the caller) through the checks a
    placement runs: the grid and minimum quantity, the trading state (for
    ``amend``), the price band (a new limit price) and the limits on the amended
    order (its new total quantity x its new limit or protection price).

    Returns the amended order's total quantity and price. Raises ``OrderError``:
    ``order_not_open`` (409), ``nothing_to_amend`` (400: nothing given, or only
    what the order already has), ``not_amendable`` (422), ``quantity_below_filled``
    (400), the grid codes of ``quantity_check``/``price_check``, the trading-state
    codes of ``market_check_trading`` and those of ``order_value_check``. Reads only.
    """
    _check_amendable(order, amend)
    symbol = order.symbol
    quantity = order.quantity
    if amend.quantity is not None:
        quantity = amend.quantity
        quantity_check(symbol, quantity, field="quantity", minimum=symbol.min_quantity)
        if quantity <= order.filled_quantity:
            raise OrderError(
                "quantity_below_filled",
                f"The quantity must exceed the filled "
                f"{order.filled_quantity.normalize():f}.",
                field="quantity",
            )
    if amend.price is not None:
        price_check(symbol, amend.price)
    if amend.stop_price is not None:
        price_check(symbol, amend.stop_price, field="stop_price")
    market_check_trading(symbol.market, symbol, "amend")
    price = _amended_price(order, amend)
    order_value_check(
        symbol, quantity=quantity, price=price, band=amend.price is not None
    )
    return AmendTerms(quantity=quantity, price=price)


def _amended_price(order: Order, amend: AmendSpec) -> Decimal:
    """The amended order's limit, or its protection price (a stop's follows its
    stop price)."""
    if order.type == Order.Type.STOP and amend.stop_price is not None:
        return collared_price(order.symbol, order.side, amend.stop_price)
    price = order.price if amend.price is None else amend.price
    assert price is not None
    return price


def _check_amendable(order: Order, amend: AmendSpec) -> None:
    """Is ``order`` open, and does ``amend`` change something it may change?"""
    if order.status not in OPEN_STATUSES:
        raise OrderError(
            "order_not_open", f"Order {order.pk} is {order.status}.", status=409
        )
    allowed = AMENDABLE_FIELDS.get(order.type, frozenset())
    if order.type == Order.Type.MARKET_TO_LIMIT and order.status == OrderStatus.PENDING:
        allowed = frozenset()
    if order.time_in_force in IMMEDIATE_TIFS:
        allowed = frozenset()
    given = {
        name: value
        for name, value in (
            ("quantity", amend.quantity),
            ("price", amend.price),
            ("stop_price", amend.stop_price),
        )
        if value is not None
    }
    if not given:
        raise OrderError(
            "nothing_to_amend", "Give a new quantity, price or stop price."
        )
    for name in given:
        if name not in allowed:
            raise OrderError(
                "not_amendable",
                f"The {name} of a {order.type.replace('_', '-')} "
                f"{order.time_in_force.upper()} order cannot be amended.",
                field=name,
                status=422,
            )
    if all(getattr(order, name) == value for name, value in given.items()):
        # Equal to the order as the worker last left it; with an amend still
        # waiting in the inbox the same values undo that amend, a real change.
        waiting = OrderRequest.objects.filter(
            order=order, kind=OrderRequest.Kind.AMEND, processed_at__isnull=True
        ).exists()
        if not waiting:
            raise OrderError(
                "nothing_to_amend",
                "The order already has that "
                + " and ".join(name.replace("_", " ") for name in given)
                + ".",
                field=next(iter(given)),
            )
