"""Waking a market's matching worker promptly when work arrives.

A ``NOTIFY`` issued inside the writing transaction is delivered at commit, so the
worker never wakes before the order is visible (both profiles run PostgreSQL). The
worker also polls, so a lost wake-up only delays, never loses, work.
"""

import logging
import re
import time

import psycopg
from django.db import connection

logger = logging.getLogger(__name__)


def _channel(market_code: str) -> str:
    return "xchange_market_" + re.sub(r"[^a-z0-9_]", "_", market_code.lower())


def market_notify(market_code: str) -> None:
    """Wake the market's worker once the current transaction commits."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, '')", [_channel(market_code)])


class MarketWaiter:
    """Blocks until the market is notified or a timeout passes.

    It LISTENs on a connection of its own. Losing that connection is
    never an error for the caller: ``wait`` reconnects with a capped exponential
    backoff (sleeping out the timeout meanwhile, so the worker falls back to
    polling) and reports a wake-up after reconnecting, since notifications sent
    while it was away are lost.
    """

    backoff_first = 0.1
    backoff_max = 5.0

    def __init__(self, market_code: str) -> None:
        self.market_code = market_code
        #: How many times the LISTEN connection was lost (for operators and tests).
        self.disconnects = 0
        self._pg: psycopg.Connection[tuple[object, ...]] | None = None
        self._params: dict[str, object] = {}
        self._backoff = self.backoff_first
        self._next_connect = 0.0
        params = connection.get_connection_params()
        for name in ("cursor_factory", "context", "prepare_threshold"):
            params.pop(name, None)
        self._params = params
        self._connect()

    def wait(self, timeout: float) -> bool:
        """Return True if woken by a notification (or a reconnection), False on
        timeout."""
        if self._pg is None:
            delay = self._next_connect - time.monotonic()
            if delay > 0:
                time.sleep(min(timeout, delay))
                return False
            return self._connect()
        try:
            woken = False
            for _ in self._pg.notifies(timeout=timeout, stop_after=1):
                woken = True
            # Drain anything else that queued up: one batch takes all of it.
            for _ in self._pg.notifies(timeout=0):
                woken = True
            return woken
        except psycopg.Error:
            logger.warning(
                "wake-up connection of market %s lost; reconnecting",
                self.market_code,
                exc_info=True,
            )
            self.disconnects += 1
            self.close()
            self._next_connect = time.monotonic() + self._backoff
            return False

    def _connect(self) -> bool:
        try:
            pg = psycopg.connect(**self._params, autocommit=True)  # type: ignore[arg-type]
            pg.execute(f"LISTEN {_channel(self.market_code)}")
        except psycopg.Error:
            logger.warning(
                "cannot LISTEN for market %s; retrying in %.1f s",
                self.market_code,
                self._backoff,
                exc_info=True,
            )
            self._next_connect = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self.backoff_max)
            return False
        self._pg = pg
        self._backoff = self.backoff_first
        return True

    @property
    def backend_pid(self) -> int | None:
        """The LISTEN session's server process id (None while disconnected)."""
        return None if self._pg is None else self._pg.info.backend_pid

    def close(self) -> None:
        if self._pg is not None:
            try:
                self._pg.close()
            except psycopg.Error:
                pass
            self._pg = None
