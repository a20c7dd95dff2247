"""Transfers: cash deposits and withdrawals, security issues and security transfers.

Every transfer is a :class:`~registry.models.Transfer` row plus the journal entries
it posted (reference ``transfer:<id>``), written in one transaction with an audit
record naming the acting user.

- Deposits, security issues and security transfers are staff or integration actions
  and complete at once (the callers authorise: REST views and the admin).
- A withdrawal is requested by a client (an owner or trader of the account) or by
  staff on the client's behalf. The request moves the amount from available to held
  at once; a staff user other than the requester approves it (held -> the operator's
  omnibus account) or rejects it (hold released), or the client cancels it (hold
  released). This is the maker-checker rule: nobody approves their own request.
- Daily withdrawal limits are per account and asset (``WithdrawalLimit``): they
  count today's pending and completed withdrawals of that asset only, where
  "today" is the calendar day in the operator's time zone,
  ``settings.OPERATOR_TIMEZONE`` (an asset with no limit row has no limit).

Idempotency: every request carries a key, unique per requesting user. The same user
sending the same key and the same request again gets the original transfer back
(``created=False``), whatever its status now; the same key with a different request
is refused (``idempotency_key_reused``, 409). Two concurrent requests with one key
are settled by the database's unique constraint: the loser returns the winner.
Internal callers (tests, the demo data) may omit the key: one is generated.

Locks, in this order: account rows (by pk, ``FOR NO KEY UPDATE``), then transfer
rows, then balances (``registry.ledger`` locks them by (account, asset)). A
withdrawal request locks the account row, which serialises the account's
withdrawal requests for the daily limit; approvals, rejections and cancels lock the
transfer row first.

Side effect on commit: the changed client balances are published on the accounts'
``balances`` / ``holdings`` streams.

The shared steps (checks, locks, the record, audit, publication, idempotency) are in
``registry.transfer_steps``.
"""

from datetime import datetime, time, timedelta
from decimal import ROUND_FLOOR, Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from registry.ledger import InsufficientBalanceError, LedgerBatch, Line
from registry.models import (
    Account,
    Asset,
    Balance,
    Bucket,
    JournalEntry,
    Transfer,
    WithdrawalLimit,
)
from registry.services import (
    RegistryError,
    User,
    _user_id,
    signed_in_user_id,
    system_account,
)
from registry.transfer_steps import (
    MAX_KEY_LENGTH,
    TransferResult,
    TransferSpec,
    balances_publish,
    check_amount,
    check_idempotency_key,
    idempotent_run,
    lock_client_accounts,
    lock_transfer,
    require_pending,
    require_staff,
    require_trading_access,
    shortfall_error,
    transfer_audit,
    transfer_create,
    transfer_decide,
    transfer_not_found,
)

__all__ = [
    "MAX_KEY_LENGTH",
    "TransferResult",
    "TransferSpec",
    "cash_deposit",
    "check_idempotency_key",
    "operator_day",
    "security_issue",
    "security_transfer",
    "withdrawal_approve",
    "withdrawal_cancel",
    "withdrawal_reject",
    "withdrawal_request",
    "withdrawn_today",
]

#: The precision of ``Balance.cost``; a security transfer moves cost at it.
COST_UNIT = Decimal("1e-10")


# Deposits and security issues ----------------------------------------------------


def cash_deposit(
    *,
    account: Account,
    asset: Asset,
    amount: Decimal,
    acting_user: User,
    reason: str = "",
    idempotency_key: str = "",
) -> TransferResult:
    """Credit cash received into the operator's bank account to a client account.

    Records a completed ``deposit`` transfer and posts SYS-OMNIBUS available
    -amount, the account's available +amount (journal entry kind ``deposit``).
    The caller authorises (staff or integration). Nests in an outer transaction.
    Raises ``RegistryError``: ``not_a_currency``, ``invalid_amount``,
    ``too_precise``, ``not_a_client_account`` (400), ``account_inactive`` (422),
    ``invalid_idempotency_key`` (400), ``idempotency_key_reused`` (409).
    """
    if asset.kind != Asset.Kind.CURRENCY:
        raise RegistryError(
            f"{asset.code} is not a currency.", code="not_a_currency", field="asset"
        )
    return _credit_from_system(
        spec=TransferSpec(Transfer.Kind.DEPOSIT, account.pk, asset.pk, amount, reason),
        asset=asset,
        journal_kind=JournalEntry.Kind.DEPOSIT,
        system_kind=Account.Kind.OMNIBUS,
        acting_user=acting_user,
        idempotency_key=idempotency_key,
        default_reason="Cash deposit",
    )


