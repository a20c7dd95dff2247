"""Waking a market's matching worker promptly when work arrives.

On PostgreSQL a ``NOTIFY`` issued inside the writing transaction is delivered at
commit, so the worker never wakes before the order is visible. In the embedded
profile (SQLite, one process) an in-process event is set on commit instead. Either
way the worker also polls, so a lost wake-up only delays, never loses, work.
"""

import re
import threading
from collections import defaultdict

import psycopg
from django.db import connection, transaction

_local_events: defaultdict[str, threading.Event] = defaultdict(threading.Event)
_local_lock = threading.Lock()


def _channel(market_code: str) -> str:
    return "xchange_market_" + re.sub(r"[^a-z0-9_]", "_", market_code.lower())


def _local_event(market_code: str) -> threading.Event:
    with _local_lock:
        return _local_events[market_code]


def market_notify(market_code: str) -> None:
    """Wake the market's worker once the current transaction commits."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [_channel(market_code)])
    else:
        event = _local_event(market_code)
        transaction.on_commit(event.set)


class MarketWaiter:
    """Blocks until the market is notified or a timeout passes."""

    def __init__(self, market_code: str) -> None:
        self.market_code = market_code
        self._pg: psycopg.Connection[tuple[object, ...]] | None = None
        if connection.vendor == "postgresql":
            params = connection.get_connection_params()
            params.pop("cursor_factory", None)
            params.pop("context", None)
            params.pop("prepare_threshold", None)
            self._pg = psycopg.connect(**params, autocommit=True)
            self._pg.execute(f"LISTEN {_channel(market_code)}")

    def wait(self, timeout: float) -> bool:
        """Return True if woken by a notification, False on timeout."""
        if self._pg is not None:
            woken = False
            for _ in self._pg.notifies(timeout=timeout, stop_after=1):
                woken = True
            # Drain anything else that queued up: one batch takes all of it.
            for _ in self._pg.notifies(timeout=0):
                woken = True
            return woken
        event = _local_event(self.market_code)
        woken = event.wait(timeout)
        event.clear()
        return woken

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
            self._pg = None
