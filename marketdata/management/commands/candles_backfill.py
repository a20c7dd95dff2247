"""``manage.py candles_backfill [--symbol XSX:XS01] [--since 2026-11-01T00:00:00+11:00]``."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_datetime

from exchange.models import Symbol
from marketdata.prices import candles_rebuild


class Command(BaseCommand):
    help = (
        "Rebuild candles from trades (all symbols, or one; all time, or since a time)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--symbol", help="MARKET:CODE (default: every symbol)")
        parser.add_argument(
            "--since", help="ISO time with offset (default: all trades)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        symbols = Symbol.objects.select_related("market").order_by(
            "market__code", "code"
        )
        if options["symbol"]:
            market_code, _, code = options["symbol"].partition(":")
            symbols = symbols.filter(market__code=market_code, code=code)
            if not symbols.exists():
                raise CommandError(f"There is no symbol {options['symbol']!r}.")
        since = None
        if options["since"]:
            since = parse_datetime(options["since"])
            if since is None or since.tzinfo is None:
                raise CommandError("--since must be an ISO time with a UTC offset.")
        for symbol in symbols:
            folded = candles_rebuild(symbol=symbol, since=since)
            self.stdout.write(f"{symbol.identifier}: {folded} trades folded")
