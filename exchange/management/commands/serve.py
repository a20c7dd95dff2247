"""``manage.py serve``: the whole platform in one process (the embedded profile).

Serves HTTP and the WebSocket stream with uvicorn, runs one matching thread per
market and (with the embedded profile's eager Celery) everything else in-process.
In the services profile run the processes of the ``Procfile`` instead.
"""

import threading
from typing import Any

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from exchange.matching import matcher_threads_start


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
        stop = threading.Event()
        if settings.MATCHER_IN_PROCESS and not options["no_matchers"]:
            threads = matcher_threads_start(stop)
            self.stdout.write(f"started {len(threads)} matching thread(s)")
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
