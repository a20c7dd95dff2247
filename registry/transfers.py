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
- Per-account daily withdrawal limits (``Account.daily_withdrawal_limit``, in the
  account currency) count today's pending and completed withdrawals, where "today"
  is the calendar day in the operator's time zone, ``settings.TIME_ZONE``.

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
"""

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import ROUND_FLOOR, Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from registry.ledger import InsufficientBalanceError, LedgerBatch, Line
from registry.models import (
    Account,
    AccountAccess,
    Asset,
    Balance,
    Bucket,
    JournalEntry,
    Transfer,
)
from registry.services import (
    RegistryError,
    User,
    _user_id,
    audit_record,
    system_account,
)

#: The precision of ``Balance.cost``; a security transfer moves cost at it.
COST_UNIT = Decimal("1e-10")
MAX_KEY_LENGTH = 64


@dataclass(frozen=True, slots=True)
class TransferResult:
    """A transfer service's answer: ``created`` is False for an idempotent replay."""

    transfer: Transfer
    created: bool


@dataclass(frozen=True, slots=True)
class TransferSpec:
    """What a request asked for: compared with the stored transfer on a replay."""

    kind: str
    account_id: int
    asset_id: int
    amount: Decimal
    memo: str = ""
    counterparty_id: int | None = None

    def same_as(self, transfer: Transfer) -> bool:
        return (
            transfer.kind == self.kind
            and transfer.account_id == self.account_id
            and transfer.asset_id == self.asset_id
            and transfer.amount == self.amount
            and transfer.memo == self.memo
            and transfer.counterparty_id == self.counterparty_id
        )


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
    _check_amount(spec.amount, asset)

    def perform(key: str) -> Transfer:
        # Checked under the row lock, so a concurrent suspension wins or waits.
        (account,) = _lock_client_accounts([spec.account_id])
        source = system_account(system_kind)
        transfer = _create(spec, key, acting_user, Transfer.Status.COMPLETED)
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
        _audit(transfer, acting_user, spec.kind, spec.memo, entries=[entry])
        _publish(batch.balances.values())
        return transfer

    # Not durable: the demo data credits accounts inside its own transaction.
    return _idempotent(spec, acting_user, idempotency_key, perform, durable=False)


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
    _check_amount(amount, asset)
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
        _lock_client_accounts([from_account.pk, to_account.pk])
        transfer = _create(spec, key, acting_user, Transfer.Status.COMPLETED)
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
            raise _shortfall_error(
                "insufficient_holdings", asset, amount, error.shortfall
            ) from error
        batch.adjust_cost(from_account.pk, asset.pk, -cost_moved)
        batch.adjust_cost(to_account.pk, asset.pk, cost_moved)
        entries = batch.flush()
        _audit(
            transfer,
            acting_user,
            spec.kind,
            reason,
            entries=entries,
            to_account=to_account.number,
            cost=str(cost_moved),
        )
        _publish(batch.balances.values())
        return transfer

    return _idempotent(spec, acting_user, idempotency_key, perform)


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
    ``daily_limit_exceeded``, ``daily_limit_currency``, ``insufficient_funds``
    (422), and the idempotency errors. On any error nothing is stored or held.
    """
    if on_behalf:
        _require_staff(acting_user)
    else:
        _require_trading_access(acting_user, account)
    if asset.kind != Asset.Kind.CURRENCY:
        raise RegistryError(
            f"{asset.code} is not a currency.", code="not_a_currency", field="asset"
        )
    _check_amount(amount, asset)
    spec = TransferSpec(Transfer.Kind.WITHDRAWAL, account.pk, asset.pk, amount, memo)

    def perform(key: str) -> Transfer:
        (locked,) = _lock_client_accounts([account.pk])
        now = timezone.now()
        _check_daily_limit(locked, asset, amount, now)
        transfer = _create(spec, key, acting_user, Transfer.Status.PENDING, now=now)
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
            raise _shortfall_error(
                "insufficient_funds", asset, amount, error.shortfall
            ) from error
        entries = batch.flush()
        _audit(
            transfer,
            acting_user,
            "withdrawal_request",
            memo,
            entries=entries,
            on_behalf=on_behalf,
        )
        _publish(batch.balances.values())
        return transfer

    return _idempotent(spec, acting_user, idempotency_key, perform)


def withdrawal_approve(
    *, transfer_id: int, acting_user: User, reason: str = ""
) -> Transfer:
    """Pay out a pending withdrawal: held -> the operator's omnibus account.

    Maker-checker: ``acting_user`` must be staff and not the user who requested the
    withdrawal (also when staff requested it for the client). Posts a
    ``withdrawal`` entry (the account's held -amount, SYS-OMNIBUS available
    +amount), marks the transfer ``completed`` with the decision, audited with
    ``reason``. Raises ``RegistryError``: ``staff_only``, ``maker_checker_violation``
    (403), ``transfer_not_found`` (404), ``transfer_not_pending`` (409).
    """
    _require_staff(acting_user)
    with transaction.atomic(durable=True):
        transfer = _lock_transfer(transfer_id)
        if transfer.requested_by_id is not None and (
            transfer.requested_by_id == _user_id(acting_user)
        ):
            raise RegistryError(
                "A withdrawal must be approved by someone other than its requester.",
                code="maker_checker_violation",
                status=403,
            )
        _require_pending(transfer)
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
        _decide(transfer, acting_user, Transfer.Status.COMPLETED, reason)
        _audit(transfer, acting_user, "withdrawal_approve", reason, entries=entries)
        _publish(batch.balances.values())
    return transfer


def withdrawal_reject(*, transfer_id: int, acting_user: User, reason: str) -> Transfer:
    """Refuse a pending withdrawal (staff, with a reason): the hold is released.

    Any staff user may reject, the requester included. Raises ``RegistryError``:
    ``staff_only`` (403), ``reason_required`` (400), ``transfer_not_found`` (404),
    ``transfer_not_pending`` (409).
    """
    _require_staff(acting_user)
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
    ``RegistryError``: ``transfer_not_found`` (404, also for a transfer of an
    account the user cannot see), ``account_forbidden`` (403),
    ``transfer_not_pending`` (409).
    """
    transfer = (
        Transfer.objects.filter(
            pk=transfer_id,
            kind=Transfer.Kind.WITHDRAWAL,
            account__access__user_id=_user_id(acting_user),
        )
        .select_related("account")
        .first()
    )
    if transfer is None:
        raise _transfer_not_found(transfer_id)
    _require_trading_access(acting_user, transfer.account)
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
        transfer = _lock_transfer(transfer_id)
        _require_pending(transfer)
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
        _decide(transfer, acting_user, status, reason)
        _audit(transfer, acting_user, action, reason, entries=entries)
        _publish(batch.balances.values())
    return transfer