def security_issue(
    *,
    account: Account,
    asset: Asset,
    amount: Decimal,
    acting_user: User,
    reason: str = "",
    idempotency_key: str = "",
) -> TransferResult:
    """Issue units of a security to a client account, against the issuance account.

    Like :func:`cash_deposit` for a security (``not_a_security`` if it is not one):
    a completed ``security_issue`` transfer, journal entry kind ``issue`` against
    SYS-ISSUANCE. The cost base of the position is unchanged (issued units carry
    no cost).
    """
    if asset.kind != Asset.Kind.SECURITY:
        raise RegistryError(
            f"{asset.code} is not a security.", code="not_a_security", field="asset"
        )
    return _credit_from_system(
        spec=TransferSpec(
            Transfer.Kind.SECURITY_ISSUE, account.pk, asset.pk, amount, reason
        ),
        asset=asset,
        journal_kind=JournalEntry.Kind.ISSUE,
        system_kind=Account.Kind.ISSUANCE,
        acting_user=acting_user,
        idempotency_key=idempotency_key,
        default_reason="Security issue",
    )


def _credit_from_system(
    *,
    spec: TransferSpec,
    asset: Asset,
    journal_kind: str,
    system_kind: str,
    acting_user: User,
    idempotency_key: str,
    default_reason: str,
) -> TransferResult:
    check_amount(spec.amount, asset)

    def perform(key: str) -> Transfer:
        # Checked under the row lock, so a concurrent suspension wins or waits.
        (account,) = lock_client_accounts([spec.account_id])
        source = system_account(system_kind)
        transfer = transfer_create(spec, key, acting_user, Transfer.Status.COMPLETED)
        batch = LedgerBatch([(account.pk, asset.pk), (source.pk, asset.pk)])
        batch.post(
            kind=journal_kind,
            lines=[
                Line(source.pk, asset.pk, Bucket.AVAILABLE, -spec.amount),
                Line(account.pk, asset.pk, Bucket.AVAILABLE, spec.amount),
            ],
            reference=transfer.reference,
            reason=spec.memo or default_reason,
            acting_user_id=_user_id(acting_user),
        )
        (entry,) = batch.flush()
        transfer_audit(transfer, acting_user, spec.kind, spec.memo, entries=[entry])
        balances_publish(batch.balances.values())
        return transfer

    # Not durable: the demo data credits accounts inside its own transaction.
    return idempotent_run(spec, acting_user, idempotency_key, perform, durable=False)


# Security transfers -----------------------------------------------------------------


