"""Exchange writes: markets, their states and sessions, symbols (all audited).

Every change of a market's trading state - a staff action, the REST control
endpoints, the session schedule - goes through ``_market_transition``: the market
row is locked, the change audited, the registered transition hooks called, the
new state published on ``market.<code>`` and the market's matcher woken, all in
one transaction (publishing and waking take effect on commit).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from exchange.calendar import scheduled_state
from exchange.models import (
    STANDARD_TRADING_STATES,
    Market,
    MarketSession,
    Symbol,
    TickBand,
    TickTable,
    TradingState,
    code_validator,
    standard_trading_state,
)
from exchange.streams import publish_on_commit, stream_advance, stream_message
from exchange.trading import trading_state_get
from exchange.wakeup import market_notify
from registry.models import Asset
from registry.services import RegistryError, User, audit_record

_S = Market.State


@dataclass(frozen=True, slots=True)
class MarketAction:
    """A named staff action on a market: the states it may be taken from and the
    state it leads to (``None``: the scheduled state, else open - a resume)."""

    target: str | None
    only_from: frozenset[str] = frozenset()
    never_from: frozenset[str] = frozenset()

    def allowed_from(self, state: str) -> bool:
        if self.only_from:
            return state in self.only_from
        return state not in self.never_from


MARKET_ACTIONS: dict[str, MarketAction] = {
    "open": MarketAction(_S.OPEN, never_from=frozenset({_S.OPEN, _S.HALTED})),
    "halt": MarketAction(_S.HALTED, never_from=frozenset({_S.HALTED, _S.CLOSED})),
    "resume": MarketAction(None, only_from=frozenset({_S.HALTED})),
    "close": MarketAction(_S.CLOSED, never_from=frozenset({_S.CLOSED})),
}

#: fn(market, previous_state, new_state, now), called inside the transaction of
#: every market state change.
MarketTransitionHook = Callable[[Market, TradingState, TradingState, datetime], None]
_transition_hooks: list[MarketTransitionHook] = []


class MarketStateError(RegistryError):
    code = "invalid_market_action"


class SymbolStateError(RegistryError):
    code = "invalid_symbol_action"


def market_transition_hook_register(hook: MarketTransitionHook) -> MarketTransitionHook:
    """Call ``hook(market, previous_state, new_state, now)`` inside the transaction
    of every market state change (staff action, REST, schedule), after the market
    row is saved and audited, with the market row locked. An exception from a hook
    rolls the whole change back. Registering the same hook twice registers it
    once; usable as a decorator. Register from an ``AppConfig.ready()``."""
    if hook not in _transition_hooks:
        _transition_hooks.append(hook)
    return hook


def market_transition_hook_unregister(hook: MarketTransitionHook) -> None:
    if hook in _transition_hooks:
        _transition_hooks.remove(hook)


def market_topic(market: Market) -> str:
    return f"market.{market.code}"


def market_to_wire(market: Market) -> dict[str, object]:
    """The ``market.<code>`` stream message and REST representation: the market's
    state (with its flags) and the symbols whose own state overrides it."""
    state = trading_state_get(market, market.state)
    overrides = Symbol.objects.filter(market=market).exclude(trading_state="")
    return {
        "code": market.code,
        "name": market.name,
        "timezone": market.timezone,
        "currency": market.currency.code,
        "state": market.state,
        "state_name": state.name,
        "state_reason": market.state_reason,
        "allows_place": state.allows_place,
        "allows_amend": state.allows_amend,
        "allows_cancel": state.allows_cancel,
        "is_auction": state.is_auction,
        "schedule_enabled": market.schedule_enabled,
        "trading_date": timezone.now().astimezone(market.tzinfo).date().isoformat(),
        "symbol_states": [
            symbol_state_to_wire(symbol, market)
            for symbol in overrides.order_by("code")
        ],
    }


def symbol_state_to_wire(symbol: Symbol, market: Market) -> dict[str, object]:
    return {
        "symbol": f"{market.code}:{symbol.code}",
        "state": symbol.trading_state,
        "reason": symbol.state_reason,
        "halted_until": (
            symbol.halted_until.isoformat() if symbol.halted_until else None
        ),
    }


def _market_publish(market: Market) -> None:
    topic = market_topic(market)
    seq = stream_advance({topic: 1})[topic]
    publish_on_commit([stream_message(topic, seq, market_to_wire(market))])


def _market_locked(market: Market) -> Market:
    return (
        Market.objects.select_for_update(of=("self",))
        .select_related("currency")
        .get(pk=market.pk)
    )


def _market_transition(
    market: Market,
    target: str,
    *,
    actor: User,
    audit_action: str,
    reason: str,
    state_reason: str,
    now: datetime,
) -> Market:
    """Move ``market`` (locked by the caller) to the state ``target``: save,
    audit, call the transition hooks, publish and wake the matcher on commit."""
    previous = trading_state_get(market, market.state)
    new = trading_state_get(market, target)
    market.state = target
    market.state_reason = state_reason
    market.save(update_fields=["state", "state_reason"])
    audit_record(
        actor=actor,
        action=audit_action,
        target=market,
        reason=reason,
        changes={"state": [previous.code, target]},
    )
    for hook in list(_transition_hooks):
        hook(market, previous, new, now)
    _market_publish(market)
    market_notify(market.code)
    return market


def market_set_state(
    *, market: Market, action: str, acting_user: User, reason: str = ""
) -> Market:
    """Open, halt, resume or close a market; audited (``market_<action>``),
    published on ``market.<code>``, transition hooks called, matcher woken.

    ``open`` works from any state but open and halted, ``halt`` (a reason is
    required) from any but halted and closed, ``close`` from any but closed, and
    ``resume`` only from halted: to the scheduled state when the market follows
    its schedule, else to open. A halt holds over the schedule until resumed.
    Raises ``MarketStateError`` (``invalid_market_action``, ``reason_required``)
    for an unknown action or one the current state does not allow.
    """
    if action not in MARKET_ACTIONS:
        raise MarketStateError(f"Unknown market action {action!r}.", field="action")
    if action == "halt" and not reason:
        raise MarketStateError(
            "A halt needs a reason.", field="reason", code="reason_required"
        )
    now = timezone.now()
    with transaction.atomic():
        market = _market_locked(market)
        if not MARKET_ACTIONS[action].allowed_from(market.state):
            raise MarketStateError(
                f"Cannot {action} market {market.code}: it is {market.state}."
            )
        target = MARKET_ACTIONS[action].target
        if target is None:
            target = (
                scheduled_state(market, now)[0] if market.schedule_enabled else _S.OPEN
            )
        return _market_transition(
            market,
            target,
            actor=acting_user,
            audit_action=f"market_{action}",
            reason=reason,
            state_reason=reason,
            now=now,
        )


def market_state_set(
    *, market: Market, state: str, acting_user: User, reason: str
) -> Market:
    """Put a market in any of its trading states (staff's override of the
    schedule). A reason is required; audited as ``market_state_set``. Setting
    ``halted`` is a halt (held over the schedule until resumed); any other state
    set by hand on a market that follows its schedule lasts until the schedule's
    next run moves it back (halt, or turn the schedule off, to hold it).

    Raises ``MarketStateError``: ``reason_required``, ``unknown_state`` (not one of
    the market's states), ``invalid_market_action`` (already in that state).
    """
    if not reason:
        raise MarketStateError(
            "Say why the state is set by hand.", field="reason", code="reason_required"
        )
    with transaction.atomic():
        market = _market_locked(market)
        if not TradingState.objects.filter(market=market, code=state).exists():
            raise MarketStateError(
                f"{state!r} is not a trading state of market {market.code}.",
                field="state",
                code="unknown_state",
            )
        if market.state == state:
            raise MarketStateError(f"Market {market.code} is already {state}.")
        return _market_transition(
            market,
            state,
            actor=acting_user,
            audit_action="market_state_set",
            reason=reason,
            state_reason=reason,
            now=timezone.now(),
        )


def trading_states_create_standard(market: Market) -> list[TradingState]:
    """Create the standard trading states the market lacks (``Market.State``:
    pre_open, opening_auction, open, closing_auction, closed, halted)."""
    existing = set(market.trading_states.values_list("code", flat=True))
    return TradingState.objects.bulk_create(
        standard_trading_state(market, code)
        for code in STANDARD_TRADING_STATES
        if code not in existing
    )


def market_create(
    *,
    code: str,
    name: str,
    currency: Asset,
    timezone_name: str,
    acting_user: User,
    **options: object,
) -> Market:
    """Create a market with the standard trading states; audited."""
    market = Market(
        code=code, name=name, currency=currency, timezone=timezone_name, **options
    )
    _full_clean(market)
    with transaction.atomic():
        market.save()
        trading_states_create_standard(market)
        audit_record(
            actor=acting_user,
            action="market_create",
            target=market,
            changes={"code": code},
        )
    return market


def symbol_issue(
    *,
    market: Market,
    code: str,
    name: str,
    tick_size: Decimal = Decimal("0.01"),
    lot_size: Decimal = Decimal(1),
    min_quantity: Decimal | None = None,
    scale: int = 0,
    tick_table: TickTable | None = None,
    acting_user: User,
) -> Symbol:
    """Create a security asset and list it on ``market`` as ``MARKET:CODE``
    (optionally priced on ``tick_table``, whose every tick must be a multiple of
    ``tick_size``)."""
    asset_code = f"{market.code}:{code}"
    try:
        code_validator(code)
    except ValidationError as error:
        raise RegistryError(" ".join(error.messages), field="code") from error
    with transaction.atomic():
        if Asset.objects.filter(code=asset_code).exists():
            raise RegistryError(
                f"{asset_code} already exists.", code="duplicate", field="code"
            )
        asset = Asset.objects.create(
            code=asset_code, name=name, kind=Asset.Kind.SECURITY, scale=scale
        )
        symbol = Symbol(
            market=market,
            code=code,
            name=name,
            asset=asset,
            currency=market.currency,
            tick_size=tick_size,
            lot_size=lot_size,
            min_quantity=lot_size if min_quantity is None else min_quantity,
            tick_table=tick_table,
        )
        _full_clean(symbol)
        symbol.save()
        audit_record(
            actor=acting_user,
            action="symbol_issue",
            target=symbol,
            changes={
                "symbol": symbol.identifier,
                "tick_size": str(tick_size),
                "lot_size": str(lot_size),
                **({"tick_table": tick_table.name} if tick_table else {}),
            },
        )
    return symbol


# -- symbol states ----------------------------------------------------------------


def _symbol_locked(symbol: Symbol) -> Symbol:
    """The symbol row, locked (only it: not its market)."""
    locked = Symbol.objects.select_for_update(of=("self",)).get(pk=symbol.pk)
    locked.market = (
        symbol.market
        if symbol.market.pk == locked.market_id
        else Market.objects.select_related("currency").get(pk=locked.market_id)
    )
    return locked


def _symbol_state_save(
    symbol: Symbol,
    *,
    state: str,
    reason: str,
    until: datetime | None,
    actor: User,
    audit_action: str,
    audit_reason: str,
    publish: bool = True,
) -> Symbol:
    """Set the symbol's override (locked by the caller); audit and (unless
    ``publish`` is false) publish the market's message on ``market.<code>`` on
    commit."""
    previous = symbol.trading_state
    symbol.trading_state = state
    symbol.state_reason = reason
    symbol.halted_until = until
    symbol.save(update_fields=["trading_state", "state_reason", "halted_until"])
    changes: dict[str, Any] = {"trading_state": [previous, state]}
    if until is not None:
        changes["halted_until"] = until.isoformat()
    audit_record(
        actor=actor,
        action=audit_action,
        target=symbol,
        reason=audit_reason,
        changes=changes,
    )
    if publish:
        _market_publish(symbol.market)
    return symbol


def symbol_suspend(*, symbol: Symbol, acting_user: User, reason: str) -> Symbol:
    """Suspend trading in one symbol: its state becomes ``halted`` (cancels only)
    whatever the market's state, until ``symbol_resume``. Turns a circuit
    breaker's timed halt into an open-ended one. Audited (``symbol_suspend``),
    published on ``market.<code>``, the matcher woken on commit.

    Raises ``SymbolStateError``: ``reason_required``; ``invalid_symbol_action``
    if staff already suspended it.
    """
    if not reason:
        raise SymbolStateError(
            "A suspension needs a reason.", field="reason", code="reason_required"
        )
    with transaction.atomic(durable=True):
        symbol = _symbol_locked(symbol)
        if symbol.trading_state and symbol.halted_until is None:
            raise SymbolStateError(
                f"{symbol.identifier} is already suspended ({symbol.trading_state})."
            )
        _symbol_state_save(
            symbol,
            state=_S.HALTED,
            reason=reason,
            until=None,
            actor=acting_user,
            audit_action="symbol_suspend",
            audit_reason=reason,
        )
        market_notify(symbol.market.code)
    return symbol


def symbol_resume(*, symbol: Symbol, acting_user: User, reason: str = "") -> Symbol:
    """End a symbol's own state (a suspension or a circuit breaker's halt): it
    follows its market's state again. Audited (``symbol_resume``), published on
    ``market.<code>``, the matcher woken on commit.

    Raises ``SymbolStateError`` (``invalid_symbol_action``) if the symbol has no
    state of its own.
    """
    with transaction.atomic(durable=True):
        symbol = _symbol_locked(symbol)
        if not symbol.trading_state:
            raise SymbolStateError(f"{symbol.identifier} is not suspended or halted.")
        _symbol_state_save(
            symbol,
            state="",
            reason="",
            until=None,
            actor=acting_user,
            audit_action="symbol_resume",
            audit_reason=reason,
        )
        market_notify(symbol.market.code)
    return symbol


#: (symbol, halted until, reason)
CircuitBreak = tuple[Symbol, datetime, str]


def symbol_circuit_break(*, symbol: Symbol, until: datetime, reason: str) -> Symbol:
    """Halt one symbol until ``until``: ``symbols_circuit_break`` for one."""
    return symbols_circuit_break(breaks=[(symbol, until, reason)])[0]


def symbols_circuit_break(*, breaks: Sequence[CircuitBreak]) -> list[Symbol]:
    """Halt each symbol until its instant (circuit breakers tripped): for the
    matching worker, INSIDE its own batch transaction. Returns the symbols (in the
    order given) as they are now: refresh any copies the caller caches.

    Locks the symbols' rows, in primary-key order, and nothing else but the
    ``market.<code>`` stream sequence, advanced once per market after all of
    them (stream sequences are every writer's last locks: call this once per
    batch, after the batch's balance locks). No durable transaction, no wake-up
    (the caller is the matcher). A symbol staff suspended stays suspended
    (open-ended); a running halt is only ever extended, to the later instant.
    Audited (``symbol_circuit_break``, no actor) and published on
    ``market.<code>`` on commit. ``sessions_advance`` ends a halt once its
    instant has passed; order entry and ``symbol_trading_state`` ignore it from
    that instant on.
    """
    result: dict[int, Symbol] = {}
    changed_markets: dict[int, Market] = {}
    with transaction.atomic():
        for symbol, until, reason in sorted(breaks, key=lambda b: b[0].pk):
            locked = _symbol_locked(symbol)
            result[locked.pk] = locked
            if locked.trading_state and locked.halted_until is None:
                continue  # suspended by staff: stays so until they resume it
            if locked.halted_until is not None and locked.halted_until >= until:
                continue
            _symbol_state_save(
                locked,
                state=_S.HALTED,
                reason=reason,
                until=until,
                actor=None,
                audit_action="symbol_circuit_break",
                audit_reason=reason,
                publish=False,
            )
            changed_markets[locked.market_id] = locked.market
        for market in sorted(changed_markets.values(), key=lambda m: m.code):
            _market_publish(market)
    return [result[symbol.pk] for symbol, _, _ in breaks]


# -- the schedule ------------------------------------------------------------------


@dataclass(slots=True)
class SessionsAdvanced:
    """What one ``sessions_advance`` run did."""

    #: (market code, previous state, new state)
    transitions: list[tuple[str, str, str]] = field(default_factory=list)
    #: identifiers of symbols whose circuit-breaker halt ended
    resumed: list[str] = field(default_factory=list)


def sessions_advance(*, now: datetime) -> SessionsAdvanced:
    """Move every market that follows its schedule to its scheduled state at
    ``now``, and end the circuit-breaker halts whose ``halted_until`` has passed.

    A halted market is left alone (a staff halt holds until resumed). Each market
    and symbol is changed in its own transaction under its row lock, re-checked
    under the lock, so runs may overlap or repeat: a second run changes nothing.
    Transitions are audited with no actor (``market_schedule``, reason
    "schedule"), go through the transition hooks, are published and wake the
    matcher.
    """
    done = SessionsAdvanced()
    for market in Market.objects.filter(schedule_enabled=True).order_by("code"):
        if market.state == _S.HALTED:
            continue
        target, _ = scheduled_state(market, now)
        if target != market.state:
            change = _market_advance(market, target, now)
            if change is not None:
                done.transitions.append(change)
    expired = Symbol.objects.filter(halted_until__lte=now).order_by("pk")
    for symbol in expired.select_related("market__currency"):
        if _symbol_cooling_off_end(symbol, now):
            done.resumed.append(symbol.identifier)
    return done


def _market_advance(
    market: Market, target: str, now: datetime
) -> tuple[str, str, str] | None:
    with transaction.atomic(durable=True):
        market = _market_locked(market)
        previous = market.state
        if not market.schedule_enabled or previous == _S.HALTED or previous == target:
            return None
        _market_transition(
            market,
            target,
            actor=None,
            audit_action="market_schedule",
            reason="schedule",
            state_reason="",
            now=now,
        )
    return market.code, previous, target


def _symbol_cooling_off_end(symbol: Symbol, now: datetime) -> bool:
    with transaction.atomic(durable=True):
        symbol = _symbol_locked(symbol)
        if symbol.halted_until is None or symbol.halted_until > now:
            return False
        _symbol_state_save(
            symbol,
            state="",
            reason="",
            until=None,
            actor=None,
            audit_action="symbol_resume",
            audit_reason="cooling-off ended",
        )
        market_notify(symbol.market.code)
    return True


# -- configuration -----------------------------------------------------------------


def market_timetable_set(
    *, market: Market, entries: Sequence[tuple[time, str]], acting_user: User
) -> list[MarketSession]:
    """Replace the market's regular session timetable by ``entries`` ((local start
    time, state code), any order). Audited (``market_timetable_set``). Raises
    ``RegistryError`` (field ``state`` or ``start``) for an unknown or halted state
    or a start time given twice; nothing is changed then."""
    starts = [start for start, _ in entries]
    if len(set(starts)) != len(starts):
        raise RegistryError("Two entries start at the same time.", field="start")
    with transaction.atomic():
        sessions = [
            MarketSession(market=market, start=start, state=state)
            for start, state in sorted(entries)
        ]
        for session in sessions:
            # Uniqueness is the start times' (checked above): the rows being
            # replaced would clash.
            _full_clean(session, validate_unique=False)
        MarketSession.objects.filter(market=market, special_day__isnull=True).delete()
        MarketSession.objects.bulk_create(sessions)
        audit_record(
            actor=acting_user,
            action="market_timetable_set",
            target=market,
            changes={"timetable": [f"{s.start:%H:%M:%S} {s.state}" for s in sessions]},
        )
    return sessions


def tick_table_create(
    *,
    name: str,
    bands: list[tuple[Decimal, Decimal]],
    acting_user: User,
    description: str = "",
) -> TickTable:
    """Create a tick table from ``bands`` ((from price, tick size), any order).
    Audited (``ticktable_create``). Raises ``RegistryError`` for a duplicate name,
    no bands, a band starting twice, a non-positive tick or a band that does not
    start on its own tick grid; nothing is created then."""
    if not bands:
        raise RegistryError("A tick table needs at least one band.", field="bands")
    if len({start for start, _ in bands}) != len(bands):
        raise RegistryError("Two bands start at the same price.", field="bands")
    with transaction.atomic():
        if TickTable.objects.filter(name=name).exists():
            raise RegistryError(
                f"There is already a tick table {name!r}.",
                code="duplicate",
                field="name",
            )
        table = TickTable(name=name, description=description)
        _full_clean(table)
        table.save()
        rows = [
            TickBand(table=table, from_price=start, tick_size=tick)
            for start, tick in sorted(bands)
        ]
        for row in rows:
            _full_clean(row)
        TickBand.objects.bulk_create(rows)
        audit_record(
            actor=acting_user,
            action="ticktable_create",
            target=table,
            changes={
                "name": name,
                "bands": [
                    [f"{r.from_price.normalize():f}", f"{r.tick_size.normalize():f}"]
                    for r in rows
                ],
            },
        )
    return table


def _full_clean(
    instance: Market | Symbol | MarketSession | TickTable | TickBand,
    *,
    validate_unique: bool = True,
) -> None:
    try:
        instance.full_clean(
            validate_unique=validate_unique, validate_constraints=validate_unique
        )
    except ValidationError as error:
        field, messages = next(iter(error.message_dict.items()))
        raise RegistryError(
            " ".join(messages), field="" if field == "__all__" else field
        ) from error