# Daily withdrawal limits ----------------------------------------------------------


def operator_day(moment: datetime) -> tuple[datetime, datetime]:
    """The calendar day containing ``moment`` in ``settings.TIME_ZONE``: [start, end)."""
    zone = ZoneInfo(settings.TIME_ZONE)
    day = moment.astimezone(zone).date()
    start = datetime.combine(day, time.min, tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone)
    return start, end


def withdrawn_today(account: Account, moment: datetime) -> Decimal:
    """Pending plus completed withdrawals of ``account`` on ``moment``'s operator day."""
    start, end = operator_day(moment)
    total = Transfer.objects.filter(
        account=account,
        kind=Transfer.Kind.WITHDRAWAL,
        status__in=[Transfer.Status.PENDING, Transfer.Status.COMPLETED],
        created_at__gte=start,
        created_at__lt=end,
    ).aggregate(total=Sum("amount"))["total"]
    return total or Decimal(0)


def _check_daily_limit(
    account: Account, asset: Asset, amount: Decimal, now: datetime
) -> None:
    """Precondition: the account row is locked (no concurrent withdrawal request)."""
    limit = account.daily_withdrawal_limit
    if limit is None:
        return
    if asset.pk != account.currency_id:
        # The limit is in the account currency and there is no conversion rate.
        raise RegistryError(
            f"Account {account.number} has a daily withdrawal limit in "
            f"{account.currency.code}; it cannot withdraw {asset.code}.",
            code="daily_limit_currency",
            field="asset",
            status=422,
        )
    remaining = max(limit - withdrawn_today(account, now), Decimal(0))
    if amount > remaining:
        raise RegistryError(
            f"The daily withdrawal limit of {asset.quantize(limit)} {asset.code} "
            f"leaves {asset.quantize(remaining)} {asset.code} today.",
            code="daily_limit_exceeded",
            field="amount",
            status=422,
        )