def security_transfer(
    *,
    from_account: Account,
    to_account: Account,
    asset: Asset,
    amount: Decimal,
    acting_user: User,
    reason: str = "",
    idempotency_key: str = "",
) -> TransferResult:
    """Move ``amount`` available units of a security from one client account to
    another, with its share of the cost base.

    The moved cost is the sender's cost base times ``amount / position total``
    (all of it when the whole position moves), at the stored precision, so the
    sender's average cost is unchanged and no cost is created or lost. Records a
    completed ``security_transfer`` (``account`` = sender, ``counterparty`` =
    receiver) and a journal entry kind ``transfer``. The caller authorises (staff
    or integration). Raises ``RegistryError``: ``not_a_security``,
    ``invalid_amount``, ``too_precise``, ``same_account``,
    ``not_a_client_account`` (400), ``account_inactive``,
    ``insufficient_holdings`` (422), and the idempotency errors.
    """
    if asset.kind != Asset.Kind.SECURITY:
        raise RegistryError(
            f"{asset.code} is not a security.", code="not_a_security", field="asset"
        )
    check_amount(amount, asset)
    if from_account.pk == to_account.pk:
        raise RegistryError(
            "The sending and receiving accounts are the same.",
            code="same_account",
            field="to_account",
        )
    spec = TransferSpec(
        Transfer.Kind.SECURITY_TRANSFER,
        from_account.pk,
        asset.pk,
        amount,
        reason,
        counterparty_id=to_account.pk,
    )

    def perform(key: str) -> Transfer:
        lock_client_accounts([from_account.pk, to_account.pk])
        transfer = transfer_create(spec, key, acting_user, Transfer.Status.COMPLETED)
        batch = LedgerBatch([(from_account.pk, asset.pk), (to_account.pk, asset.pk)])
        sender = batch.balance(from_account.pk, asset.pk)
        cost_moved = _cost_share(sender, amount)
        try:
            batch.post(
                kind=JournalEntry.Kind.TRANSFER,
                lines=[
                    Line(from_account.pk, asset.pk, Bucket.AVAILABLE, -amount),
                    Line(to_account.pk, asset.pk, Bucket.AVAILABLE, amount),
                ],
                reference=transfer.reference,
                reason=reason or "Security transfer",
                acting_user_id=_user_id(acting_user),
            )
        except InsufficientBalanceError as error:
            raise shortfall_error(
                "insufficient_holdings", asset, amount, error.shortfall
            ) from error
        batch.adjust_cost(from_account.pk, asset.pk, -cost_moved)
        batch.adjust_cost(to_account.pk, asset.pk, cost_moved)
        entries = batch.flush()
        transfer_audit(
            transfer,
            acting_user,
            spec.kind,
            reason,
            entries=entries,
            to_account=to_account.number,
            cost=str(cost_moved),
        )
        balances_publish(batch.balances.values())
        return transfer

    return idempotent_run(spec, acting_user, idempotency_key, perform)


def _cost_share(position: Balance, amount: Decimal) -> Decimal:
    """The part of ``position``'s cost base that ``amount`` units carry."""
    if amount >= position.total:
        return position.cost
    return (position.cost * amount / position.total).quantize(
        COST_UNIT, rounding=ROUND_FLOOR
    )


# Withdrawals ------------------------------------------------------------------------


def withdrawal_request(
    *,
    account: Account,
    asset: Asset,
    amount: Decimal,
    acting_user: User,
    idempotency_key: str = "",
    memo: str = "",
    on_behalf: bool = False,
) -> TransferResult:
    """Request a withdrawal of cash: the amount is held at once, pending approval.

    ``acting_user`` must be an owner or trader of the account or, with
    ``on_behalf``, a staff user requesting for the client. In one transaction:
    locks the account row, checks it is active and the daily limit, stores a
    ``pending`` withdrawal and posts a ``hold`` (available -> held). Raises
    ``RegistryError``: ``account_not_found`` (404: no access), ``account_forbidden``
    (403: a viewer), ``staff_only`` (403), ``not_a_currency``, ``invalid_amount``,
    ``too_precise``, ``not_a_client_account`` (400), ``account_inactive``,
    ``daily_limit_exceeded``, ``insufficient_funds``
    (422), and the idempotency errors. On any error nothing is stored or held.
    """
    if on_behalf:
        require_staff(acting_user)
    else:
        require_trading_access(acting_user, account)
    if asset.kind != Asset.Kind.CURRENCY:
        raise RegistryError(
            f"{asset.code} is not a currency.", code="not_a_currency", field="asset"
        )
    check_amount(amount, asset)
    spec = TransferSpec(Transfer.Kind.WITHDRAWAL, account.pk, asset.pk, amount, memo)

    def perform(key: str) -> Transfer:
        (locked,) = lock_client_accounts([account.pk])
        now = timezone.now()
        _check_daily_limit(locked, asset, amount, now)
        transfer = transfer_create(
            spec, key, acting_user, Transfer.Status.PENDING, now=now
        )
        batch = LedgerBatch([(account.pk, asset.pk)])
        try:
            batch.post(
                kind=JournalEntry.Kind.HOLD,
                lines=[
                    Line(account.pk, asset.pk, Bucket.AVAILABLE, -amount),
                    Line(account.pk, asset.pk, Bucket.HELD, amount),
                ],
                reference=transfer.reference,
                reason=memo or "Withdrawal requested",
                acting_user_id=_user_id(acting_user),
            )
        except InsufficientBalanceError as error:
            raise shortfall_error(
                "insufficient_funds", asset, amount, error.shortfall
            ) from error
        entries = batch.flush()
        transfer_audit(
            transfer,
            acting_user,
            "withdrawal_request",
            memo,
            entries=entries,
            on_behalf=on_behalf,
        )
        balances_publish(batch.balances.values())
        return transfer

    return idempotent_run(spec, acting_user, idempotency_key, perform)


