"""The registry: assets, accounts, who may use them, and a double-entry ledger.

Money and quantities are ``Decimal`` at rest (``NUMERIC(30, 10)``), quantized to the
asset's own scale at the one point where an amount is created (``Asset.quantize``).
"""

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Final, TypedDict

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone


class DecimalOptions(TypedDict):
    """A ``DecimalField``'s precision, unpacked into it (``DecimalField(**AMOUNT)``).

    A TypedDict rather than a plain dict so that mypy checks the unpacked keywords
    against ``DecimalField``'s signature, while django-stubs still sees the call's
    own ``null=True`` and types such a field as optional.
    """

    max_digits: int
    decimal_places: int


AMOUNT: Final[DecimalOptions] = {"max_digits": 30, "decimal_places": 10}


class Asset(models.Model):
    """A currency or a security token; ``scale`` is its number of decimal places."""

    class Kind(models.TextChoices):
        CURRENCY = "currency", "Currency"
        SECURITY = "security", "Security"

    code = models.CharField(max_length=40, unique=True)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    scale = models.PositiveSmallIntegerField(default=2)

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(
                condition=Q(scale__lte=10), name="asset_scale_at_most_10"
            )
        ]

    def __str__(self) -> str:
        return self.code

    @property
    def unit(self) -> Decimal:
        """The smallest representable amount, e.g. ``0.01`` for a scale of 2."""
        return Decimal(1).scaleb(-self.scale)

    def quantize(self, amount: Decimal, rounding: str = ROUND_FLOOR) -> Decimal:
        return amount.quantize(self.unit, rounding=rounding)

    def quantize_up(self, amount: Decimal) -> Decimal:
        return amount.quantize(self.unit, rounding=ROUND_CEILING)

    def is_on_grid(self, amount: Decimal) -> bool:
        return amount == amount.quantize(self.unit)


class FeeGroup(models.Model):
    """A fee tier: accounts in the group pay the group's fee schedule on each market
    that has one (``exchange.FeeSchedule``), else the market's default."""

    name = models.CharField(max_length=100, unique=True)
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Account(models.Model):
    """A client account, or one of the operator's own system accounts.

    System accounts are the other side of money entering and leaving the platform
    (the omnibus bank account, security issuance) and the operator's revenue; they
    may run negative balances, client accounts never do.
    """

    class Kind(models.TextChoices):
        CLIENT = "client", "Client"
        OMNIBUS = "omnibus", "Operator omnibus (external cash)"
        ISSUANCE = "issuance", "Security issuance"
        FEES = "fees", "Fee revenue"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        CLOSED = "closed", "Closed"

    number = models.CharField(max_length=32, unique=True)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CLIENT)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.ACTIVE
    )
    currency = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    users = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="AccountAccess", related_name="accounts"
    )
    #: The fee tier; ``None``: the markets' default schedules.
    fee_group = models.ForeignKey(
        FeeGroup,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="accounts",
    )
    #: Buying power for buys includes unsettled sale proceeds (holds draw from
    #: available cash first, then from unsettled cash).
    trade_unsettled_proceeds = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["number"]

    def __str__(self) -> str:
        return f"{self.number} {self.name}"

    @property
    def is_system(self) -> bool:
        return self.kind != self.Kind.CLIENT


