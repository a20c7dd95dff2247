"""Exchange writes: markets, symbols, holidays and market control (all audited)."""

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from exchange.models import Market, Symbol, code_validator
from exchange.streams import publish_on_commit, stream_advance, stream_message
from exchange.wakeup import market_notify
from registry.models import Asset
from registry.services import RegistryError, User, audit_record

#: action -> (states it may be taken from, resulting state)
MARKET_ACTIONS: dict[str, tuple[frozenset[str], str]] = {
    "open": (
        frozenset({Market.State.CLOSED, Market.State.PRE_OPEN}),
        Market.State.OPEN,
    ),
    "halt": (
        frozenset({Market.State.OPEN, Market.State.PRE_OPEN}),
        Market.State.HALTED,
    ),
    "resume": (frozenset({Market.State.HALTED}), Market.State.OPEN),
    "close": (
        frozenset({Market.State.OPEN, Market.State.HALTED, Market.State.PRE_OPEN}),
        Market.State.CLOSED,
    ),
}


class MarketStateError(RegistryError):
    code = "invalid_market_action"


def market_topic(market: Market) -> str:
    return f"market.{market.code}"


def market_to_wire(market: Market) -> dict[str, object]:
    return {
        "code": market.code,
        "name": market.name,
        "timezone": market.timezone,
        "currency": market.currency.code,
        "state": market.state,
        "state_reason": market.state_reason,
        "trading_date": timezone.now().astimezone(market.tzinfo).date().isoformat(),
    }


def market_set_state(
    *, market: Market, action: str, acting_user: User, reason: str = ""
) -> Market:
    """Open, halt, resume or close a market; audited, published on ``market.<code>``.

    Raises ``MarketStateError`` for an unknown action or one the current state does
    not allow (e.g. resuming a market that is not halted). Halting stops matching
    at the next batch; cancels are still carried out while halted.
    """
    if action not in MARKET_ACTIONS:
        raise MarketStateError(f"Unknown market action {action!r}.", field="action")
    allowed_from, target = MARKET_ACTIONS[action]
    with transaction.atomic():
        market = (
            Market.objects.select_for_update()
            .select_related("currency")
            .get(pk=market.pk)
        )
        if market.state not in allowed_from:
            raise MarketStateError(
                f"Cannot {action} market {market.code}: it is {market.state}."
            )
        if action == "halt" and not reason:
            raise MarketStateError(
                "A halt needs a reason.", field="reason", code="reason_required"
            )
        previous = market.state
        market.state = target
        market.state_reason = reason
        market.save(update_fields=["state", "state_reason"])
        audit_record(
            actor=acting_user,
            action=f"market_{action}",
            target=market,
            reason=reason,
            changes={"state": [previous, target]},
        )
        topic = market_topic(market)
        seq = stream_advance({topic: 1})[topic]
        publish_on_commit([stream_message(topic, seq, market_to_wire(market))])
        market_notify(market.code)
    return market


def market_create(
    *,
    code: str,
    name: str,
    currency: Asset,
    timezone_name: str,
    acting_user: User,
    **options: object,
) -> Market:
    market = Market(
        code=code, name=name, currency=currency, timezone=timezone_name, **options
    )
    _full_clean(market)
    with transaction.atomic():
        market.save()
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
    acting_user: User,
) -> Symbol:
    """Create a security asset and list it on ``market`` as ``MARKET:CODE``."""
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
            },
        )
    return symbol


def _full_clean(instance: Market | Symbol) -> None:
    try:
        instance.full_clean(validate_unique=True)
    except ValidationError as error:
        field, messages = next(iter(error.message_dict.items()))
        raise RegistryError(
            " ".join(messages), field="" if field == "__all__" else field
        ) from error
