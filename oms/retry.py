"""A bounded retry of an order-path service transaction that lost a lock race or
its database session."""

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.db import InterfaceError, OperationalError, connection

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


#: The session ended under the transaction (admin shutdown, crash, connection
#: failure): the transaction was rolled back with it.
_SESSION_LOST_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def is_session_lost(error: BaseException) -> bool:
    """Whether ``error`` means the database session is gone (the open transaction,
    if any, rolled back with it; a new connection can run the service again)."""
    if isinstance(error, InterfaceError):
        return True
    sqlstate = getattr(error.__cause__, "sqlstate", None)
    if sqlstate is None or sqlstate in _SESSION_LOST_SQLSTATES:
        # The server names every error it raises with a SQLSTATE; an error
        # without one is the client's: the connection failed.
        return True
    if sqlstate.startswith("08"):
        return True
    return connection.connection is None or not connection.is_usable()


def retry_on_conflict(service: Callable[P, R]) -> Callable[P, R]:
    """Run a top-level service (one that owns a ``durable`` transaction) again
    when PostgreSQL aborted its transaction for a deadlock or a serialization
    failure, or when its database session was lost (the connection is closed and
    reopened), up to ``ATTEMPTS`` times with a short jittered pause; then raise
    ``OrderError`` ``busy`` (503). The services it wraps are idempotent when run
    again after a commit whose answer was lost (``order_place`` fixes the
    ``client_order_id`` before it is retried; cancels queue at most one request).
    Inside an outer transaction the error is raised as it is (only the owner of
    the transaction can run it again)."""

    @functools.wraps(service)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return service(*args, **kwargs)
            except (OperationalError, InterfaceError) as error:
                if connection.in_atomic_block:
                    raise
                if is_lock_conflict(error):
                    reason = "lock conflict"
                elif is_session_lost(error):
                    reason = "database session lost"
                    connection.close()
                else:
                    raise
                logger.warning(
                    "%s: %s (attempt %s): %s",
                    service.__name__,
                    reason,
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
