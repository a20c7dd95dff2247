"""Exactly one matching worker owns a market, and proves it in every batch.

Ownership is a session-level PostgreSQL advisory lock on the worker's own
connection (released by PostgreSQL when the session ends, however it ends). On
taking the lock the worker bumps the market's ``MarketOwner.epoch`` (its fencing
token); every batch transaction calls ``MarketOwnership.fence()`` first, which locks
that row, compares the epoch and checks that this very session still holds the
advisory lock. A worker whose session was killed, and which Django silently
reconnected, therefore fails the fence instead of writing over its successor.
"""

import hashlib
import logging
import os
import socket
import threading

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from exchange.models import Market, MarketOwner

logger = logging.getLogger(__name__)

_HELD_BY_ME = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
    " AND granted AND pid = pg_backend_pid() AND classid = %s AND objid = %s"
    " AND objsubid = 1 AND database = (SELECT oid FROM pg_database"
    " WHERE datname = current_database()))"
)


#: The fence in one statement: the owner row's lock and epoch, and whether this
#: very session holds the market's advisory lock.
_FENCE = (
    "SELECT epoch, EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
    " AND granted AND pid = pg_backend_pid() AND classid = %s AND objid = %s"
    " AND objsubid = 1 AND database = (SELECT oid FROM pg_database"
    " WHERE datname = current_database()))"
    " FROM exchange_marketowner WHERE market_id = %s FOR UPDATE"
)


class OwnershipLost(Exception):
    """This worker no longer owns the market: its batch must not be persisted."""


def advisory_key(market_code: str) -> int:
    digest = hashlib.sha256(f"xchange-matcher:{market_code}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _key_parts(market_code: str) -> list[int]:
    """The (classid, objid) pair under which ``pg_locks`` lists the bigint key."""
    unsigned = advisory_key(market_code) & 0xFFFFFFFFFFFFFFFF
    return [unsigned >> 32, unsigned & 0xFFFFFFFF]


def market_owned(market_code: str) -> bool:
    """Does some matching worker own the market right now?"""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
            " AND granted AND classid = %s AND objid = %s AND objsubid = 1"
            " AND database = (SELECT oid FROM pg_database"
            " WHERE datname = current_database()))",
            _key_parts(market_code),
        )
        return bool(cursor.fetchone()[0])


class MarketOwnership:
    """One worker's claim on one market: the advisory lock and the epoch it took
    when it acquired it."""

    def __init__(self, market_code: str) -> None:
        self.market_code = market_code
        self.epoch: int | None = None
        self.market_id: int | None = None

    def try_acquire(self) -> bool:
        """Take the market if nobody holds it, and bump its epoch.

        Runs its own transaction for the epoch (locks the ``MarketOwner`` row).
        Returns False, holding nothing, if another worker owns the market."""
        if not self._lock():
            return False
        try:
            self.epoch = self._epoch_bump()
        except BaseException:
            self.release()
            raise
        return True

    def fence(self) -> None:
        """Prove ownership inside the caller's batch transaction.

        Locks the market's ``MarketOwner`` row until the batch commits (a successor
        bumping the epoch waits for it), so call it before any other lock.
        Raises ``OwnershipLost`` if the epoch moved on or this session no longer
        holds the advisory lock."""
        assert connection.in_atomic_block
        assert self.market_id is not None, "fence() before acquire()"
        # One statement: the row lock (by id: a join would lock the market row
        # too), the epoch, and whether this very session holds the lock.
        with connection.cursor() as cursor:
            cursor.execute(_FENCE, [*_key_parts(self.market_code), self.market_id])
            row = cursor.fetchone()
        epoch, held = (None, False) if row is None else row
        if self.epoch is None or epoch != self.epoch:
            raise OwnershipLost(
                f"ownership lost: market {self.market_code} is at epoch {epoch},"
                f" this worker holds epoch {self.epoch}"
            )
        if not held:
            raise OwnershipLost(
                f"ownership lost: this session no longer holds the lock of market"
                f" {self.market_code} (epoch {self.epoch})"
            )

    def own_for_transaction(self) -> None:
        """Own the market for the caller's transaction only: a worker driven
        synchronously (tests, scripts), not by ``run()``.

        Takes the advisory lock at transaction level (``pg_try_advisory_xact_lock``,
        released at commit or rollback) and bumps the epoch in the same
        transaction, so a running owner's next batch fails its fence and rebuilds.
        Raises ``OwnershipLost`` if another worker owns the market."""
        assert connection.in_atomic_block
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_try_advisory_xact_lock(%s)",
                [advisory_key(self.market_code)],
            )
            taken = bool(cursor.fetchone()[0])
        if not taken:
            raise OwnershipLost(f"market {self.market_code} has another owner")
        self.epoch = self._epoch_bump_in_transaction()

    def is_held(self) -> bool:
        """Does this worker's current database session hold the market's lock?"""
        with connection.cursor() as cursor:
            cursor.execute(_HELD_BY_ME, _key_parts(self.market_code))
            return bool(cursor.fetchone()[0])

    def release(self) -> None:
        """Give the market up (best effort: a dead session has released it)."""
        self.epoch = None
        if connection.connection is not None:
            try:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_advisory_unlock(%s)",
                        [advisory_key(self.market_code)],
                    )
            except DatabaseError:
                pass

    def _lock(self) -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_try_advisory_lock(%s)", [advisory_key(self.market_code)]
            )
            return bool(cursor.fetchone()[0])

    def _epoch_bump(self) -> int:
        with transaction.atomic(durable=True):
            epoch = self._epoch_bump_in_transaction()
        logger.info(
            "matcher %s took market %s at epoch %s",
            _holder(),
            self.market_code,
            epoch,
        )
        return epoch

    def _epoch_bump_in_transaction(self) -> int:
        market = Market.objects.get(code=self.market_code)
        self.market_id = market.pk
        owner, _ = MarketOwner.objects.select_for_update().get_or_create(
            market_id=market.pk
        )
        owner.epoch += 1
        owner.holder = _holder()[:200]
        owner.acquired_at = timezone.now()
        owner.save(update_fields=["epoch", "holder", "acquired_at"])
        return owner.epoch


def _holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.current_thread().name}"
