"""The error every order service raises: nothing was changed."""

from collections.abc import Callable
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from exchange.trading import (
    TradingError,
)

User = AbstractBaseUser | AnonymousUser

#: Above this an order's value (and its reservation) would not fit the ledger's
#: NUMERIC(30, 10) amounts.
MAX_ORDER_VALUE = Decimal(10) ** 18


class OrderError(Exception):
    """An order request that cannot be carried out; nothing was changed.

    ``code`` is the machine code of the API error, ``status`` its HTTP status.
    """

    def __init__(
        self, code: str, message: str, *, field: str = "", status: int = 400
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.status = status


def trading_checked(check: Callable[..., object], *args: object) -> None:
    """Run an ``exchange.trading`` check; its refusal becomes an ``OrderError``
    with the same code, message, field and status."""
    try:
        check(*args)
    except TradingError as error:
        raise OrderError(
            error.code, error.message, field=error.field, status=error.status
        ) from error
