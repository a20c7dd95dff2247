"""Registry writes: accounts, access and the audit trail (transfers: ``registry.transfers``)."""

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.contrib.auth.models import User as AuthUser
from django.db import transaction

from registry.models import Account, AccountAccess, Asset, AuditRecord

if TYPE_CHECKING:
    from registry.transfers import TransferResult

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


def signed_in_user_id(user: User) -> int:
    """``user``'s id; raises ``RegistryError`` ``not_authenticated`` (401) unless
    ``user`` is signed in.

    For filters on a user's rows, where a missing id must not mean "no filter":
    ``user_id=None`` becomes ``IS NULL``, and through a join it matches the rows
    of accounts that nobody has access to.
    """
    user_id = _user_id(user)
    if user_id is None:
        raise RegistryError("Sign in first.", code="not_authenticated", status=401)
    return user_id


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
    *, account: Account, user: AuthUser, role: str, acting_user: User
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


# Deposits and security issues are transfers (``registry.transfers``), which build on
# this module; these entry points import them at call time.


def cash_deposit(
    *,
    account: Account,
    asset: Asset,
    amount: Decimal,
    acting_user: User,
    reason: str = "",
    idempotency_key: str = "",
) -> "TransferResult":
    """Credit cash to a client account: see ``registry.transfers.cash_deposit``."""
    from registry import transfers

    return transfers.cash_deposit(
        account=account,
        asset=asset,
        amount=amount,
        acting_user=acting_user,
        reason=reason,
        idempotency_key=idempotency_key,
    )


def security_issue(
    *,
    account: Account,
    asset: Asset,
    amount: Decimal,
    acting_user: User,
    reason: str = "",
    idempotency_key: str = "",
) -> "TransferResult":
    """Issue units to a client account: see ``registry.transfers.security_issue``."""
    from registry import transfers

    return transfers.security_issue(
        account=account,
        asset=asset,
        amount=amount,
        acting_user=acting_user,
        reason=reason,
        idempotency_key=idempotency_key,
    )
