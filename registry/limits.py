"""Daily withdrawal limits: setting them (with an audit record).

The check itself runs inside ``withdrawal_request`` (``registry.transfers``): a
limit is per (account, asset) and counts that asset's pending and completed
withdrawals of the operator's day (``settings.OPERATOR_TIMEZONE``).
"""

from decimal import Decimal

from django.db import transaction

from registry.models import Account, Asset, WithdrawalLimit
from registry.services import RegistryError, User, audit_record


def withdrawal_limit_check(asset: Asset, daily_limit: Decimal) -> None:
    """Raise ``not_a_currency``, ``invalid_amount`` or ``too_precise`` (400)."""
    if asset.kind != Asset.Kind.CURRENCY:
        raise RegistryError(
            f"{asset.code} is not a currency.", code="not_a_currency", field="asset"
        )
    if not daily_limit.is_finite() or daily_limit < 0:
        raise RegistryError(
            "The daily limit must be zero or more.",
            code="invalid_amount",
            field="daily_limit",
        )
    if not asset.is_on_grid(daily_limit):
        raise RegistryError(
            f"{daily_limit} has more than {asset.scale} decimal places.",
            code="too_precise",
            field="daily_limit",
        )


def withdrawal_limit_set(
    *,
    account: Account,
    asset: Asset,
    daily_limit: Decimal | None,
    acting_user: User,
) -> WithdrawalLimit | None:
    """Set (or with ``None`` remove) the account's daily withdrawal limit of ``asset``.

    Locks the limit row if there is one; records an audit record
    (``withdrawal_limit_change``, ``{"ASSET": [before, after]}``) on the account
    when the limit changes. Joins the caller's transaction (the admin's) or opens
    one. Raises ``RegistryError`` (400) for a non-currency or a negative or
    too precise limit; nothing is changed then.
    """
    if daily_limit is not None:
        withdrawal_limit_check(asset, daily_limit)
    with transaction.atomic():
        current = (
            WithdrawalLimit.objects.select_for_update()
            .filter(account=account, asset=asset)
            .first()
        )
        before = None if current is None else current.daily_limit
        if before == daily_limit:
            return current
        if daily_limit is None:
            assert current is not None
            current.delete()
            result = None
        else:
            result, _ = WithdrawalLimit.objects.update_or_create(
                account=account, asset=asset, defaults={"daily_limit": daily_limit}
            )
        audit_record(
            actor=acting_user,
            action="withdrawal_limit_change",
            target=account,
            changes={asset.code: [_text(asset, before), _text(asset, daily_limit)]},
        )
        return result


def _text(asset: Asset, amount: Decimal | None) -> str | None:
    return None if amount is None else str(asset.quantize(amount))