def withdrawal_approve(
    *, transfer_id: int, acting_user: User, reason: str = ""
) -> Transfer:
    """Pay out a pending withdrawal: held -> the operator's omnibus account.

    Maker-checker: ``acting_user`` must be staff and not the user who requested the
    withdrawal (also when staff requested it for the client). Posts a
    ``withdrawal`` entry (the account's held -amount, SYS-OMNIBUS available
    +amount), marks the transfer ``completed`` with the decision, audited with
    ``reason``. The account's status is not checked: funds held for a withdrawal
    may be paid out of a suspended or closed account. Raises ``RegistryError``: ``staff_only``, ``maker_checker_violation``
    (403), ``transfer_not_found`` (404), ``transfer_not_pending`` (409).
    """
    require_staff(acting_user)
    with transaction.atomic(durable=True):
        transfer = lock_transfer(transfer_id)
        if transfer.requested_by_id is not None and (
            transfer.requested_by_id == _user_id(acting_user)
        ):
            raise RegistryError(
                "A withdrawal must be approved by someone other than its requester.",
                code="maker_checker_violation",
                status=403,
            )
        require_pending(transfer)
        omnibus = system_account(Account.Kind.OMNIBUS)
        account_id, asset_id = transfer.account_id, transfer.asset_id
        batch = LedgerBatch([(account_id, asset_id), (omnibus.pk, asset_id)])
        batch.post(
            kind=JournalEntry.Kind.WITHDRAWAL,
            lines=[
                Line(account_id, asset_id, Bucket.HELD, -transfer.amount),
                Line(omnibus.pk, asset_id, Bucket.AVAILABLE, transfer.amount),
            ],
            reference=transfer.reference,
            reason=reason or transfer.memo or "Withdrawal",
            acting_user_id=_user_id(acting_user),
        )
        entries = batch.flush()
        transfer_decide(transfer, acting_user, Transfer.Status.COMPLETED, reason)
        transfer_audit(
            transfer, acting_user, "withdrawal_approve", reason, entries=entries
        )
        balances_publish(batch.balances.values())
    return transfer


def withdrawal_reject(*, transfer_id: int, acting_user: User, reason: str) -> Transfer:
    """Refuse a pending withdrawal (staff, with a reason): the hold is released.

    Any staff user may reject, the requester included. Raises ``RegistryError``:
    ``staff_only`` (403), ``reason_required`` (400), ``transfer_not_found`` (404),
    ``transfer_not_pending`` (409).
    """
    require_staff(acting_user)
    if not reason.strip():
        raise RegistryError(
            "Give the reason for the rejection.",
            code="reason_required",
            field="reason",
        )
    return _release(
        transfer_id=transfer_id,
        acting_user=acting_user,
        status=Transfer.Status.REJECTED,
        reason=reason,
        action="withdrawal_reject",
    )


