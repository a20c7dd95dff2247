"""Market data: security summaries (L1), candles, news, watchlists and scans."""

from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q

from exchange.models import PRICE, Symbol
from registry.models import AMOUNT


class SecuritySummary(models.Model):
    """The level-1 picture of a symbol for its current trading date.

    Updated by the matching worker in the same transaction as the trades and book
    changes it reflects; ``trading_date`` rolls over (previous close = last) on the
    first trade of a new date in the market's timezone.
    """

    symbol = models.OneToOneField(
        Symbol, on_delete=models.CASCADE, primary_key=True, related_name="summary"
    )
    trading_date = models.DateField(null=True, blank=True)
    last = models.DecimalField(**PRICE, null=True, blank=True)
    last_quantity = models.DecimalField(**AMOUNT, null=True, blank=True)
    last_trade_at = models.DateTimeField(null=True, blank=True)
    open = models.DecimalField(**PRICE, null=True, blank=True)
    high = models.DecimalField(**PRICE, null=True, blank=True)
    low = models.DecimalField(**PRICE, null=True, blank=True)
    previous_close = models.DecimalField(**PRICE, null=True, blank=True)
    volume = models.DecimalField(**AMOUNT, default=Decimal(0))
    value_traded = models.DecimalField(**AMOUNT, default=Decimal(0))
    trades = models.PositiveIntegerField(default=0)
    best_bid = models.DecimalField(**PRICE, null=True, blank=True)
    best_bid_quantity = models.DecimalField(**AMOUNT, null=True, blank=True)
    best_bid_orders = models.PositiveIntegerField(default=0)
    best_ask = models.DecimalField(**PRICE, null=True, blank=True)
    best_ask_quantity = models.DecimalField(**AMOUNT, null=True, blank=True)
    best_ask_orders = models.PositiveIntegerField(default=0)
    #: The symbol's book collects a call auction: the uncross it would run now
    #: (indicative price, matched quantity, surplus and its side).
    in_auction = models.BooleanField(default=False)
    indicative_price = models.DecimalField(**PRICE, null=True, blank=True)
    indicative_quantity = models.DecimalField(**AMOUNT, null=True, blank=True)
    indicative_surplus = models.DecimalField(**AMOUNT, null=True, blank=True)
    indicative_surplus_side = models.CharField(max_length=4, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "security summaries"

    def __str__(self) -> str:
        return f"{self.symbol_id} last {self.last}"

    @property
    def vwap(self) -> Decimal | None:
        return self.value_traded / self.volume if self.volume else None

    @property
    def change(self) -> Decimal | None:
        if self.last is None or self.previous_close is None:
            return None
        return self.last - self.previous_close

    @property
    def change_percent(self) -> Decimal | None:
        change = self.change
        if change is None or not self.previous_close:
            return None
        return change * 100 / self.previous_close


class Interval(models.TextChoices):
    M1 = "1m", "1 minute"
    M5 = "5m", "5 minutes"
    M15 = "15m", "15 minutes"
    M30 = "30m", "30 minutes"
    H1 = "1h", "1 hour"
    D1 = "1d", "1 day"


INTERVAL_LENGTH = {
    Interval.M1: timedelta(minutes=1),
    Interval.M5: timedelta(minutes=5),
    Interval.M15: timedelta(minutes=15),
    Interval.M30: timedelta(minutes=30),
    Interval.H1: timedelta(hours=1),
    Interval.D1: timedelta(days=1),
}


class Candle(models.Model):
    """An OHLCV bar, built incrementally from trades.

    ``start`` is aligned to the market's local clock: intraday bars at multiples of
    the interval from local midnight, daily bars at local midnight (stored in UTC).
    """

    symbol = models.ForeignKey(Symbol, on_delete=models.CASCADE, related_name="candles")
    interval = models.CharField(max_length=4, choices=Interval.choices)
    start = models.DateTimeField()
    open = models.DecimalField(**PRICE)
    high = models.DecimalField(**PRICE)
    low = models.DecimalField(**PRICE)
    close = models.DecimalField(**PRICE)
    volume = models.DecimalField(**AMOUNT)
    value = models.DecimalField(**AMOUNT)
    trades = models.PositiveIntegerField()
    #: The last trade folded in (per-symbol trade ``seq``): makes folding idempotent.
    last_trade_seq = models.BigIntegerField()

    class Meta:
        ordering = ["symbol", "interval", "start"]
        constraints = [
            models.UniqueConstraint(
                fields=["symbol", "interval", "start"], name="candle_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.symbol_id} {self.interval} {self.start:%Y-%m-%d %H:%M}"


class NewsItem(models.Model):
    """A news story, optionally price sensitive, about zero or more symbols."""

    class Priority(models.IntegerChoices):
        LOW = 1, "Low"
        NORMAL = 2, "Normal"
        HIGH = 3, "High"
        URGENT = 4, "Urgent"

    source = models.CharField(max_length=100)
    headline = models.CharField(max_length=300)
    body = models.TextField(blank=True)
    priority = models.PositiveSmallIntegerField(
        choices=Priority.choices, default=Priority.NORMAL
    )
    is_price_sensitive = models.BooleanField(default=False)
    symbols = models.ManyToManyField(Symbol, blank=True, related_name="news")
    published_at = models.DateTimeField(db_index=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )

    class Meta:
        ordering = ["-published_at", "-id"]

    def __str__(self) -> str:
        return self.headline


class Watchlist(models.Model):
    """An ordered list of symbols: a user's own, or system-wide (``owner`` empty),
    which clients may read and copy but not change."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="watchlists",
    )
    name = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "name"], name="watchlist_name_unique_per_owner"
            ),
            models.UniqueConstraint(
                fields=["name"],
                condition=Q(owner__isnull=True),
                name="watchlist_system_name_unique",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_system(self) -> bool:
        return self.owner_id is None


class WatchlistMember(models.Model):
    watchlist = models.ForeignKey(
        Watchlist, on_delete=models.CASCADE, related_name="members"
    )
    symbol = models.ForeignKey(Symbol, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveIntegerField()

    class Meta:
        ordering = ["watchlist", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["watchlist", "symbol"], name="watchlist_member_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.watchlist_id}#{self.position} {self.symbol_id}"


class Scan(models.Model):
    """Criteria over level-1 fields, e.g. ``change_percent > 5 and volume > 1000``.

    System scans (``owner`` empty) are visible to everyone. ``matches`` holds the
    symbols that met the criteria at the last evaluation, so changes can be
    announced as additions and removals.
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="scans",
    )
    name = models.CharField(max_length=100)
    criteria = models.CharField(max_length=500)
    #: For ranked system scans (top gainers...): order by this L1 field, keep ``limit``.
    order_by = models.CharField(max_length=40, blank=True)
    limit = models.PositiveIntegerField(null=True, blank=True)
    matches = models.ManyToManyField(Symbol, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return f"{self.name}: {self.criteria}"
