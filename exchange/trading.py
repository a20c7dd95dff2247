"""Trading rules: effective trading states, order-entry checks, price bands.

Everything here reads; nothing writes. Order entry (``oms.services``) calls
``trading_check``, ``price_check`` and ``limits_check``; the matching worker calls
``market_trading_states`` once per batch (each symbol's ``allows_match`` and
``is_auction`` flags), ``uncross_due`` on a market transition and ``dynamic_band``
per trade. A refusal is a ``TradingError`` carrying the API error's code, message,
field and status.

No result is cached beyond the call that computed it: a state changed by staff or
the schedule is seen by the next call.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import Q
from django.utils import timezone

from exchange.calendar import is_holiday, local_date
from exchange.models import (
    STANDARD_TRADING_STATES,
    Market,
    Symbol,
    Trade,
    TradingState,
    standard_trading_state,
)
from registry.services import RegistryError

#: The order-entry actions a trading state allows or refuses.
ENTRY_ACTIONS = ("place", "amend", "cancel")


class TradingError(RegistryError):
    """An order request the market's rules refuse now; nothing was changed."""

    code = "trading_refused"

    def __init__(
        self, code: str, message: str, *, field: str = "", status: int = 422
    ) -> None:
        super().__init__(message, code=code, field=field, status=status)


# -- trading states ---------------------------------------------------------------


def trading_state_get(market: Market, code: str) -> TradingState:
    """The market's ``TradingState`` with ``code``.

    A market lacking the row (one made without ``market_create``) gets the
    standard definition of a standard code, and a state allowing nothing for any
    other code: an unknown state never lets an order through.
    """
    state = TradingState.objects.filter(market=market, code=code).first()
    if state is not None:
        return state
    if code in STANDARD_TRADING_STATES:
        return standard_trading_state(market, code)
    return TradingState(
        market=market,
        code=code,
        name=code,
        allows_place=False,
        allows_amend=False,
        allows_cancel=False,
        allows_match=False,
    )


def trading_state_of(market: Market) -> TradingState:
    """The market's current trading state (one query)."""
    return trading_state_get(market, market.state)


def symbol_override_active(symbol: Symbol, now: datetime | None = None) -> bool:
    """Does the symbol's own state override the market's at ``now``? A circuit
    breaker's override ends at ``halted_until`` even before the schedule run that
    clears it."""
    if not symbol.trading_state:
        return False
    if symbol.halted_until is None:
        return True
    return symbol.halted_until > (now or timezone.now())


def symbol_trading_state(symbol: Symbol, now: datetime | None = None) -> TradingState:
    """The trading state in effect for ``symbol``: its override (a suspension or a
    circuit-breaker halt) if active, else its market's state. ``symbol.market`` is
    used as loaded: reload the symbol (or market) for a fresh market state."""
    if symbol_override_active(symbol, now):
        return trading_state_get(symbol.market, symbol.trading_state)
    return trading_state_of(symbol.market)


@dataclass(frozen=True, slots=True)
class MarketTradingStates:
    """The trading states in effect in one market at one instant."""

    market_state: TradingState
    #: symbol id -> its own state, for the symbols whose override is active
    symbol_states: dict[int, TradingState]

    def of(self, symbol_id: int) -> TradingState:
        """The state in effect for the symbol: its own, else the market's."""
        return self.symbol_states.get(symbol_id, self.market_state)


def market_trading_states(
    market: Market, now: datetime | None = None
) -> MarketTradingStates:
    """Every symbol's trading state in ``market`` (its ``state`` as loaded: pass a
    fresh row) at ``now``, in two queries: for a matching batch. Overrides whose
    ``halted_until`` has passed are not in effect."""
    now = now or timezone.now()
    states = {s.code: s for s in TradingState.objects.filter(market=market)}

    def state(code: str) -> TradingState:
        return states.get(code) or trading_state_get(market, code)

    overrides = (
        Symbol.objects.filter(market=market)
        .exclude(trading_state="")
        .filter(Q(halted_until__isnull=True) | Q(halted_until__gt=now))
        .values_list("pk", "trading_state")
    )
    return MarketTradingStates(
        market_state=state(market.state),
        symbol_states={pk: state(code) for pk, code in overrides},
    )


