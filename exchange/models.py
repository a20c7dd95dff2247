"""Markets, symbols, the holiday calendar, trades and stream sequence numbers."""

import zoneinfo
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from registry.models import AMOUNT, Account, Asset, FeeGroup

PRICE = {"max_digits": 20, "decimal_places": 8}

#: Market and symbol codes: upper-case letters and digits (``XSX``, ``XS01``).
code_validator = RegexValidator(
    r"^[A-Z0-9]{1,16}$", "Use 1 to 16 upper-case letters and digits."
)


class OffGridError(ValueError):
    """A price or quantity is not on its symbol's tick or lot grid."""


def validate_timezone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
        raise ValidationError(f"{value!r} is not a known time zone.") from error


class Market(models.Model):
    """A trading venue with its own calendar, currency, state and fee rates."""

    class State(models.TextChoices):
        PRE_OPEN = "pre_open", "Pre-open"
        OPEN = "open", "Open"
        HALTED = "halted", "Halted"
        CLOSED = "closed", "Closed"

    code = models.CharField(max_length=16, unique=True, validators=[code_validator])
    name = models.CharField(max_length=100)
    timezone = models.CharField(
        max_length=64, default="UTC", validators=[validate_timezone]
    )
    currency = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    state = models.CharField(max_length=16, choices=State.choices, default=State.OPEN)
    state_reason = models.CharField(max_length=200, blank=True)
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

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(
                condition=Q(maker_fee_bps__gte=0)
                & Q(taker_fee_bps__gte=0)
                & Q(taker_fee_bps__lt=10000)
                & Q(maker_fee_bps__lt=10000),
                name="market_fee_rates_in_range",
            )
        ]

    def __str__(self) -> str:
        return self.code

    @property
    def tzinfo(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def max_fee_rate(self) -> Decimal:
        return max(self.maker_fee_bps, self.taker_fee_bps) / Decimal(10000)


BPS = {"max_digits": 8, "decimal_places": 4}


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
        group = self.fee_group.name if self.fee_group_id else "default"
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
        if errors:
            raise ValidationError(errors)

    def to_ticks(self, price: Decimal) -> int:
        ticks, remainder = divmod(price, self.tick_size)
        if remainder:
            raise OffGridError(f"{price} is not a multiple of {self.tick_size}")
        return int(ticks)

    @property
    def price_unit(self) -> Decimal:
        """The tick size at its own precision (``0.01``, not ``0.01000000``)."""
        places = max(0, -self.tick_size.normalize().as_tuple().exponent)
        return Decimal(1).scaleb(-places)

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
