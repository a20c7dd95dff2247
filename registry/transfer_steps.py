"""The steps every transfer service is made of (``registry.transfers``).

Checks of amounts and access, the account and transfer row locks, the record, its
audit record and the publication of the changed balances, and the idempotency of
requests (see ``registry.transfers`` for the contract).
"""

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone

from registry.models import (
    Account,
    AccountAccess,
    Asset,
    Balance,
    JournalEntry,
    Transfer,
)
from registry.services import (
    RegistryError,
    User,
    _user_id,
    audit_record,
    signed_in_user_id,
)

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


def check_amount(amount: Decimal, asset: Asset) -> None:
    """Raise ``invalid_amount`` unless positive, ``too_precise`` if off the asset's
    grid (400, field ``amount``)."""
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


def shortfall_error(
    code: str, asset: Asset, amount: Decimal, shortfall: Decimal
) -> RegistryError:
    """The 422 error for a hold or move the available bucket cannot cover."""
    return RegistryError(
        f"{asset.quantize(amount)} {asset.code} needed, "
        f"{asset.quantize(amount - shortfall)} available.",
        code=code,
        field="amount",
        status=422,
    )


def require_staff(user: User) -> None:
    """Raise ``staff_only`` (403) unless ``user`` is a signed-in staff user."""
    # A user model without ``is_staff`` has no staff.
    if (
        user is None
        or not user.is_authenticated
        or not getattr(user, "is_staff", False)
    ):
        raise RegistryError("Only staff may do this.", code="staff_only", status=403)


def require_trading_access(user: User, account: Account) -> None:
    """Raise unless ``user`` is an owner or trader of ``account``:
    ``not_authenticated`` (401) unless signed in, ``account_not_found`` (404)
    without access, ``account_forbidden`` (403) for a viewer."""
    role = (
        AccountAccess.objects.filter(account=account, user_id=signed_in_user_id(user))
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


def lock_client_accounts(account_ids: Iterable[int]) -> list[Account]:
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


def lock_transfer(transfer_id: int) -> Transfer:
    """Lock the transfer's row (``transfer_not_found``, 404, if there is none).

    Precondition: inside a transaction, before any balance lock."""
    transfer = (
        Transfer.objects.select_for_update(of=("self",))
        .select_related("account", "asset")
        .filter(pk=transfer_id)
        .first()
    )
    if transfer is None:
        raise transfer_not_found(transfer_id)
    return transfer


def transfer_not_found(transfer_id: int) -> RegistryError:
    """The 404 error for a transfer that is not there or not visible."""
    return RegistryError(
        f"There is no transfer {transfer_id}.", code="transfer_not_found", status=404
    )


def require_pending(transfer: Transfer) -> None:
    """Raise ``transfer_not_pending`` (409) unless the transfer awaits a decision."""
    if not transfer.is_pending:
        raise RegistryError(
            f"Transfer {transfer.pk} is {transfer.status}, not pending.",
            code="transfer_not_pending",
            status=409,
        )


def transfer_create(
    spec: TransferSpec,
    key: str,
    acting_user: User,
    status: str,
    *,
    now: datetime | None = None,
) -> Transfer:
    """Store the transfer row; a completed one is decided by its requester."""
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


def transfer_decide(
    transfer: Transfer, acting_user: User, status: str, reason: str
) -> None:
    """Record the decision on a locked pending transfer."""
    transfer.status = status
    transfer.decided_by_id = _user_id(acting_user)
    transfer.decided_at = timezone.now()
    transfer.decision_reason = reason
    transfer.save(
        update_fields=["status", "decided_by", "decided_at", "decision_reason"]
    )


def transfer_audit(
    transfer: Transfer,
    acting_user: User,
    action: str,
    reason: str,
    *,
    entries: Iterable[JournalEntry],
    **extra: object,
) -> None:
    """Write the audit record of a transfer change, naming the entries posted."""
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


def balances_publish(balances: Iterable[Balance]) -> None:
    """Publish the changed client balances on commit.

    Precondition: inside the transaction, after the balance locks. The balance and
    holding topics belong to the OMS streams (``oms.publish``), which build on the
    registry: imported at call time to keep the registry importable on its own.
    """
    from exchange.streams import publish_on_commit
    from oms.publish import private_messages

    publish_on_commit(private_messages(orders=[], balances=balances))


def idempotent_replay(
    spec: TransferSpec, user_id: int | None, key: str
) -> TransferResult | None:
    """The transfer stored under ``(user_id, key)``, if any; raises
    ``idempotency_key_reused`` (409) if it is not what ``spec`` asks for."""
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


def idempotent_run(
    spec: TransferSpec,
    acting_user: User,
    key: str,
    perform: Callable[[str], Transfer],
    *,
    durable: bool = True,
) -> TransferResult:
    """Run ``perform(key)`` in a transaction unless ``key`` was used already.

    Without a key (internal callers) one is drawn. A replay returns the stored
    transfer with ``created=False``; a unique-key violation (a concurrent duplicate
    committed first) returns the winner.
    """
    user_id = _user_id(acting_user)
    if key:
        check_idempotency_key(key)
        replay = idempotent_replay(spec, user_id, key)
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
        replay = idempotent_replay(spec, user_id, key)
        if replay is None:
            raise
        return replay
    return TransferResult(transfer=transfer, created=True)
