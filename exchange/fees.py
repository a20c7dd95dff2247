"""Fees: which rates an order pays, how its fee accrues fill by fill, what a buy
reserves for it, and the staff services that edit fee groups and schedules.

Definitions (amounts in the market's currency):

- **Rates.** An order pays the rates it was placed under (copied onto the order at
  placement, so later edits of schedules or of the account's group never change an
  open order): the schedule of the account's fee group on the market, else the
  market's default schedule, else the market's own ``maker_fee_bps`` /
  ``taker_fee_bps`` with no minimum. A fill's rate is the taker rate for the
  aggressor's order and the maker rate for the resting order, in basis points.
- **Accrued fee.** ``accrued`` = sum over the order's fills of rate x fill value,
  unrounded (kept to 10 decimal places, rounded down; exact for currencies of up to
  2 places).
- **Cumulative fee.** Once an order has any fill, its cumulative fee is
  ``max(min_fee, accrued)`` rounded down to the currency: the minimum is per order
  execution (a retail broker's "minimum per trade"), not per fill.
- **Fee of a fill** = cumulative fee after the fill minus the fees already charged
  to the order, so the fills' fees always add up to exactly the order's cumulative
  fee. A sell pays its fee out of the fill's proceeds; a fee larger than the
  proceeds is capped at them, and later fills of the same order pay the shortfall
  as far as their own proceeds allow (so a sell's fees never exceed its cumulative
  fee, and no fill makes a seller pay in).
- **Buy reservation** for ``quantity`` at ``price`` (the limit, or the protection
  price of a market order), given what the order has accrued and been charged:
  ``price x quantity + floor(max(min_fee, accrued + max_rate x price x quantity))
  - charged``, where max_rate is the larger of the maker and taker rates. It is
  the exact worst case: every fill is at or below ``price`` and at a rate at most
  max_rate, and the rounding is the one the charge uses. A new order has accrued
  and charged nothing; after each fill the matching worker keeps exactly this
  figure for the remaining quantity and releases the rest (price improvement, a
  maker rate, a minimum already paid).
- **Correction** of a trade (``exchange.busts.trade_correct``): each side pays by
  its order's pinned rates and minimum, the correction counted as the order's fill
  in place of the busted trade - cumulative fee over the order's trades that stand
  and the correction, minus what those other trades charged.
"""

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q

from exchange.models import FeeSchedule, Market
from registry.models import Account, Asset, FeeGroup
from registry.services import RegistryError, User, audit_record

BPS_PER_UNIT = Decimal(10000)
#: The precision of ``Order.fee_accrued`` (NUMERIC(30, 10)).
ACCRUED_UNIT = Decimal("1e-10")


@dataclass(frozen=True, slots=True)
class FeeRates:
    """Maker/taker rates in basis points and the minimum fee per order."""

    maker_fee_bps: Decimal
    taker_fee_bps: Decimal
    min_fee: Decimal = Decimal(0)

    @property
    def max_rate(self) -> Decimal:
        return max(self.maker_fee_bps, self.taker_fee_bps) / BPS_PER_UNIT

    def rate(self, *, is_taker: bool) -> Decimal:
        return (self.taker_fee_bps if is_taker else self.maker_fee_bps) / BPS_PER_UNIT

    def as_order_fields(self) -> dict[str, Decimal]:
        """The ``Order`` fields that pin these rates on an order."""
        return {
            "maker_fee_bps": self.maker_fee_bps,
            "taker_fee_bps": self.taker_fee_bps,
            "min_fee": self.min_fee,
        }


def order_fee_rates(order: Any) -> FeeRates:
    """The rates pinned on an ``oms.Order`` at placement."""
    return FeeRates(order.maker_fee_bps, order.taker_fee_bps, order.min_fee)


def fee_schedule_for(*, market: Market, account: Account) -> FeeSchedule | None:
    """The schedule that applies to ``account`` on ``market``: its group's, else
    the market's default; ``None`` if the market has neither."""
    wanted = Q(fee_group__isnull=True)
    if account.fee_group_id:
        wanted |= Q(fee_group_id=account.fee_group_id)
    schedules = {
        schedule.fee_group_id: schedule
        for schedule in FeeSchedule.objects.filter(wanted, market=market)
    }
    if account.fee_group_id and account.fee_group_id in schedules:
        return schedules[account.fee_group_id]
    return schedules.get(None)


def fee_rates_for(*, market: Market, account: Account) -> FeeRates:
    """The rates an order of ``account`` on ``market`` is placed under (see the
    module docstring for the resolution order)."""
    schedule = fee_schedule_for(market=market, account=account)
    if schedule is None:
        return FeeRates(market.maker_fee_bps, market.taker_fee_bps, Decimal(0))
    return FeeRates(schedule.maker_fee_bps, schedule.taker_fee_bps, schedule.min_fee)


def fee_cumulative(*, rates: FeeRates, accrued: Decimal, currency: Asset) -> Decimal:
    """An order's total fee once it has a fill: max(min_fee, accrued), rounded
    down to the currency."""
    return currency.quantize(max(rates.min_fee, accrued))


def fill_fee(
    *,
    rates: FeeRates,
    is_taker: bool,
    value: Decimal,
    accrued: Decimal,
    charged: Decimal,
    currency: Asset,
    proceeds_cap: Decimal | None = None,
) -> tuple[Decimal, Decimal]:
    """The fee of one fill of ``value`` and the order's accrued fee after it.

    ``accrued`` and ``charged`` are the order's figures before the fill. For a sell
    pass ``proceeds_cap`` (the fill's value): the fee never exceeds it.
    """
    accrued_after = (accrued + rates.rate(is_taker=is_taker) * value).quantize(
        ACCRUED_UNIT, rounding=ROUND_FLOOR
    )
    fee = fee_cumulative(rates=rates, accrued=accrued_after, currency=currency)
    fee -= charged
    if proceeds_cap is not None:
        fee = min(fee, proceeds_cap)
    return max(fee, Decimal(0)), accrued_after