def uncross_due(previous: TradingState, new: TradingState) -> bool:
    """Does the transition ``previous`` -> ``new`` run an auction's uncross?
    (Entering a state with ``uncross_on_entry`` from an auction state: pre-open or
    opening auction -> open, closing auction -> closed.)"""
    return new.uncross_on_entry and previous.is_auction


# -- order entry ------------------------------------------------------------------


def trading_check(
    symbol: Symbol, action: str, *, now: datetime | None = None
) -> TradingState:
    """Raise ``TradingError`` unless ``action`` (place, amend or cancel) may be
    taken on ``symbol`` now; return the state in effect.

    Codes (all 422): ``symbol_not_active`` (a suspended or delisted listing; cancels
    are still allowed), ``symbol_suspended`` (staff suspended the symbol),
    ``symbol_halted`` (a circuit breaker halted it, until ``halted_until``),
    ``market_halted``, ``market_closed``, ``action_not_allowed`` (the state in
    effect, named in the message, does not allow the action) and
    ``market_holiday`` (placing or amending on one of the market's holidays, by
    the date in the market's timezone).
    """
    if action not in ENTRY_ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    now = now or timezone.now()
    market = symbol.market
    if action != "cancel" and symbol.status != Symbol.Status.ACTIVE:
        raise TradingError(
            "symbol_not_active",
            f"{symbol.identifier} is {symbol.status}.",
            field="symbol",
        )
    if symbol_override_active(symbol, now):
        state = trading_state_get(market, symbol.trading_state)
        if not state.allows(action):
            raise _symbol_refusal(symbol, state, action)
    else:
        state = trading_state_of(market)
        if not state.allows(action):
            raise _market_refusal(market, state, action)
    if action != "cancel" and is_holiday(market, local_date(market, now)):
        raise TradingError("market_holiday", f"Market {market.code} is closed today.")
    return state


def _because(reason: str) -> str:
    return f": {reason}" if reason else ""


def _symbol_refusal(symbol: Symbol, state: TradingState, action: str) -> TradingError:
    reason = _because(symbol.state_reason)
    if state.code == Market.State.HALTED and symbol.halted_until is not None:
        until = symbol.halted_until.isoformat()
        return TradingError(
            "symbol_halted",
            f"{symbol.identifier} is halted until {until}{reason}.",
            field="symbol",
        )
    if state.code == Market.State.HALTED:
        return TradingError(
            "symbol_suspended",
            f"{symbol.identifier} is suspended{reason}.",
            field="symbol",
        )
    return TradingError(
        "action_not_allowed",
        f"Cannot {action} an order while {symbol.identifier} is in "
        f"{state.name} ({state.code}).",
        field="symbol",
    )


def _market_refusal(market: Market, state: TradingState, action: str) -> TradingError:
    if state.code == Market.State.HALTED:
        return TradingError(
            "market_halted",
            f"Market {market.code} is halted{_because(market.state_reason)}.",
        )
    if state.code == Market.State.CLOSED:
        return TradingError("market_closed", f"Market {market.code} is closed.")
    return TradingError(
        "action_not_allowed",
        f"Cannot {action} an order while market {market.code} is in "
        f"{state.name} ({state.code}).",
    )


def price_grid_check(symbol: Symbol, price: Decimal) -> None:
    """Raise ``price_off_tick`` (400, field price) unless ``price`` is a multiple
    of the tick that applies at it (its tick-table band's, else the flat tick)."""
    if symbol.tick_table_id is None:
        if price % symbol.tick_size:
            raise TradingError(
                "price_off_tick",
                f"The price must be a multiple of the tick size {symbol.price_unit}.",
                field="price",
                status=400,
            )
        return
    tick = symbol.tick_at(price)
    if price % tick:
        raise TradingError(
            "price_off_tick",
            f"At {symbol.format_price(price)} the price must be a multiple of the "
            f"tick size {tick.normalize():f} (tick table {symbol.tick_table}).",
            field="price",
            status=400,
        )


