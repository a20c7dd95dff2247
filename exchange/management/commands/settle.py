"""``manage.py settle``: settle the trades that are due, now."""

from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from exchange.models import Market
from exchange.settlement import settlement_run


class Command(BaseCommand):
    help = (
        "Settle every trade whose settlement date has come (today in each market's "
        "timezone, or --as-of). Idempotent: trades already settled are left alone, "
        "and a run alongside the beat job settles each trade once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--as-of",
            type=date.fromisoformat,
            help="Settle trades due on or before this date (YYYY-MM-DD).",
        )
        parser.add_argument(
            "--market", action="append", help="Only this market code (repeatable)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        market_ids = None
        if options["market"]:
            markets = dict(
                Market.objects.filter(code__in=options["market"]).values_list(
                    "code", "pk"
                )
            )
            unknown = sorted(set(options["market"]) - markets.keys())
            if unknown:
                raise CommandError(f"Unknown market {', '.join(unknown)}.")
            market_ids = list(markets.values())
        result = settlement_run(as_of=options["as_of"], market_ids=market_ids)
        self.stdout.write(f"Settled {len(result.settled)} trades.")
        if result.failed:
            raise CommandError(
                "Could not settle trades "
                + ", ".join(str(pk) for pk in result.failed)
                + " (see the log)."
            )
