"""Markets, their trading states and sessions, symbols, tick tables, the holiday
calendar, trades and stream sequence numbers."""

import zoneinfo
from collections.abc import Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Final

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from registry.models import AMOUNT, Account, Asset, DecimalOptions, FeeGroup

PRICE: Final[DecimalOptions] = {"max_digits": 20, "decimal_places": 8}

#: Market and symbol codes: upper-case letters and digits (``XSX``, ``XS01``).
code_validator = RegexValidator(
    r"^[A-Z0-9]{1,16}$", "Use 1 to 16 upper-case letters and digits."
)


class OffGridError(ValueError):
    """A price or quantity is not on its symbol's tick or lot grid."""


#: Trading state codes: lower-case letters, digits and ``_`` (``pre_open``).
state_code_validator = RegexValidator(
    r"^[a-z][a-z0-9_]{0,15}$",
    "Use 1 to 16 lower-case letters, digits and _, starting with a letter.",
)

PERCENT: Final[DecimalOptions] = {"max_digits": 6, "decimal_places": 2}


def validate_timezone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
        raise ValidationError(f"{value!r} is not a known time zone.") from error


class Market(models.Model):
    """A trading venue with its own calendar, currency, state and fee rates."""

    class State(models.TextChoices):
        """The standard trading state codes every market has (``TradingState`` rows
        created with the market). Staff may add more; ``Market.state`` holds any
        code of the market's states."""

        PRE_OPEN = "pre_open", "Pre-open"
        OPENING_AUCTION = "opening_auction", "Opening auction"
        OPEN = "open", "Open"
        CLOSING_AUCTION = "closing_auction", "Closing auction"
        CLOSED = "closed", "Closed"
        HALTED = "halted", "Halted"

    code = models.CharField(max_length=16, unique=True, validators=[code_validator])
    name = models.CharField(max_length=100)
    timezone = models.CharField(
        max_length=64, default="UTC", validators=[validate_timezone]
    )
    currency = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    #: The code of one of the market's ``TradingState`` rows.
    state = models.CharField(
        max_length=16, default=State.OPEN, validators=[state_code_validator]
    )
    state_reason = models.CharField(max_length=200, blank=True)
    #: Move the state by the market's session timetable (``sessions_advance``).
    schedule_enabled = models.BooleanField(
        default=False,
        help_text="Follow the session timetable (checked every few seconds).",
    )
    maker_fee_bps = models.DecimalField(
        max_digits=8, decimal_places=4, default=Decimal(0)
    )
    taker_fee_bps = models.DecimalField(
        max_digits=8, decimal_places=4, default=Decimal(0)
    )
    #: How far beyond the reference price a market order may fill, in percent.
    market_order_collar_percent = models.DecimalField(
        max_digits=6, decimal_places=2, default=Decimal(10)
    )
    fee_account = models.ForeignKey(
        Account, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    #: Self-trade prevention for orders that do not choose their own (the values
    #: of ``oms.models.Order.SelfTrade``).
    self_trade_prevention = models.CharField(
        max_length=16,
        default="cancel_newest",
        choices=[
            ("none", "Allow self-trades"),
            ("cancel_newest", "Cancel newest"),
            ("cancel_oldest", "Cancel oldest"),
            ("cancel_both", "Cancel both"),
        ],
    )
    #: Business days from a trade to its settlement (0: settled at the trade, T+0;
    #: equities are usually 2, T+2). Counted by ``exchange.calendar``.
    settlement_days = models.PositiveSmallIntegerField(
        default=0, validators=[MaxValueValidator(30)]
    )
    #: Static price band: limit prices further than this from the reference price
    #: (the symbol's last trade) are refused. Empty: no band.
    price_band_percent = models.DecimalField(
        **PERCENT,
        null=True,
        blank=True,
        help_text="Refuse limit prices further than this from the last trade.",
    )
    #: Dynamic band: a trade beyond this from the reference halts the symbol.
    circuit_breaker_percent = models.DecimalField(
        **PERCENT,
        null=True,
        blank=True,
        help_text="Halt a symbol whose trade would move this far from the reference.",
    )
    cooling_off_seconds = models.PositiveIntegerField(
        default=300, help_text="How long a circuit breaker halts the symbol."
    )

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(
                condition=Q(maker_fee_bps__gte=0)
                & Q(taker_fee_bps__gte=0)
                & Q(taker_fee_bps__lt=10000)
                & Q(maker_fee_bps__lt=10000),
                name="market_fee_rates_in_range",
            ),
            models.CheckConstraint(
                condition=Q(price_band_percent__isnull=True)
                | Q(price_band_percent__gt=0),
                name="market_price_band_positive",
            ),
            models.CheckConstraint(
                condition=Q(circuit_breaker_percent__isnull=True)
                | Q(circuit_breaker_percent__gt=0),
                name="market_circuit_breaker_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.code

    def clean(self) -> None:
        # A new market gets the standard states (market_create); an existing one
        # may also be in a state staff defined for it.
        if self.state and self.pk is not None:
            known = self.trading_states.filter(code=self.state).exists()
        else:
            known = self.state in Market.State.values
        if self.state and not known:
            raise ValidationError(
                {"state": f"{self.state!r} is not a trading state of this market."}
            )

    @property
    def tzinfo(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def max_fee_rate(self) -> Decimal:
        return max(self.maker_fee_bps, self.taker_fee_bps) / Decimal(10000)


BPS: Final[DecimalOptions] = {"max_digits": 8, "decimal_places": 4}


class FeeSchedule(models.Model):
    """Maker/taker rates and a minimum fee per order on a market, for one fee group
    (``fee_group`` empty: the market's default for accounts without a group
    schedule). ``min_fee`` is in the market's currency; see ``exchange.fees`` for
    how an order's fee is computed and reserved."""

    market = models.ForeignKey(
        Market, on_delete=models.CASCADE, related_name="fee_schedules"
    )
    fee_group = models.ForeignKey(
        FeeGroup,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="fee_schedules",
        help_text="Empty: the market's default schedule.",
    )
    maker_fee_bps = models.DecimalField(**BPS, default=Decimal(0))
    taker_fee_bps = models.DecimalField(**BPS, default=Decimal(0))
    #: The least an order pays once it has any fill, in the market's currency.
    min_fee = models.DecimalField(**AMOUNT, default=Decimal(0))

    class Meta:
        ordering = ["market__code", "fee_group__name"]
        constraints = [
            models.UniqueConstraint(
                fields=["market", "fee_group"],
                condition=Q(fee_group__isnull=False),
                name="fee_schedule_unique_group",
            ),
            models.UniqueConstraint(
                fields=["market"],
                condition=Q(fee_group__isnull=True),
                name="fee_schedule_one_default",
            ),
            models.CheckConstraint(
                condition=Q(maker_fee_bps__gte=0)
                & Q(taker_fee_bps__gte=0)
                & Q(maker_fee_bps__lt=10000)
                & Q(taker_fee_bps__lt=10000)
                & Q(min_fee__gte=0),
                name="fee_schedule_in_range",
            ),
        ]

    def __str__(self) -> str:
        group = self.fee_group.name if self.fee_group is not None else "default"
        return f"{self.market.code} {group}"

    def clean(self) -> None:
        errors = {}
        for name in ("maker_fee_bps", "taker_fee_bps"):
            value = getattr(self, name)
            if value is not None and not Decimal(0) <= value < Decimal(10000):
                errors[name] = "A rate is between 0 and 9999.9999 basis points."
        if self.min_fee is not None:
            if self.min_fee < 0:
                errors["min_fee"] = "The minimum fee cannot be negative."
            elif self.market_id and not self.market.currency.is_on_grid(self.min_fee):
                errors["min_fee"] = (
                    f"The minimum fee has more than {self.market.currency.scale} "
                    f"decimal places ({self.market.currency.code})."
                )
        if errors:
            raise ValidationError(errors)


class TradingState(models.Model):
    """A state a market (or one of its symbols) can be in, and what it allows.

    ``allows_place``/``allows_amend``/``allows_cancel`` are checked at order entry;
    ``allows_match`` says whether the matcher matches continuously. ``is_auction``:
    orders accumulate without matching (a call auction's book). ``uncross_on_entry``:
    entering this state from an auction state runs the auction's uncross (see
    ``exchange.trading.uncross_due``). Every market has the standard set
    (``Market.State``); staff may add states and edit the flags.
    """

    market = models.ForeignKey(
        Market, on_delete=models.CASCADE, related_name="trading_states"
    )
    code = models.CharField(max_length=16, validators=[state_code_validator])
    name = models.CharField(max_length=100)
    allows_place = models.BooleanField(default=False)
    allows_amend = models.BooleanField(default=False)
    allows_cancel = models.BooleanField(default=True)
    allows_match = models.BooleanField(default=False)
    is_auction = models.BooleanField(default=False)
    uncross_on_entry = models.BooleanField(default=False)

    class Meta:
        ordering = ["market__code", "code"]
        constraints = [
            models.UniqueConstraint(
                fields=["market", "code"], name="trading_state_unique"
            ),
            models.CheckConstraint(
                condition=~(Q(is_auction=True) & Q(allows_match=True)),
                name="trading_state_auction_does_not_match",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.market.code} {self.code}" if self.market_id else self.code

    def allows(self, action: str) -> bool:
        """Does this state allow ``action`` (place, amend, cancel or match)?"""
        return bool(getattr(self, f"allows_{action}"))


#: The standard trading states every market gets:
#: code -> (name, place, amend, cancel, match, is_auction, uncross_on_entry).
STANDARD_TRADING_STATES: dict[str, tuple[str, bool, bool, bool, bool, bool, bool]] = {
    Market.State.PRE_OPEN: ("Pre-open", True, True, True, False, True, False),
    Market.State.OPENING_AUCTION: (
        "Opening auction",
        False,
        False,
        False,
        False,
        True,
        False,
    ),
    Market.State.OPEN: ("Open", True, True, True, True, False, True),
    Market.State.CLOSING_AUCTION: (
        "Closing auction",
        True,
        True,
        True,
        False,
        True,
        False,
    ),
    Market.State.CLOSED: ("Closed", False, False, True, False, False, True),
    Market.State.HALTED: ("Halted", False, False, True, False, False, False),
}


def standard_trading_state(market: Market, code: str) -> TradingState:
    """An unsaved ``TradingState`` with the standard definition of ``code``."""
    name, place, amend, cancel, match, auction, uncross = STANDARD_TRADING_STATES[code]
    return TradingState(
        market=market,
        code=str(code),
        name=name,
        allows_place=place,
        allows_amend=amend,
        allows_cancel=cancel,
        allows_match=match,
        is_auction=auction,
        uncross_on_entry=uncross,
    )


class TickTable(models.Model):
    """Price-banded tick sizes: a price uses the band with the greatest
    ``from_price`` at or below it (below the first band, the symbol's flat
    ``tick_size``). Every band starts on its own grid, so the on-grid prices are
    exactly the multiples of the tick that applies at them."""

    name = models.CharField(max_length=100, unique=True)
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TickBand(models.Model):
    """From ``from_price`` (inclusive) up to the next band, prices are multiples
    of ``tick_size``."""

    table = models.ForeignKey(TickTable, on_delete=models.CASCADE, related_name="bands")
    from_price = models.DecimalField(**PRICE)
    tick_size = models.DecimalField(**PRICE)

    class Meta:
        ordering = ["table", "from_price"]
        constraints = [
            models.UniqueConstraint(
                fields=["table", "from_price"], name="tick_band_unique"
            ),
            models.CheckConstraint(
                condition=Q(from_price__gte=0) & Q(tick_size__gt=0),
                name="tick_band_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"from {self.from_price.normalize():f}: {self.tick_size.normalize():f}"

    def clean(self) -> None:
        if self.tick_size is not None and self.tick_size <= 0:
            raise ValidationError({"tick_size": "The tick size must be positive."})
        if self.from_price is not None and self.from_price < 0:
            raise ValidationError({"from_price": "A band cannot start below 0."})
        if self.from_price is not None and self.tick_size:
            if self.from_price % self.tick_size:
                raise ValidationError(
                    {"from_price": "A band must start on its own tick grid."}
                )


def band_for(bands: Sequence[TickBand], price: Decimal) -> TickBand | None:
    """The band (from ``bands`` sorted by ``from_price``) that ``price`` falls in."""
    found = None
    for band in bands:
        if band.from_price > price:
            break
        found = band
    return found


def tick_table_grid_error(bands: Sequence[TickBand], tick_size: Decimal) -> str:
    """Why ``bands`` cannot be used with a flat ``tick_size`` ("" if they can): the
    engine counts prices in ticks of ``tick_size``, so it must be the finest grid."""
    for band in bands:
        if band.tick_size % tick_size:
            return (
                f"The band from {band.from_price.normalize():f} has tick "
                f"{band.tick_size.normalize():f}, not a multiple of the tick size "
                f"{tick_size.normalize():f}."
            )
    return ""


class Symbol(models.Model):
    """A tradable security on a market, addressed as ``MARKET:CODE``.

    Prices are multiples of ``tick_size`` and quantities multiples of ``lot_size``;
    ``to_ticks``/``to_lots`` and their inverses are the only conversions between
    the ``Decimal`` values of the Django layers and the engine's integers.
    """

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        DELISTED = "delisted", "Delisted"

    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="symbols")
    code = models.CharField(max_length=16, validators=[code_validator])
    name = models.CharField(max_length=200)
    asset = models.OneToOneField(Asset, on_delete=models.PROTECT, related_name="symbol")
    currency = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    tick_size = models.DecimalField(**PRICE, default=Decimal("0.01"))
    lot_size = models.DecimalField(**AMOUNT, default=Decimal(1))
    min_quantity = models.DecimalField(**AMOUNT, default=Decimal(1))
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.ACTIVE
    )
    #: A code of one of the market's trading states that overrides the market's
    #: state for this symbol (``halted`` when suspended); blank: no override.
    #: The matching worker's book for the symbol is in call-auction mode (orders
    #: rest without matching until the uncross). Written by the worker only.
    book_in_auction = models.BooleanField(default=False, editable=False)
    trading_state = models.CharField(
        max_length=16, blank=True, validators=[state_code_validator]
    )
    state_reason = models.CharField(max_length=200, blank=True)
    #: Set by a circuit breaker: the override ends at this instant.
    halted_until = models.DateTimeField(null=True, blank=True)
    #: Price-banded ticks; each band's tick is a multiple of ``tick_size``.
    tick_table = models.ForeignKey(
        TickTable,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="symbols",
    )
    max_quantity = models.DecimalField(**AMOUNT, null=True, blank=True)
    min_value = models.DecimalField(**AMOUNT, null=True, blank=True)
    max_value = models.DecimalField(**AMOUNT, null=True, blank=True)
    #: Overrides the market's static price band.
    price_band_percent = models.DecimalField(**PERCENT, null=True, blank=True)

    class Meta:
        ordering = ["market__code", "code"]
        constraints = [
            models.UniqueConstraint(fields=["market", "code"], name="symbol_unique"),
            models.CheckConstraint(
                condition=Q(tick_size__gt=0)
                & Q(lot_size__gt=0)
                & Q(min_quantity__gt=0),
                name="symbol_grid_positive",
            ),
            models.CheckConstraint(
                condition=(Q(max_quantity__isnull=True) | Q(max_quantity__gt=0))
                & (Q(min_value__isnull=True) | Q(min_value__gt=0))
                & (Q(max_value__isnull=True) | Q(max_value__gt=0))
                & (Q(price_band_percent__isnull=True) | Q(price_band_percent__gt=0)),
                name="symbol_limits_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.identifier

    @property
    def identifier(self) -> str:
        return f"{self.market.code}:{self.code}"

    def clean(self) -> None:
        errors = {}
        if self.tick_size and self.lot_size and self.currency_id:
            # Every trade value (ticks x lots) must be exact in the currency.
            value_unit = self.tick_size * self.lot_size
            if not self.currency.is_on_grid(value_unit):
                errors["tick_size"] = (
                    f"tick size x lot size ({value_unit.normalize()}) is finer than "
                    f"{self.currency.code}'s smallest unit {self.currency.unit}."
                )
        if self.lot_size and self.asset_id and not self.asset.is_on_grid(self.lot_size):
            errors["lot_size"] = "The lot size is finer than the asset's scale."
        if self.min_quantity and self.lot_size and self.min_quantity % self.lot_size:
            errors["min_quantity"] = (
                "The minimum quantity must be a whole number of lots."
            )
        errors.update(self._limits_errors())
        if self.tick_table_id and self.tick_size:
            message = tick_table_grid_error(self.tick_bands, self.tick_size)
            if message:
                errors["tick_table"] = message
        if self.trading_state and self.market_id:
            if not self.market.trading_states.filter(code=self.trading_state).exists():
                errors["trading_state"] = (
                    f"{self.trading_state!r} is not a trading state of "
                    f"{self.market.code}."
                )
        if errors:
            raise ValidationError(errors)

    def _limits_errors(self) -> dict[str, str]:
        errors = {}
        if self.max_quantity is not None and self.lot_size:
            if self.max_quantity % self.lot_size:
                errors["max_quantity"] = (
                    "The maximum quantity must be a whole number of lots."
                )
            elif self.min_quantity and self.max_quantity < self.min_quantity:
                errors["max_quantity"] = "The maximum is below the minimum quantity."
        if (
            self.min_value is not None
            and self.max_value is not None
            and self.max_value < self.min_value
        ):
            errors["max_value"] = "The maximum value is below the minimum value."
        return errors

    @property
    def tick_bands(self) -> list[TickBand]:
        """The tick table's bands by ``from_price`` (none without a table). Uses a
        ``prefetch_related("tick_table__bands")`` when the caller made one."""
        if self.tick_table_id is None:
            return []
        assert self.tick_table is not None
        return sorted(self.tick_table.bands.all(), key=lambda band: band.from_price)

    def tick_at(self, price: Decimal) -> Decimal:
        """The tick size that applies at ``price``: its tick-table band's, else the
        flat ``tick_size`` (also below a table's first band)."""
        band = band_for(self.tick_bands, price)
        return band.tick_size if band is not None else self.tick_size

    def is_on_price_grid(self, price: Decimal) -> bool:
        """Is ``price`` a multiple of the tick that applies at it?"""
        return not price % self.tick_at(price)

    def price_floor(self, price: Decimal) -> Decimal:
        """The greatest price on the effective grid (tick table or flat tick) at or
        below ``price`` (0 for a price below the smallest tick)."""
        tick = self.tick_at(price)
        floored = (price / tick).to_integral_value(rounding=ROUND_FLOOR) * tick
        return self.format_price(floored)

    def price_ceiling(self, price: Decimal) -> Decimal:
        """The least price on the effective grid at or above ``price``."""
        bands = self.tick_bands
        tick = self.tick_at(price)
        ceiling = (price / tick).to_integral_value(rounding=ROUND_CEILING) * tick
        # Rounding up within a band may pass the next band's start, itself on grid.
        above = [b.from_price for b in bands if b.from_price > price]
        if above and above[0] < ceiling:
            ceiling = above[0]
        return self.format_price(ceiling)

    def to_ticks(self, price: Decimal) -> int:
        ticks, remainder = divmod(price, self.tick_size)
        if remainder:
            raise OffGridError(f"{price} is not a multiple of {self.tick_size}")
        return int(ticks)

    @property
    def price_unit(self) -> Decimal:
        """The tick size at its own precision (``0.01``, not ``0.01000000``)."""
        exponent = self.tick_size.normalize().as_tuple().exponent
        if not isinstance(exponent, int):  # 'n', 'N' or 'F': NaN or infinity
            raise ValueError(f"tick size {self.tick_size} is not finite")
        return Decimal(1).scaleb(-max(0, -exponent))

    def from_ticks(self, ticks: int) -> Decimal:
        return (self.tick_size * ticks).quantize(self.price_unit)

    def format_price(self, price: Decimal) -> Decimal:
        return price.quantize(self.price_unit)

    def to_lots(self, quantity: Decimal) -> int:
        lots, remainder = divmod(quantity, self.lot_size)
        if remainder:
            raise OffGridError(f"{quantity} is not a multiple of {self.lot_size}")
        return int(lots)

    def from_lots(self, lots: int) -> Decimal:
        return self.asset.quantize(self.lot_size * lots)

    def ticks_floor(self, price: Decimal) -> int:
        return int((price / self.tick_size).to_integral_value(rounding=ROUND_FLOOR))

    def ticks_ceiling(self, price: Decimal) -> int:
        return int((price / self.tick_size).to_integral_value(rounding=ROUND_CEILING))


class Holiday(models.Model):
    """A date on which a market does not trade."""

    market = models.ForeignKey(
        Market, on_delete=models.CASCADE, related_name="holidays"
    )
    date = models.DateField()
    name = models.CharField(max_length=100)

    class Meta:
        ordering = ["market__code", "date"]
        constraints = [
            models.UniqueConstraint(fields=["market", "date"], name="holiday_unique")
        ]

    def __str__(self) -> str:
        return f"{self.market.code} {self.date} {self.name}"


class SpecialDay(models.Model):
    """A business day with a different timetable: an early close (``close_time``:
    the regular timetable until then, closed from then on) and/or a full
    alternative timetable (``MarketSession`` rows pointing at this day). Weekends
    and holidays stay closed all day."""

    market = models.ForeignKey(
        Market, on_delete=models.CASCADE, related_name="special_days"
    )
    date = models.DateField()
    name = models.CharField(max_length=100)
    close_time = models.TimeField(
        null=True, blank=True, help_text="Local time the market closes early."
    )

    class Meta:
        ordering = ["market__code", "date"]
        constraints = [
            models.UniqueConstraint(
                fields=["market", "date"], name="special_day_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.market.code} {self.date} {self.name}"


class MarketSession(models.Model):
    """One entry of a market's daily timetable: from local time ``start`` the
    market is in ``state`` (until the next entry). Entries without
    ``special_day`` form the regular timetable of every business day; those with
    one replace it on that day."""

    market = models.ForeignKey(
        Market, on_delete=models.CASCADE, related_name="sessions"
    )
    special_day = models.ForeignKey(
        SpecialDay,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="sessions",
    )
    start = models.TimeField(help_text="Local time in the market's timezone.")
    state = models.CharField(max_length=16, validators=[state_code_validator])

    class Meta:
        ordering = ["market__code", "special_day__date", "start"]
        constraints = [
            models.UniqueConstraint(
                fields=["market", "start"],
                condition=Q(special_day__isnull=True),
                name="market_session_unique",
            ),
            models.UniqueConstraint(
                fields=["special_day", "start"],
                condition=Q(special_day__isnull=False),
                name="market_session_special_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.start:%H:%M} {self.state}"

    def clean(self) -> None:
        errors = {}
        if self.market_id and self.state:
            if self.state == Market.State.HALTED:
                errors["state"] = (
                    "A timetable cannot halt the market: halts are staff's "
                    "and hold until resumed."
                )
            elif not self.market.trading_states.filter(code=self.state).exists():
                errors["state"] = (
                    f"{self.state!r} is not a trading state of {self.market.code}."
                )
        if (
            self.special_day is not None
            and self.market_id
            and self.special_day.market_id != self.market_id
        ):
            errors["special_day"] = "The special day belongs to another market."
        if errors:
            raise ValidationError(errors)


class Trade(models.Model):
    """An execution between two orders; immutable once written.

    ``seq`` numbers the symbol's trades gaplessly from 1 (the ``trades.<symbol>``
    stream sequence). Order ids are plain integers: orders live in the ``oms`` app,
    which depends on this one.

    The one later change is a bust by staff (``exchange.busts.trade_bust``), which
    sets ``busted_at``, ``busted_by`` and ``bust_reason`` once; its ledger effect is
    reversed by new journal entries. A correction is a new trade pointing at the
    busted one through ``corrected_from``.
    """

    class Side(models.TextChoices):
        BUY = "buy", "Buy"
        SELL = "sell", "Sell"

    symbol = models.ForeignKey(Symbol, on_delete=models.PROTECT, related_name="trades")
    seq = models.BigIntegerField()
    price = models.DecimalField(**PRICE)
    quantity = models.DecimalField(**AMOUNT)
    value = models.DecimalField(**AMOUNT)
    #: The side that took liquidity; blank for a trade of an auction uncross.
    aggressor_side = models.CharField(max_length=4, choices=Side.choices, blank=True)
    buy_order_id = models.BigIntegerField(db_index=True)
    sell_order_id = models.BigIntegerField(db_index=True)
    buyer = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+")
    seller = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+")
    buyer_fee = models.DecimalField(**AMOUNT, default=Decimal(0))
    seller_fee = models.DecimalField(**AMOUNT, default=Decimal(0))
    executed_at = models.DateTimeField(db_index=True)
    busted_at = models.DateTimeField(null=True, blank=True)
    busted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    bust_reason = models.CharField(max_length=200, blank=True)
    #: The busted trade this one replaces (a staff correction), if any.
    corrected_from = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="corrections",
    )
    #: The business day the trade settles: the trade's date in the market's
    #: timezone plus the market's ``settlement_days`` (``exchange.calendar``).
    settlement_date = models.DateField()
    #: When the unsettled cash and holdings moved to available (at the trade
    #: itself on a T+0 market); empty while the trade is unsettled.
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["symbol", "seq"], name="trade_seq_unique"),
            models.CheckConstraint(
                condition=Q(quantity__gt=0) & Q(price__gt=0), name="trade_positive"
            ),
        ]
        indexes = [
            models.Index(
                fields=["settlement_date", "id"],
                name="trade_unsettled_due",
                condition=Q(settled_at__isnull=True),
            ),
            models.Index(
                fields=["seller"],
                name="trade_unsettled_seller",
                condition=Q(settled_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.symbol_id}#{self.seq} {self.quantity}@{self.price}"

    @property
    def is_busted(self) -> bool:
        return self.busted_at is not None


class StreamSequence(models.Model):
    """The last sequence number published on a stream topic (gapless per topic).

    Rows are locked (ordered by topic) and advanced in the same transaction as the
    change they announce, so a snapshot read in one transaction carries the exact
    sequence it reflects.
    """

    topic = models.CharField(max_length=100, primary_key=True)
    seq = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.topic}={self.seq}"


# The matching workers' own records live in their own module (this one is large).
from exchange.matcher_models import IsolatedRequest, MarketOwner  # noqa: E402, F401
