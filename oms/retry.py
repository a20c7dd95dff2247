"""A bounded retry of an order-path service transaction that lost a lock race."""

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.db import OperationalError, connection

from oms.errors import OrderError

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: PostgreSQL's deadlock_detected and serialization_failure.
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
#: Attempts in all (the first and the retries).
ATTEMPTS = 4


def is_lock_conflict(error: BaseException) -> bool:
    """Whether ``error`` is a deadlock or serialization failure (the transaction
    was rolled back and may simply be run again)."""
    cause = error.__cause__
    return getattr(cause, "sqlstate", None) in _RETRYABLE_SQLSTATES


def retry_on_conflict(service: Callable[P, R]) -> Callable[P, R]:
    """Run a top-level service (one that owns a ``durable`` transaction) again
    when PostgreSQL aborted its transaction for a deadlock or a serialization
    failure, up to ``ATTEMPTS`` times with a short jittered pause; then raise
    ``OrderError`` ``busy`` (503). Inside an outer transaction the error is
    raised as it is (only the owner of the transaction can run it again)."""

    @functools.wraps(service)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return service(*args, **kwargs)
            except OperationalError as error:
                if connection.in_atomic_block or not is_lock_conflict(error):
                    raise
                logger.warning(
                    "%s: lock conflict (attempt %s): %s",
                    service.__name__,
                    attempt,
                    error,
                )
                if attempt == ATTEMPTS:
                    raise OrderError(
                        "busy",
                        "The exchange is busy; try again.",
                        status=503,
                    ) from error
                # Jitter so that two retrying clients do not collide again.
                time.sleep(0.01 * attempt + random.random() * 0.02)  # noqa: S311
        raise AssertionError("unreachable")

    return run
