"""``manage.py serve``: the whole platform in one process (the embedded profile).

Serves HTTP and the WebSocket stream with uvicorn, runs one matching thread per
market and (with the embedded profile's eager Celery) everything else in-process,
including the session schedule (``sessions_advance_task``, as beat would run it).
In the services profile run the processes of the ``Procfile`` instead.

In the embedded profile it starts the embedded PostgreSQL if it is not running and
stops it on exit unless another process is still connected (``config.embedded_db``).
"""

import logging
import signal
import threading
from types import FrameType
from typing import Any, NoReturn

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import connections

from config import embedded_db
from exchange.matching import matcher_threads_start
from exchange.tasks import sessions_advance_task

logger = logging.getLogger(__name__)


def _run_schedule(stop: threading.Event, seconds: float) -> None:
    """The embedded profile's beat for the session schedule."""
    try:
        while not stop.wait(seconds):
            try:
                sessions_advance_task()
            except Exception:  # the next run tries again
                logger.exception("sessions_advance failed")
    finally:
        connections.close_all()


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> NoReturn:
    """uvicorn shuts down gracefully on SIGTERM, then raises the signal again under
    the handler it found; the default one would end the process before serve's
    cleanup (matching threads, the embedded database) ran."""
    raise SystemExit(0)


class Command(BaseCommand):
    help = "Run the web server, WebSocket stream and matching threads in one process."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--no-matchers",
            action="store_true",
            help="Do not start matching threads (run run_matcher separately).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        if settings.PROFILE == "embedded":
            embedded_db.server_ensure(settings.EMBEDDED_PGDATA)
        try:
            self._serve(options)
        finally:
            if settings.PROFILE == "embedded":
                self._embedded_database_stop()

    def _embedded_database_stop(self) -> None:
        """Stop the embedded server unless another process (a ``run_matcher``, a
        shell) still uses it; this process's own sessions end with it."""
        connections.close_all()
        if embedded_db.server_stop_unless_used(settings.EMBEDDED_PGDATA):
            self.stdout.write("stopped the embedded PostgreSQL")
        else:
            self.stdout.write("left the embedded PostgreSQL running (in use)")

    def _serve(self, options: dict[str, Any]) -> None:
        stop = threading.Event()
        threads: list[threading.Thread] = []
        if settings.MATCHER_IN_PROCESS and not options["no_matchers"]:
            threads = matcher_threads_start(stop)
            self.stdout.write(f"started {len(threads)} matching thread(s)")
        if settings.CELERY_TASK_ALWAYS_EAGER:
            seconds = float(
                str(settings.CELERY_BEAT_SCHEDULE["sessions-advance"]["schedule"])
            )
            threading.Thread(
                target=_run_schedule,
                args=(stop, seconds),
                name="session-schedule",
                daemon=True,
            ).start()
        try:
            uvicorn.run(
                "config.asgi:application",
                host=options["host"],
                port=options["port"],
                lifespan="off",
                log_level="warning",
            )
        finally:
            stop.set()
            # A matcher notices the stop within its poll; let a batch in flight
            # commit (and its connections close) before the database may stop.
            for thread in threads:
                thread.join(settings.MATCHER_POLL_SECONDS + 10)
