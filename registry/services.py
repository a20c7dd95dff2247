"""Registry writes: accounts, access, deposits, security issues and the audit trail."""

from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction

from registry.ledger import LedgerBatch, Line
from registry.models import (
    Account,
    AccountAccess,
    Asset,
    AuditRecord,
    Bucket,
    JournalEntry,
)

User = AbstractBaseUser | AnonymousUser | None

SYSTEM_ACCOUNTS = {
    Account.Kind.OMNIBUS: ("SYS-OMNIBUS", "Operator omnibus bank account"),
    Account.Kind.ISSUANCE: ("SYS-ISSUANCE", "Security issuance"),
    Account.Kind.FEES: ("SYS-FEES", "Fee revenue"),
}


class RegistryError(Exception):
    """A registry (or other domain) write refused; nothing was changed.

    ``code`` is the API error code and ``status`` its HTTP status."""

    code = "invalid"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str = "",
        status: int = 400,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status
        if code:
            self.code = code


def _user_id(user: User) -> int | None:
    return user.pk if user is not None and user.is_authenticated else None


def audit_record(
    *,
    actor: User,
    action: str,
    target: Any,
    reason: str = "",
    changes: dict[str, Any] | None = None,
) -> AuditRecord:
    """Record who changed what; call inside the transaction making the change."""
    return AuditRecord.objects.create(
        actor_id=_user_id(actor),
        action=action,
        object_type=target._meta.label_lower,
        object_id=str(target.pk),
        reason=reason,
        changes=changes or {},
    )


def system_account(kind: str) -> Account:
    """The operator's account of ``kind`` (omnibus, issuance, fees), created once."""
    number, name = SYSTEM_ACCOUNTS[Account.Kind(kind)]
    currency = Asset.objects.filter(kind=Asset.Kind.CURRENCY).order_by("pk").first()
    if currency is None:
        raise RegistryError("Create a currency asset first.", code="no_currency")
    account, _ = Account.objects.get_or_create(
        number=number, defaults={"name": name, "kind": kind, "currency": currency}
    )
    return account


def account_open(
    *, number: str, name: str, currency: Asset, acting_user: User
) -> Account:
    with transaction.atomic():
        if Account.objects.filter(number=number).exists():
            raise RegistryError(
                f"Account number {number} is taken.", code="duplicate", field="number"
            )
        account = Account.objects.create(number=number, name=name, currency=currency)
        audit_record(
            actor=acting_user,
            action="account_open",
            target=account,
            changes={"number": number, "name": name, "currency": currency.code},
        )
    return account


def account_access_grant(
    *, account: Account, user: AbstractBaseUser, role: str, acting_user: User
) -> AccountAccess:
    """Give ``user`` the ``role`` on ``account`` (replacing any earlier role)."""
    with transaction.atomic():
        access, _ = AccountAccess.objects.update_or_create(
            user=user, account=account, defaults={"role": role}
        )
        audit_record(
            actor=acting_user,
            action="account_access_grant",
            target=account,
            changes={"user": user.get_username(), "role": role},
        )
    return access


def _credit_from_system(
    *,
    account: Account,
    asset: Asset,
    amount: Decimal,
    kind: str,
    system_kind: str,
    acting_user: User,
    reason: str,
) -> JournalEntry:
    if amount <= 0:
        raise RegistryError("The amount must be positive.", field="amount")
    if not asset.is_on_grid(amount):
        raise RegistryError(
            f"{amount} has more than {asset.scale} decimal places.", field="amount"
        )
    with transaction.atomic():
        # Checked under the row lock, so a concurrent suspension wins or waits.
        account = Account.objects.select_for_update().get(pk=account.pk)
        if account.is_system:
            raise RegistryError(
                "Only client accounts can be credited.", field="account"
            )
        if account.status != Account.Status.ACTIVE:
            raise RegistryError(
                f"Account {account.number} is {account.status}.",
                code="account_inactive",
            )
        source = system_account(system_kind)
        batch = LedgerBatch([(account.pk, asset.pk), (source.pk, asset.pk)])
        batch.post(
            kind=kind,
            lines=[
                Line(source.pk, asset.pk, Bucket.AVAILABLE, -amount),
                Line(account.pk, asset.pk, Bucket.AVAILABLE, amount),
            ],
            reference=f"account:{account.pk}",
            reason=reason,
            acting_user_id=_user_id(acting_user),
        )
        (entry,) = batch.flush()
        audit_record(
            actor=acting_user,
            action=kind,
            target=account,
            reason=reason,
            changes={"asset": asset.code, "amount": str(amount), "entry": entry.pk},
        )
    return entry


def cash_deposit(
    *,
    account: Account,
    asset: Asset,
    amount: Decimal,
    acting_user: User,
    reason: str = "",
) -> JournalEntry:
    """Credit cash received into the operator's bank account to a client account."""
    if asset.kind != Asset.Kind.CURRENCY:
        raise RegistryError(f"{asset.code} is not a currency.", field="asset")
    return _credit_from_system(
        account=account,
        asset=asset,
        amount=amount,
        kind=JournalEntry.Kind.DEPOSIT,
        system_kind=Account.Kind.OMNIBUS,
        acting_user=acting_user,
        reason=reason or "Cash deposit",
    )


def security_issue(
    *,
    account: Account,
    asset: Asset,
    amount: Decimal,
    acting_user: User,
    reason: str = "",
) -> JournalEntry:
    """Issue units of a security to a client account, against the issuance account."""
    if asset.kind != Asset.Kind.SECURITY:
        raise RegistryError(f"{asset.code} is not a security.", field="asset")
    return _credit_from_system(
        account=account,
        asset=asset,
        amount=amount,
        kind=JournalEntry.Kind.ISSUE,
        system_kind=Account.Kind.ISSUANCE,
        acting_user=acting_user,
        reason=reason or "Security issue",
    )
