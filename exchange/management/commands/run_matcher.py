"""``manage.py run_matcher --market XSX``: the matching worker for one or more markets.

Several copies may run for the same market: one owns it, the others stand by and
take over when the owner stops or dies (a PostgreSQL advisory lock decides, and an
epoch fences every batch). ``--market all`` runs a worker thread for every market,
and starts one for each market created later (checked every
``MATCHER_DISCOVER_SECONDS``).
"""

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from exchange.matching import MatcherSupervisor
from exchange.models import Market


class Command(BaseCommand):
    help = "Run the matching worker for the given market(s)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--market",
            action="append",
            required=True,
            help="Market code; repeat for several markets, or 'all' (new markets"
            " included).",
        )
        parser.add_argument(
            "--batch-size", type=int, default=settings.MATCHER_BATCH_SIZE
        )
        parser.add_argument(
            "--poll-seconds", type=float, default=settings.MATCHER_POLL_SECONDS
        )
        parser.add_argument(
            "--discover-seconds",
            type=float,
            default=settings.MATCHER_DISCOVER_SECONDS,
        )

    def handle(self, *args: Any, **options: Any) -> None:
        requested: list[str] = options["market"]
        codes: list[str] | None = None
        if requested != ["all"]:
            codes = requested
            unknown = set(codes) - set(
                Market.objects.filter(code__in=codes).values_list("code", flat=True)
            )
            if unknown:
                raise CommandError(f"Unknown market(s): {', '.join(sorted(unknown))}")
        stop = threading.Event()

        def request_stop(signum: int, frame: object) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        supervisor = MatcherSupervisor(
            codes,
            stop_event=stop,
            batch_size=options["batch_size"],
            poll_seconds=options["poll_seconds"],
            discover_seconds=options["discover_seconds"],
        ).start()
        served = "all markets" if codes is None else ", ".join(codes)
        self.stdout.write(f"matching {served}", ending="\n")
        self.stdout.flush()
        while supervisor.join(0.5):
            pass