def reference_price(symbol: Symbol) -> Decimal | None:
    """The price bands are measured from: the symbol's last trade, if any."""
    return (
        Trade.objects.filter(symbol=symbol)
        .order_by("-seq")
        .values_list("price", flat=True)
        .first()
    )


def band_percent(symbol: Symbol) -> Decimal | None:
    """The static band in percent: the symbol's, else its market's (None: off)."""
    if symbol.price_band_percent is not None:
        return symbol.price_band_percent
    return symbol.market.price_band_percent


def _band(
    symbol: Symbol, reference: Decimal, percent: Decimal
) -> tuple[Decimal, Decimal]:
    """The on-grid prices within ``percent`` of ``reference`` (rounded inward)."""
    fraction = percent / Decimal(100)
    low = symbol.price_ceiling(reference * (1 - fraction))
    high = symbol.price_floor(reference * (1 + fraction))
    if low <= 0:
        low = symbol.price_ceiling(symbol.tick_size)
    return low, high


def static_band(
    symbol: Symbol, reference: Decimal | None
) -> tuple[Decimal, Decimal] | None:
    """The lowest and highest limit price order entry accepts around
    ``reference`` (None: no band, or no reference price)."""
    percent = band_percent(symbol)
    if percent is None or reference is None:
        return None
    return _band(symbol, reference, percent)


def dynamic_band(
    symbol: Symbol, reference_price: Decimal | None
) -> tuple[Decimal, Decimal] | None:
    """The circuit breaker's band around ``reference_price``: the lowest and the
    highest price (on the symbol's grid, both inclusive) a trade may print at
    without halting the symbol. None when the market has no circuit breaker
    (``Market.circuit_breaker_percent`` empty) or there is no reference price.
    Convert with ``symbol.to_ticks`` for the engine (both are on the grid)."""
    percent = symbol.market.circuit_breaker_percent
    if percent is None or reference_price is None:
        return None
    return _band(symbol, reference_price, percent)


def price_check(
    symbol: Symbol, price: Decimal, *, reference: Decimal | None = None
) -> None:
    """Check a limit price (an order's, or a stop's limit): on the tick grid
    (``price_off_tick``, 400) and inside the static band around ``reference``
    (default: the last trade) - ``price_outside_band`` (422) naming the range."""
    price_grid_check(symbol, price)
    price_band_check(symbol, price, reference=reference)


def price_band_check(
    symbol: Symbol, price: Decimal, *, reference: Decimal | None = None
) -> None:
    """The static band half of ``price_check`` (for callers that checked the grid
    already): ``price_outside_band`` (422)."""
    percent = band_percent(symbol)
    if percent is None:
        return
    if reference is None:
        reference = reference_price(symbol)
    if reference is None:
        return
    low, high = _band(symbol, reference, percent)
    if not low <= price <= high:
        raise TradingError(
            "price_outside_band",
            f"The price must be from {low} to {high} ({percent.normalize():f}% "
            f"around the reference price {symbol.format_price(reference)}).",
            field="price",
        )


def limits_check(symbol: Symbol, quantity: Decimal, value: Decimal) -> None:
    """Check an order against the symbol's limits: ``quantity_above_maximum``
    (400, field quantity), ``value_below_minimum`` and ``value_above_maximum``
    (422, field quantity). ``value`` is price x quantity (a market order's at its
    protection price)."""
    if symbol.max_quantity is not None and quantity > symbol.max_quantity:
        raise TradingError(
            "quantity_above_maximum",
            f"The maximum quantity is {symbol.max_quantity.normalize():f}.",
            field="quantity",
            status=400,
        )
    currency = symbol.currency
    if symbol.min_value is not None and value < symbol.min_value:
        raise TradingError(
            "value_below_minimum",
            f"The order's value {currency.quantize(value)} is below the minimum "
            f"{currency.quantize(symbol.min_value)} {currency.code}.",
            field="quantity",
        )
    if symbol.max_value is not None and value > symbol.max_value:
        raise TradingError(
            "value_above_maximum",
            f"The order's value {currency.quantize(value)} is above the maximum "
            f"{currency.quantize(symbol.max_value)} {currency.code}.",
            field="quantity",
        )
