"""Test data builders. They go through the services where money moves."""

from decimal import Decimal
from itertools import count
from typing import Any

from django.contrib.auth import get_user_model

from exchange.models import Market, Symbol
from exchange.services import symbol_issue, trading_states_create_standard
from registry.models import Account, AccountAccess, Asset
from registry.services import account_access_grant, cash_deposit, security_issue

_numbers = count(1)


def currency(code: str = "AUD", scale: int = 2) -> Asset:
    asset, _ = Asset.objects.get_or_create(
        code=code, defaults={"name": code, "kind": Asset.Kind.CURRENCY, "scale": scale}
    )
    return asset


def market(code: str = "XSX", **options: object) -> Market:
    options.setdefault("currency", currency())
    options.setdefault("name", f"{code} Exchange")
    options.setdefault("timezone", "Australia/Sydney")
    created = Market.objects.create(code=code, **options)
    trading_states_create_standard(created)
    return created


def symbol(market_: Market, code: str = "XS01", **options: Any) -> Symbol:
    return symbol_issue(
        market=market_, code=code, name=f"{code} Ltd", acting_user=None, **options
    )


def user(
    username: str = "", *, is_staff: bool = False, password: str = "pw-secret-123"
):
    username = username or f"user{next(_numbers)}"
    return get_user_model().objects.create_user(
        username=username, password=password, is_staff=is_staff, is_superuser=is_staff
    )


def account(
    owner=None,
    *,
    cash: str = "0",
    holdings: dict[Symbol, str] | None = None,
    role: str = AccountAccess.Role.OWNER,
    currency_: Asset | None = None,
) -> Account:
    number = f"C{next(_numbers):05d}"
    acct = Account.objects.create(
        number=number, name=f"Client {number}", currency=currency_ or currency()
    )
    if owner is not None:
        account_access_grant(account=acct, user=owner, role=role, acting_user=None)
    if Decimal(cash):
        cash_deposit(
            account=acct, asset=acct.currency, amount=Decimal(cash), acting_user=None
        )
    for sym, quantity in (holdings or {}).items():
        security_issue(
            account=acct, asset=sym.asset, amount=Decimal(quantity), acting_user=None
        )
    return acct