class WithdrawalLimit(models.Model):
    """The most an account may withdraw of one asset per operator day.

    The day is the calendar day in ``settings.OPERATOR_TIMEZONE``; pending and
    completed withdrawals of that asset count, those of other assets do not. An
    asset with no row has no limit.
    """

    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="withdrawal_limits"
    )
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    daily_limit = models.DecimalField(
        **AMOUNT,
        validators=[MinValueValidator(Decimal(0))],
        help_text="Per day in the operator's time zone, in this asset.",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "asset"], name="withdrawal_limit_unique_asset"
            ),
            models.CheckConstraint(
                condition=Q(daily_limit__gte=0),
                name="withdrawal_limit_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.account.number} {self.asset}: {self.daily_limit} a day"


class AccountAccess(models.Model):
    """Who may use an account, and how: owners and traders trade, viewers read."""

    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        TRADER = "trader", "Trader"
        VIEWER = "viewer", "Viewer"

    TRADING_ROLES = (Role.OWNER, Role.TRADER)

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="account_access",
    )
    account = models.ForeignKey(
        Account, on_delete=models.CASCADE, related_name="access"
    )
    role = models.CharField(max_length=16, choices=Role.choices)

    class Meta:
        verbose_name_plural = "account access"
        constraints = [
            models.UniqueConstraint(
                fields=["user", "account"], name="account_access_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.role} of {self.account.number}"

    @property
    def may_trade(self) -> bool:
        return self.role in self.TRADING_ROLES


class Bucket(models.TextChoices):
    """The sub-ledgers of an (account, asset) position."""

    AVAILABLE = "available", "Available"
    HELD = "held", "Held"
    UNSETTLED = "unsettled", "Unsettled"


class JournalEntry(models.Model):
    """One balanced, immutable ledger transaction: its postings sum to zero per asset.

    It says what caused it (``reference``: ``order:12``, ``trade:7``,
    ``account:3``, ...), who (``acting_user``, empty for the matching worker and
    batch jobs) and why (``reason``, free text; empty where the kind and reference
    say it all, e.g. the matcher's trades and releases).
    """

    class Kind(models.TextChoices):
        DEPOSIT = "deposit", "Deposit"
        WITHDRAWAL = "withdrawal", "Withdrawal"
        ISSUE = "issue", "Security issue"
        HOLD = "hold", "Hold for an order"
        RELEASE = "release", "Release of a hold"
        TRADE = "trade", "Trade"
        BUST = "bust", "Trade bust"
        SETTLE = "settle", "Settlement of a trade"
        TRANSFER = "transfer", "Security transfer"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    reason = models.CharField(max_length=200, blank=True)
    #: What caused the entry, e.g. ``order:12`` or ``trade:7``.
    reference = models.CharField(max_length=64, blank=True, db_index=True)
    acting_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )

    class Meta:
        verbose_name_plural = "journal entries"
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} {self.reference}"


class Posting(models.Model):
    """One line of a journal entry: a signed amount of an asset to an account bucket.

    ``cost_delta`` is the change the entry made to the cost base of the account's
    position in the asset (average-cost method, in the trading currency; zero for
    most lines), so the cost base at any past instant is a sum of postings like the
    quantities are. A line may carry a cost change with no amount (``amount`` 0),
    never neither.
    """

    entry = models.ForeignKey(
        JournalEntry, on_delete=models.PROTECT, related_name="postings"
    )
    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="postings"
    )
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    bucket = models.CharField(max_length=16, choices=Bucket.choices)
    amount = models.DecimalField(**AMOUNT)
    cost_delta = models.DecimalField(**AMOUNT, default=Decimal(0))

    class Meta:
        indexes = [models.Index(fields=["account", "asset", "entry"])]
        constraints = [
            models.CheckConstraint(
                condition=~Q(amount=0) | ~Q(cost_delta=0),
                name="posting_amount_or_cost_not_zero",
            )
        ]

    def __str__(self) -> str:
        return f"{self.account.number} {self.asset} {self.bucket} {self.amount}"


