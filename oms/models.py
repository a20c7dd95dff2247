"""Orders, their append-only event history, and the matching inbox."""

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from exchange.models import BPS, PRICE, Market, Symbol
from registry.models import AMOUNT, Account, Asset


class OrderStatus(models.TextChoices):
    NEW = "new", "New"
    PENDING = "pending", "Pending"
    ACCEPTED = "accepted", "Accepted"
    #: A stop order parked until its trigger price is reached.
    WAITING = "waiting", "Waiting for trigger"
    WORKING = "working", "Working"
    PARTIALLY_FILLED = "partially_filled", "Partially filled"
    FILLED = "filled", "Filled"
    CANCELLED = "cancelled", "Cancelled"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired"


TERMINAL_STATUSES = frozenset(
    {
        OrderStatus.FILLED,
        OrderStatus.CANCELLED,
        OrderStatus.REJECTED,
        OrderStatus.EXPIRED,
    }
)
OPEN_STATUSES = frozenset(
    {
        OrderStatus.PENDING,
        OrderStatus.ACCEPTED,
        OrderStatus.WAITING,
        OrderStatus.WORKING,
        OrderStatus.PARTIALLY_FILLED,
    }
)
#: States in which an order rests on the book.
RESTING_STATUSES = frozenset({OrderStatus.WORKING, OrderStatus.PARTIALLY_FILLED})
#: States in which the matching engine holds the order (on the book or parked).
LIVE_STATUSES = RESTING_STATUSES | {OrderStatus.WAITING}


