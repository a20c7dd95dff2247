"""Exactly one matching worker owns a market."""

import hashlib
import logging
import threading
from collections import defaultdict

from django.db import (
    DatabaseError,
    connection,
)

logger = logging.getLogger(__name__)


_local_owners: dict[str, threading.Lock] = defaultdict(threading.Lock)


def advisory_key(market_code: str) -> int:
    digest = hashlib.sha256(f"xchange-matcher:{market_code}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def market_owned(market_code: str) -> bool:
    """Does some matching worker own the market right now?"""
    if connection.vendor == "postgresql":
        unsigned = advisory_key(market_code) & 0xFFFFFFFFFFFFFFFF
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
                " AND granted AND classid = %s AND objid = %s AND objsubid = 1"
                " AND database = (SELECT oid FROM pg_database"
                " WHERE datname = current_database()))",
                [unsigned >> 32, unsigned & 0xFFFFFFFF],
            )
            return bool(cursor.fetchone()[0])
    return _local_owners[market_code].locked()


class MarketOwnership:
    """Exactly one owner per market: a session-level advisory lock held on the
    worker's own database connection (released by PostgreSQL if the process or
    the connection dies), or a process-local lock for SQLite."""

    def __init__(self, market_code: str) -> None:
        self.market_code = market_code
        self._local: threading.Lock | None = None

    def try_acquire(self) -> bool:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_try_advisory_lock(%s)", [advisory_key(self.market_code)]
                )
                return bool(cursor.fetchone()[0])
        lock = _local_owners[self.market_code]
        if lock.acquire(blocking=False):
            self._local = lock
            return True
        return False

    def release(self) -> None:
        if self._local is not None:
            self._local.release()
            self._local = None
        elif connection.vendor == "postgresql" and connection.connection is not None:
            try:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_advisory_unlock(%s)",
                        [advisory_key(self.market_code)],
                    )
            except DatabaseError:
                pass