# Building blocks --------------------------------------------------------------------


def check_idempotency_key(key: str) -> None:
    """Raise ``invalid_idempotency_key`` unless ``key`` is 1-64 printable ASCII
    characters without spaces."""
    if not (
        0 < len(key) <= MAX_KEY_LENGTH
        and key.isascii()
        and key.isprintable()
        and " " not in key
    ):
        raise RegistryError(
            f"An idempotency key is 1 to {MAX_KEY_LENGTH} printable ASCII "
            "characters without spaces.",
            code="invalid_idempotency_key",
            field="idempotency_key",
        )


def _check_amount(amount: Decimal, asset: Asset) -> None:
    if not amount.is_finite() or amount <= 0:
        raise RegistryError(
            "The amount must be positive.", code="invalid_amount", field="amount"
        )
    if not asset.is_on_grid(amount):
        raise RegistryError(
            f"{amount} has more than {asset.scale} decimal places.",
            code="too_precise",
            field="amount",
        )


def _shortfall_error(
    code: str, asset: Asset, amount: Decimal, shortfall: Decimal
) -> RegistryError:
    return RegistryError(
        f"{asset.quantize(amount)} {asset.code} needed, "
        f"{asset.quantize(amount - shortfall)} available.",
        code=code,
        field="amount",
        status=422,
    )


def _require_staff(user: User) -> None:
    if user is None or not user.is_authenticated or not user.is_staff:
        raise RegistryError("Only staff may do this.", code="staff_only", status=403)


def _require_trading_access(user: User, account: Account) -> None:
    role = (
        AccountAccess.objects.filter(account=account, user_id=_user_id(user))
        .values_list("role", flat=True)
        .first()
    )
    if role is None:
        raise RegistryError(
            f"There is no account {account.pk}.",
            code="account_not_found",
            field="account",
            status=404,
        )
    if role not in AccountAccess.TRADING_ROLES:
        raise RegistryError(
            f"You may not move money out of account {account.number}.",
            code="account_forbidden",
            field="account",
            status=403,
        )


def _lock_client_accounts(account_ids: Iterable[int]) -> list[Account]:
    """Lock the accounts' rows (by pk) and check each is an active client account.

    ``FOR NO KEY UPDATE``: it serialises the account's transfers and status changes
    but not rows that merely reference the account. Order entry inserts an order
    (which takes ``FOR KEY SHARE`` on the account) while holding a balance lock; a
    plain ``FOR UPDATE`` here, taken before the balance lock, would deadlock with it.
    """
    ids = sorted(set(account_ids))
    accounts = list(
        Account.objects.select_for_update(of=("self",), no_key=True)
        .select_related("currency")
        .filter(pk__in=ids)
        .order_by("pk")
    )
    for account in accounts:
        if account.is_system:
            raise RegistryError(
                f"{account.number} is not a client account.",
                code="not_a_client_account",
                field="account",
            )
        if account.status != Account.Status.ACTIVE:
            raise RegistryError(
                f"Account {account.number} is {account.status}.",
                code="account_inactive",
                field="account",
                status=422,
            )
    return accounts