class Order(models.Model):
    """A client's instruction to buy or sell, and its state.

    ``held_amount`` of ``held_asset`` is what the order still has reserved (cash for
    a buy, the security for a sell); the sum over an account's open orders equals the
    ``held`` bucket of its balances.
    """

    class Side(models.TextChoices):
        BUY = "buy", "Buy"
        SELL = "sell", "Sell"

    class Type(models.TextChoices):
        LIMIT = "limit", "Limit"
        MARKET = "market", "Market"
        MARKET_TO_LIMIT = "market_to_limit", "Market to limit"
        STOP = "stop", "Stop"
        STOP_LIMIT = "stop_limit", "Stop limit"
        TRAILING_STOP = "trailing_stop", "Trailing stop"

    class TimeInForce(models.TextChoices):
        GTC = "gtc", "Good till cancelled"
        DAY = "day", "Day"
        GTD = "gtd", "Good till date"
        IOC = "ioc", "Immediate or cancel"
        FOK = "fok", "Fill or kill"

    class Trigger(models.TextChoices):
        LAST = "last", "Last trade"
        BID = "bid", "Best bid"
        ASK = "ask", "Best ask"

    class PostOnly(models.TextChoices):
        NONE = "none", "No"
        REJECT = "reject", "Reject if it would take"
        REPRICE = "reprice", "Reprice if it would take"

    class SelfTrade(models.TextChoices):
        NONE = "none", "Allow self-trades"
        CANCEL_NEWEST = "cancel_newest", "Cancel newest"
        CANCEL_OLDEST = "cancel_oldest", "Cancel oldest"
        CANCEL_BOTH = "cancel_both", "Cancel both"

    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="orders"
    )
    symbol = models.ForeignKey(Symbol, on_delete=models.PROTECT, related_name="orders")
    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="+")
    side = models.CharField(max_length=4, choices=Side.choices)
    type = models.CharField(max_length=16, choices=Type.choices)
    time_in_force = models.CharField(max_length=8, choices=TimeInForce.choices)
    #: Limit price; for market, market-to-limit, stop and trailing-stop orders the
    #: protection price they may not trade beyond.
    price = models.DecimalField(**PRICE, null=True, blank=True)
    quantity = models.DecimalField(**AMOUNT)
    #: Trigger price of a stop; for a trailing stop its current level (it moves).
    stop_price = models.DecimalField(**PRICE, null=True, blank=True)
    trigger = models.CharField(
        max_length=4, choices=Trigger.choices, default=Trigger.LAST
    )
    trail_amount = models.DecimalField(**PRICE, null=True, blank=True)
    trail_bps = models.PositiveIntegerField(null=True, blank=True)
    #: Iceberg peak size, and the part of it currently shown on the book.
    display_quantity = models.DecimalField(**AMOUNT, null=True, blank=True)
    visible_quantity = models.DecimalField(**AMOUNT, null=True, blank=True)
    post_only = models.CharField(
        max_length=8, choices=PostOnly.choices, default=PostOnly.NONE
    )
    #: Executable on entry or nothing (0: no minimum).
    min_quantity = models.DecimalField(**AMOUNT, default=Decimal(0))
    self_trade_prevention = models.CharField(
        max_length=16, choices=SelfTrade.choices, default=SelfTrade.NONE
    )
    #: One-cancels-other partner (set on both orders of the pair).
    oco_with = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    #: When a DAY or GTD order expires.
    expire_at = models.DateTimeField(null=True, blank=True)
    filled_quantity = models.DecimalField(**AMOUNT, default=Decimal(0))
    filled_value = models.DecimalField(**AMOUNT, default=Decimal(0))
    fees = models.DecimalField(**AMOUNT, default=Decimal(0))
    # The fee schedule the order was placed (and reserved) under: later changes to
    # schedules or the account's group do not apply to it (see exchange.fees).
    maker_fee_bps = models.DecimalField(**BPS, default=Decimal(0))
    taker_fee_bps = models.DecimalField(**BPS, default=Decimal(0))
    min_fee = models.DecimalField(**AMOUNT, default=Decimal(0))
    #: Sum of rate x value over the order's fills so far (unrounded); ``fees`` is
    #: max(min_fee, fee_accrued) rounded down once the order has a fill.
    fee_accrued = models.DecimalField(**AMOUNT, default=Decimal(0))
    status = models.CharField(
        max_length=20, choices=OrderStatus.choices, default=OrderStatus.PENDING
    )
    status_reason = models.CharField(max_length=64, blank=True)
    client_order_id = models.CharField(max_length=64)
    #: SHA-256 of the normalised place request (``OrderSpec.fingerprint``): what a
    #: resubmission under the same ``client_order_id`` must match. Empty for
    #: orders placed before it was kept.
    request_fingerprint = models.CharField(max_length=64, blank=True, default="")
    held_asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    held_amount = models.DecimalField(**AMOUNT, default=Decimal(0))
    #: The part of ``held_amount`` drawn from unsettled cash (accounts trading
    #: unsettled proceeds); fills spend it first, a release returns it.
    held_unsettled = models.DecimalField(**AMOUNT, default=Decimal(0))
    #: Time priority on the book: the inbox sequence at which it last entered.
    priority = models.BigIntegerField(null=True, blank=True)
    placed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "client_order_id"], name="order_client_id_unique"
            ),
            models.CheckConstraint(
                condition=Q(quantity__gt=0)
                & Q(filled_quantity__gte=0)
                & Q(filled_quantity__lte=F("quantity")),
                name="order_filled_within_quantity",
            ),
            models.CheckConstraint(
                condition=Q(held_amount__gte=0), name="order_held_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(held_unsettled__gte=0)
                & Q(held_unsettled__lte=F("held_amount")),
                name="order_held_unsettled_within_held",
            ),
        ]
        indexes = [
            models.Index(
                fields=["symbol", "side", "price"],
                name="order_open_book",
                condition=Q(status__in=["working", "partially_filled"]),
            ),
            models.Index(fields=["market", "status"], name="order_market_status"),
            models.Index(
                fields=["expire_at"],
                name="order_expiry",
                condition=Q(
                    expire_at__isnull=False,
                    status__in=[
                        "pending",
                        "accepted",
                        "waiting",
                        "working",
                        "partially_filled",
                    ],
                ),
            ),
            models.Index(fields=["account", "-id"], name="order_account_recent"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.side} {self.quantity} {self.symbol_id} {self.status}"

    @property
    def remaining_quantity(self) -> Decimal:
        return self.quantity - self.filled_quantity

    @property
    def average_price(self) -> Decimal | None:
        if not self.filled_quantity:
            return None
        return self.filled_value / self.filled_quantity

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


#: Types whose ``price`` is the client's limit.
LIMIT_TYPES = frozenset({Order.Type.LIMIT, Order.Type.STOP_LIMIT})
#: Types that take no price: the OMS gives them a protection price.
PROTECTED_TYPES = frozenset(
    {
        Order.Type.MARKET,
        Order.Type.MARKET_TO_LIMIT,
        Order.Type.STOP,
        Order.Type.TRAILING_STOP,
    }
)
STOP_TYPES = frozenset(
    {Order.Type.STOP, Order.Type.STOP_LIMIT, Order.Type.TRAILING_STOP}
)


class OrderEvent(models.Model):
    """One transition of an order's state (append-only)."""

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="events")
    from_status = models.CharField(max_length=20, choices=OrderStatus.choices)
    to_status = models.CharField(max_length=20, choices=OrderStatus.choices)
    reason = models.CharField(max_length=64, blank=True)
    fill_quantity = models.DecimalField(**AMOUNT, null=True, blank=True)
    fill_price = models.DecimalField(**PRICE, null=True, blank=True)
    trade_id = models.BigIntegerField(null=True, blank=True)
    acting_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"order {self.order_id}: {self.from_status} -> {self.to_status}"


class OrderRequest(models.Model):
    """The matching inbox: place and cancel requests, taken in ``id`` order.

    A request is written in the same transaction as the change that caused it and
    marked processed in the matching worker's batch transaction.
    """

    class Kind(models.TextChoices):
        PLACE = "place", "Place"
        CANCEL = "cancel", "Cancel"
        AMEND = "amend", "Amend"
        EXPIRE = "expire", "Expire"

    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="+")
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="requests")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    #: An amend's new total quantity, limit (or protection) price and stop price.
    quantity = models.DecimalField(**AMOUNT, null=True, blank=True)
    price = models.DecimalField(**PRICE, null=True, blank=True)
    stop_price = models.DecimalField(**PRICE, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # At most one cancel or expiry waits per order: queueing one needs no
            # lock on the order (a duplicate is dropped, ON CONFLICT DO NOTHING).
            models.UniqueConstraint(
                fields=["order"],
                condition=Q(kind__in=["cancel", "expire"], processed_at__isnull=True),
                name="order_request_one_cancel_waiting",
            )
        ]
        indexes = [
            models.Index(
                fields=["market", "id"],
                name="order_request_pending",
                condition=Q(processed_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} order {self.order_id}"
