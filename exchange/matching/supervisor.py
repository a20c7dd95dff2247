"""Running matching workers for many markets in one process, new markets included."""

import logging
import threading
from collections.abc import Callable

from django.conf import settings
from django.db import DatabaseError, connections

from exchange.matching.worker import MatchingWorker
from exchange.models import Market

logger = logging.getLogger(__name__)


class MatcherSupervisor:
    """One ``MatchingWorker`` thread per market in this process.

    With ``market_codes=None`` it serves every market and looks for markets created
    since (in the admin, say) every ``discover_seconds``, starting a worker thread
    for each, so a new market matches without a restart. With a fixed list it
    serves just those. Each worker still competes for its market's lock, so several
    supervisors (processes, hosts) may run: one owns each market, the rest stand by.
    """

    def __init__(
        self,
        market_codes: list[str] | None,
        *,
        stop_event: threading.Event,
        batch_size: int | None = None,
        poll_seconds: float | None = None,
        discover_seconds: float | None = None,
        daemon: bool = False,
    ) -> None:
        self.market_codes = market_codes
        self.stop_event = stop_event
        self.batch_size = batch_size or settings.MATCHER_BATCH_SIZE
        self.poll_seconds = poll_seconds or settings.MATCHER_POLL_SECONDS
        self.discover_seconds = discover_seconds or settings.MATCHER_DISCOVER_SECONDS
        self.daemon = daemon
        self.workers: dict[str, MatchingWorker] = {}
        self.threads: dict[str, threading.Thread] = {}

    def discover(self) -> list[str]:
        """Start a worker thread for each market not served yet; returns their
        codes. Reads the market list on the calling thread's connection."""
        codes = (
            list(Market.objects.order_by("code").values_list("code", flat=True))
            if self.market_codes is None
            else self.market_codes
        )
        started = [code for code in codes if code not in self.workers]
        for code in started:
            self._start(code)
        return started

    def _start(self, code: str) -> None:
        worker = MatchingWorker(
            code,
            batch_size=self.batch_size,
            poll_seconds=self.poll_seconds,
            stop_event=self.stop_event,
        )
        thread = threading.Thread(
            target=_run_closing_connections,
            args=(worker.run,),
            name=f"matcher-{code}",
            daemon=self.daemon,
        )
        self.workers[code] = worker
        self.threads[code] = thread
        thread.start()
        logger.info("started the matching worker of market %s", code)

    def watch(self) -> None:
        """Discover new markets until stopped (only with ``market_codes=None``)."""
        try:
            while not self.stop_event.wait(self.discover_seconds):
                try:
                    self.discover()
                except DatabaseError:  # the next round tries again
                    logger.exception("market discovery failed")
                    connections.close_all()
        finally:
            connections.close_all()

    def start(self) -> "MatcherSupervisor":
        """Start the workers of the markets known now and, when serving every
        market, a thread that watches for new ones."""
        self.discover()
        if self.market_codes is None:
            threading.Thread(
                target=self.watch, name="matcher-discovery", daemon=self.daemon
            ).start()
        return self

    def join(self, timeout: float) -> bool:
        """Wait a little for the workers; True while any is alive."""
        alive = False
        for thread in list(self.threads.values()):
            thread.join(timeout)
            alive = alive or thread.is_alive()
        return alive or not self.stop_event.is_set()


def _run_closing_connections(target: Callable[[], None]) -> None:
    try:
        target()
    finally:
        connections.close_all()


def matcher_threads_start(stop_event: threading.Event) -> list[threading.Thread]:
    """Start a matching thread per market, and for each market created later
    (embedded profile); returns the threads started now."""
    supervisor = MatcherSupervisor(None, stop_event=stop_event, daemon=True).start()
    return list(supervisor.threads.values())