def _lock_transfer(transfer_id: int) -> Transfer:
    transfer = (
        Transfer.objects.select_for_update(of=("self",))
        .select_related("account", "asset")
        .filter(pk=transfer_id)
        .first()
    )
    if transfer is None:
        raise _transfer_not_found(transfer_id)
    return transfer


def _transfer_not_found(transfer_id: int) -> RegistryError:
    return RegistryError(
        f"There is no transfer {transfer_id}.", code="transfer_not_found", status=404
    )


def _require_pending(transfer: Transfer) -> None:
    if not transfer.is_pending:
        raise RegistryError(
            f"Transfer {transfer.pk} is {transfer.status}, not pending.",
            code="transfer_not_pending",
            status=409,
        )


def _create(
    spec: TransferSpec,
    key: str,
    acting_user: User,
    status: str,
    *,
    now: datetime | None = None,
) -> Transfer:
    now = now or timezone.now()
    completed = status == Transfer.Status.COMPLETED
    return Transfer.objects.create(
        kind=spec.kind,
        status=status,
        account_id=spec.account_id,
        counterparty_id=spec.counterparty_id,
        asset_id=spec.asset_id,
        amount=spec.amount,
        idempotency_key=key,
        memo=spec.memo,
        requested_by_id=_user_id(acting_user),
        decided_by_id=_user_id(acting_user) if completed else None,
        decided_at=now if completed else None,
        created_at=now,
    )


def _decide(transfer: Transfer, acting_user: User, status: str, reason: str) -> None:
    transfer.status = status
    transfer.decided_by_id = _user_id(acting_user)
    transfer.decided_at = timezone.now()
    transfer.decision_reason = reason
    transfer.save(
        update_fields=["status", "decided_by", "decided_at", "decision_reason"]
    )


def _audit(
    transfer: Transfer,
    acting_user: User,
    action: str,
    reason: str,
    *,
    entries: Iterable[JournalEntry],
    **extra: object,
) -> None:
    audit_record(
        actor=acting_user,
        action=action,
        target=transfer,
        reason=reason,
        changes={
            "account": transfer.account.number,
            "asset": transfer.asset.code,
            "amount": str(transfer.amount),
            "status": transfer.status,
            "entries": [entry.pk for entry in entries],
            **extra,
        },
    )


def _publish(balances: Iterable[Balance]) -> None:
    """Publish the changed client balances on commit.

    Precondition: inside the transaction, after the balance locks. The balance and
    holding topics belong to the OMS streams (``oms.publish``), which build on the
    registry: imported at call time to keep the registry importable on its own.
    """
    from exchange.streams import publish_on_commit
    from oms.publish import private_messages

    publish_on_commit(private_messages(orders=[], balances=balances))


def _replay(spec: TransferSpec, user_id: int | None, key: str) -> TransferResult | None:
    transfer = (
        Transfer.objects.select_related("account", "asset", "counterparty")
        .filter(requested_by_id=user_id, idempotency_key=key)
        .first()
    )
    if transfer is None:
        return None
    if not spec.same_as(transfer):
        raise RegistryError(
            f"Idempotency key {key!r} was used for a different request.",
            code="idempotency_key_reused",
            field="idempotency_key",
            status=409,
        )
    return TransferResult(transfer=transfer, created=False)


def _idempotent(
    spec: TransferSpec,
    acting_user: User,
    key: str,
    perform: Callable[[str], Transfer],
    *,
    durable: bool = True,
) -> TransferResult:
    """Run ``perform(key)`` in a transaction unless ``key`` was used already."""
    user_id = _user_id(acting_user)
    if key:
        check_idempotency_key(key)
        replay = _replay(spec, user_id, key)
        if replay is not None:
            return replay
    else:
        key = uuid.uuid4().hex
    try:
        with transaction.atomic(durable=durable):
            transfer = perform(key)
    except IntegrityError:
        # A concurrent request with the same key won the race (or the error is
        # another one, raised again).
        replay = _replay(spec, user_id, key)
        if replay is None:
            raise
        return replay
    return TransferResult(transfer=transfer, created=True)
