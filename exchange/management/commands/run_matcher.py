"""``manage.py run_matcher --market XSX``: the matching worker for one or more markets.

Several copies may run for the same market: one owns it, the others stand by and
take over when the owner stops or dies (a PostgreSQL advisory lock decides).
"""

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from exchange.matching import MatchingWorker
from exchange.models import Market


class Command(BaseCommand):
    help = "Run the matching worker for the given market(s)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--market",
            action="append",
            required=True,
            help="Market code; repeat for several markets, or 'all'.",
        )
        parser.add_argument(
            "--batch-size", type=int, default=settings.MATCHER_BATCH_SIZE
        )
        parser.add_argument(
            "--poll-seconds", type=float, default=settings.MATCHER_POLL_SECONDS
        )

    def handle(self, *args: Any, **options: Any) -> None:
        codes: list[str] = options["market"]
        if codes == ["all"]:
            codes = list(Market.objects.values_list("code", flat=True))
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
        workers = [
            MatchingWorker(
                code,
                batch_size=options["batch_size"],
                poll_seconds=options["poll_seconds"],
                stop_event=stop,
            )
            for code in codes
        ]
        threads = [
            threading.Thread(target=worker.run, name=f"matcher-{worker.market_code}")
            for worker in workers
        ]
        self.stdout.write(f"matching {', '.join(codes)}", ending="\n")
        self.stdout.flush()
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(0.5)