def buy_cash_needed(
    *,
    rates: FeeRates,
    price: Decimal,
    quantity: Decimal,
    currency: Asset,
    accrued: Decimal = Decimal(0),
    charged: Decimal = Decimal(0),
) -> Decimal:
    """The most cash a buy of ``quantity`` at up to ``price`` can still consume,
    fees included, given the order's accrued and charged fees so far (the exact
    worst case; see the module docstring)."""
    value = currency.quantize(price * quantity)
    worst = fee_cumulative(
        rates=rates, accrued=accrued + rates.max_rate * value, currency=currency
    )
    return value + worst - charged


def fee_estimate(
    *, rates: FeeRates, value: Decimal, is_taker: bool | None, currency: Asset
) -> Decimal:
    """The fee of an order of ``value`` filled in full at one rate: the taker
    rate (``is_taker=True``), the maker rate, or the worst case (``None``)."""
    rate = rates.max_rate if is_taker is None else rates.rate(is_taker=is_taker)
    return fee_cumulative(rates=rates, accrued=rate * value, currency=currency)


# -- staff services -------------------------------------------------------------------


def _clean(instance: FeeGroup | FeeSchedule) -> None:
    try:
        instance.full_clean(validate_unique=True, validate_constraints=True)
    except ValidationError as error:
        field, messages = next(iter(error.message_dict.items()))
        raise RegistryError(
            " ".join(messages),
            code="invalid_fee_schedule"
            if isinstance(instance, FeeSchedule)
            else "invalid_fee_group",
            field="" if field == "__all__" else field,
        ) from error


def _changes(instance: Any, fields: list[str], before: Any) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for name in fields:
        new = getattr(instance, name)
        old = None if before is None else getattr(before, name)
        if before is None or old != new:
            changes[name] = _text(new) if before is None else [_text(old), _text(new)]
    return changes


def _text(value: object) -> str | None:
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    return None if value is None else str(value)


def fee_group_save(
    *, fee_group: FeeGroup, acting_user: User, reason: str = ""
) -> FeeGroup:
    """Create or update a fee group (validated, audited). Raises ``RegistryError``
    (``invalid_fee_group``, e.g. a duplicate name) and saves nothing then."""
    _clean(fee_group)
    with transaction.atomic():
        before = (
            FeeGroup.objects.select_for_update()
            .filter(pk=fee_group.pk)
            .order_by()
            .first()
            if fee_group.pk
            else None
        )
        fee_group.save()
        changes = _changes(fee_group, ["name", "description"], before)
        if changes:
            audit_record(
                actor=acting_user,
                action="fee_group_create" if before is None else "fee_group_change",
                target=fee_group,
                reason=reason,
                changes=changes,
            )
    return fee_group


SCHEDULE_FIELDS = ["fee_group_id", "maker_fee_bps", "taker_fee_bps", "min_fee"]


def fee_schedule_save(
    *, schedule: FeeSchedule, acting_user: User, reason: str = ""
) -> FeeSchedule:
    """Create or update a fee schedule (validated, audited).

    Applies to orders placed from then on; open orders keep the rates they were
    placed (and reserved) under. Raises ``RegistryError`` (``invalid_fee_schedule``:
    a rate out of range, a minimum off the currency's grid or negative, a second
    schedule for the same market and group) and saves nothing then.
    """
    _clean(schedule)
    with transaction.atomic():
        before = (
            FeeSchedule.objects.select_for_update(of=("self",))
            .filter(pk=schedule.pk)
            .order_by()
            .first()
            if schedule.pk
            else None
        )
        if before is not None and before.market_id != schedule.market_id:
            raise RegistryError(
                "A schedule cannot move to another market.",
                code="invalid_fee_schedule",
                field="market",
            )
        schedule.save()
        changes = _changes(schedule, SCHEDULE_FIELDS, before)
        changes["market"] = schedule.market.code
        audit_record(
            actor=acting_user,
            action="fee_schedule_create" if before is None else "fee_schedule_change",
            target=schedule,
            reason=reason,
            changes=changes,
        )
    return schedule


def fee_schedule_delete(
    *, schedule: FeeSchedule, acting_user: User, reason: str = ""
) -> None:
    """Delete a schedule (audited); orders placed afterwards fall back to the next
    rule of the resolution order."""
    with transaction.atomic():
        audit_record(
            actor=acting_user,
            action="fee_schedule_delete",
            target=schedule,
            reason=reason,
            changes={
                "deleted": str(schedule),
                **{name: _text(getattr(schedule, name)) for name in SCHEDULE_FIELDS},
            },
        )
        schedule.delete()


def fee_group_delete(
    *, fee_group: FeeGroup, acting_user: User, reason: str = ""
) -> None:
    """Delete a fee group no account or schedule uses (audited); raises
    ``RegistryError`` (``fee_group_in_use``) otherwise."""
    with transaction.atomic():
        if (
            Account.objects.filter(fee_group=fee_group).exists()
            or FeeSchedule.objects.filter(fee_group=fee_group).exists()
        ):
            raise RegistryError(
                f"Fee group {fee_group.name} is in use by accounts or schedules.",
                code="fee_group_in_use",
            )
        audit_record(
            actor=acting_user,
            action="fee_group_delete",
            target=fee_group,
            reason=reason,
            changes={"deleted": fee_group.name},
        )
        fee_group.delete()