def withdrawal_cancel(*, transfer_id: int, acting_user: User) -> Transfer:
    """The client withdraws their own pending request: the hold is released.

    ``acting_user`` must be an owner or trader of the account. Raises
    ``RegistryError``: ``not_authenticated`` (401), ``transfer_not_found`` (404,
    also for a transfer of an account the user cannot see), ``account_forbidden``
    (403), ``transfer_not_pending`` (409).
    """
    transfer = (
        Transfer.objects.filter(
            pk=transfer_id,
            kind=Transfer.Kind.WITHDRAWAL,
            account__access__user_id=signed_in_user_id(acting_user),
        )
        .select_related("account")
        .first()
    )
    if transfer is None:
        raise transfer_not_found(transfer_id)
    require_trading_access(acting_user, transfer.account)
    return _release(
        transfer_id=transfer.pk,
        acting_user=acting_user,
        status=Transfer.Status.CANCELLED,
        reason="Cancelled by the client",
        action="withdrawal_cancel",
    )


def _release(
    *, transfer_id: int, acting_user: User, status: str, reason: str, action: str
) -> Transfer:
    with transaction.atomic(durable=True):
        transfer = lock_transfer(transfer_id)
        require_pending(transfer)
        account_id, asset_id = transfer.account_id, transfer.asset_id
        batch = LedgerBatch([(account_id, asset_id)])
        batch.post(
            kind=JournalEntry.Kind.RELEASE,
            lines=[
                Line(account_id, asset_id, Bucket.HELD, -transfer.amount),
                Line(account_id, asset_id, Bucket.AVAILABLE, transfer.amount),
            ],
            reference=transfer.reference,
            reason=reason,
            acting_user_id=_user_id(acting_user),
        )
        entries = batch.flush()
        transfer_decide(transfer, acting_user, status, reason)
        transfer_audit(transfer, acting_user, action, reason, entries=entries)
        balances_publish(batch.balances.values())
    return transfer


# Daily withdrawal limits ----------------------------------------------------------


def operator_day(moment: datetime) -> tuple[datetime, datetime]:
    """The calendar day containing ``moment`` in ``settings.OPERATOR_TIMEZONE``:
    [start, end), aware datetimes (a DST day is 23 or 25 hours long)."""
    zone = ZoneInfo(settings.OPERATOR_TIMEZONE)
    day = moment.astimezone(zone).date()
    start = datetime.combine(day, time.min, tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone)
    return start, end


def withdrawn_today(account: Account, asset: Asset, moment: datetime) -> Decimal:
    """Pending plus completed withdrawals of ``asset`` from ``account`` on
    ``moment``'s operator day."""
    start, end = operator_day(moment)
    total = Transfer.objects.filter(
        account=account,
        asset=asset,
        kind=Transfer.Kind.WITHDRAWAL,
        status__in=[Transfer.Status.PENDING, Transfer.Status.COMPLETED],
        created_at__gte=start,
        created_at__lt=end,
    ).aggregate(total=Sum("amount"))["total"]
    return total or Decimal(0)


def _check_daily_limit(
    account: Account, asset: Asset, amount: Decimal, now: datetime
) -> None:
    """Refuse ``amount`` if it would pass the account's daily limit of ``asset``.

    Precondition: the account row is locked (no concurrent withdrawal request).
    Raises ``RegistryError`` ``daily_limit_exceeded`` (422).
    """
    limit = (
        WithdrawalLimit.objects.filter(account=account, asset=asset)
        .values_list("daily_limit", flat=True)
        .first()
    )
    if limit is None:
        return
    remaining = max(limit - withdrawn_today(account, asset, now), Decimal(0))
    if amount > remaining:
        raise RegistryError(
            f"The daily withdrawal limit of {asset.quantize(limit)} {asset.code} "
            f"leaves {asset.quantize(remaining)} {asset.code} today.",
            code="daily_limit_exceeded",
            field="amount",
            status=422,
        )