class Balance(models.Model):
    """The stored position of an account in one asset, equal to its ledger postings.

    ``cost`` is the cost base of a security position in its trading currency
    (average-cost method); ``average_cost`` derives from it.
    """

    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="balances"
    )
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    available = models.DecimalField(**AMOUNT, default=Decimal(0))
    held = models.DecimalField(**AMOUNT, default=Decimal(0))
    unsettled = models.DecimalField(**AMOUNT, default=Decimal(0))
    cost = models.DecimalField(**AMOUNT, default=Decimal(0))
    #: Copied from the account kind: system accounts may go negative.
    allow_negative = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "asset"], name="balance_unique_account_asset"
            ),
            models.CheckConstraint(
                condition=Q(allow_negative=True)
                | (Q(available__gte=0) & Q(held__gte=0) & Q(unsettled__gte=0)),
                name="balance_client_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.account.number} {self.asset}: {self.total}"

    @property
    def total(self) -> Decimal:
        return self.available + self.held + self.unsettled

    @property
    def average_cost(self) -> Decimal:
        if not self.total:
            return Decimal(0)
        return self.cost / self.total


class AuditRecord(models.Model):
    """Who changed what, and why: one row per change made through a service."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    reason = models.CharField(max_length=200, blank=True)
    changes = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action}"


class TransferKind(models.TextChoices):
    DEPOSIT = "deposit", "Cash deposit"
    WITHDRAWAL = "withdrawal", "Cash withdrawal"
    SECURITY_TRANSFER = "security_transfer", "Security transfer"
    SECURITY_ISSUE = "security_issue", "Security issue"


class TransferStatus(models.TextChoices):
    PENDING = "pending", "Pending approval"
    COMPLETED = "completed", "Completed"
    REJECTED = "rejected", "Rejected"
    CANCELLED = "cancelled", "Cancelled"


class Transfer(models.Model):
    """Money or units entering, leaving or moving between accounts, as requested.

    ``account`` is the client account credited (deposit, security issue), debited
    (withdrawal) or sending (security transfer, to ``counterparty``). Deposits,
    issues and security transfers complete at once; a withdrawal holds its amount
    while ``pending`` and completes when a second staff user approves it (or is
    rejected by staff, or cancelled by the client, which releases the hold). The
    journal entries a transfer posted carry the reference ``transfer:<id>``.

    ``idempotency_key`` is unique per requesting user: the same user sending the same
    key again gets this transfer back instead of a new one.
    """

    Kind = TransferKind
    Status = TransferStatus

    kind = models.CharField(max_length=24, choices=TransferKind.choices)
    status = models.CharField(max_length=16, choices=TransferStatus.choices)
    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="transfers"
    )
    counterparty = models.ForeignKey(
        Account,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="incoming_transfers",
    )
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    amount = models.DecimalField(**AMOUNT)
    idempotency_key = models.CharField(max_length=64)
    memo = models.CharField(max_length=200, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.CharField(max_length=200, blank=True)
    #: Set by the service (not the database clock), so the daily withdrawal window
    #: and the stored time agree.
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(
                fields=["account", "kind", "created_at"],
                name="transfer_account_kind_time",
            ),
            models.Index(fields=["status", "kind"], name="transfer_status_kind"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__gt=0), name="transfer_amount_positive"
            ),
            models.CheckConstraint(
                condition=Q(kind__in=TransferKind.values), name="transfer_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=TransferStatus.values),
                name="transfer_status_valid",
            ),
            models.CheckConstraint(
                condition=(
                    Q(kind="security_transfer", counterparty__isnull=False)
                    & ~Q(counterparty=F("account"))
                )
                | (~Q(kind="security_transfer") & Q(counterparty__isnull=True)),
                name="transfer_counterparty_only_for_security_transfers",
            ),
            models.CheckConstraint(
                condition=Q(kind="withdrawal") | Q(status="completed"),
                name="transfer_only_withdrawals_await_approval",
            ),
            models.UniqueConstraint(
                fields=["requested_by", "idempotency_key"],
                name="transfer_idempotency_key_unique_per_user",
            ),
            # Requests without a user (scripts): NULLs are distinct above, so
            # this partial constraint covers them.
            models.UniqueConstraint(
                fields=["idempotency_key"],
                condition=Q(requested_by__isnull=True),
                name="transfer_idempotency_key_unique_without_user",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} {self.amount} {self.asset} ({self.status})"

    @property
    def reference(self) -> str:
        """The ``JournalEntry.reference`` of the entries this transfer posted."""
        return f"transfer:{self.pk}"

    @property
    def is_pending(self) -> bool:
        return self.status == self.Status.PENDING

    def journal_entries(self) -> "models.QuerySet[JournalEntry]":
        """The ledger entries posted for this transfer, oldest first."""
        return JournalEntry.objects.filter(reference=self.reference).order_by("id")
