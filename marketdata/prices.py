"""Level 1 summaries and OHLCV candles, kept by the matching worker's batches.

:func:`prices_apply` runs inside every matching batch transaction (registered as a
batch hook): it folds the batch's trades into the symbols' summaries and candles and
takes the best bid and ask from the worker's books, then returns the ``ticker`` and
``candles`` stream messages to publish after commit. Folding is incremental (a
candle remembers the last trade sequence it includes), never a recomputation.
"""

import zoneinfo
from collections import Counter, defaultdict
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Q

from config.db import bulk_update_rows
from exchange import engine
from exchange.matching import BatchOutcome
from exchange.models import Symbol, Trade
from exchange.selectors import snapshot_transaction
from exchange.streams import Message, stream_advance, stream_current, stream_message
from marketdata.models import INTERVAL_LENGTH, Candle, Interval, SecuritySummary
from marketdata.tasks import scans_evaluate_task
from marketdata.topics import Snapshot, register, symbol_or_error, unknown

SUMMARY_FIELDS = [
    "in_auction",
    "indicative_price",
    "indicative_quantity",
    "indicative_surplus",
    "indicative_surplus_side",
    "trading_date",
    "last",
    "last_quantity",
    "last_trade_at",
    "open",
    "high",
    "low",
    "previous_close",
    "volume",
    "value_traded",
    "trades",
    "best_bid",
    "best_bid_quantity",
    "best_bid_orders",
    "best_ask",
    "best_ask_quantity",
    "best_ask_orders",
    "updated_at",
]
CANDLE_FIELDS = ["high", "low", "close", "volume", "value", "trades", "last_trade_seq"]


def ticker_topic(symbol: Symbol) -> str:
    return f"ticker.{symbol.identifier}"


def candles_topic(symbol: Symbol, interval: str) -> str:
    return f"candles.{symbol.identifier}.{interval}"


# -- wire ---------------------------------------------------------------------------


def _price(symbol: Symbol, value: Decimal | None) -> str | None:
    return None if value is None else str(symbol.format_price(value))


def _quantity(symbol: Symbol, value: Decimal | None) -> str | None:
    return None if value is None else str(symbol.asset.quantize(value))


def summary_to_wire(summary: SecuritySummary, symbol: Symbol) -> dict[str, Any]:
    fine = symbol.price_unit.scaleb(-4)
    change = summary.change
    change_percent = summary.change_percent
    vwap = summary.vwap
    return {
        "symbol": symbol.identifier,
        # a symbol's own state (suspended, circuit-breaker halt) overrides its market's
        "state": (symbol.trading_state or symbol.market.state)
        if symbol.status == "active"
        else symbol.status,
        "trading_date": summary.trading_date.isoformat()
        if summary.trading_date
        else None,
        "last": _price(symbol, summary.last),
        "last_quantity": _quantity(symbol, summary.last_quantity),
        "last_trade_at": summary.last_trade_at.isoformat()
        if summary.last_trade_at
        else None,
        "change": _price(symbol, change),
        "change_percent": None
        if change_percent is None
        else str(change_percent.quantize(Decimal("0.01"))),
        "open": _price(symbol, summary.open),
        "high": _price(symbol, summary.high),
        "low": _price(symbol, summary.low),
        "previous_close": _price(symbol, summary.previous_close),
        "best_bid": _price(symbol, summary.best_bid),
        "best_bid_quantity": _quantity(symbol, summary.best_bid_quantity),
        "best_bid_orders": summary.best_bid_orders,
        "best_ask": _price(symbol, summary.best_ask),
        "best_ask_quantity": _quantity(symbol, summary.best_ask_quantity),
        "best_ask_orders": summary.best_ask_orders,
        "volume": _quantity(symbol, summary.volume),
        "value_traded": str(symbol.currency.quantize(summary.value_traded)),
        "trades": summary.trades,
        "vwap": None if vwap is None else str(vwap.quantize(fine)),
        "auction": {
            "in_auction": summary.in_auction,
            "indicative_price": _price(symbol, summary.indicative_price),
            "matched_quantity": _quantity(symbol, summary.indicative_quantity),
            "surplus": _quantity(symbol, summary.indicative_surplus),
            "surplus_side": summary.indicative_surplus_side or None,
        },
    }


def candle_to_wire(candle: Candle, symbol: Symbol) -> dict[str, Any]:
    return {
        "start": candle.start.isoformat(),
        "open": _price(symbol, candle.open),
        "high": _price(symbol, candle.high),
        "low": _price(symbol, candle.low),
        "close": _price(symbol, candle.close),
        "volume": _quantity(symbol, candle.volume),
        "value": str(symbol.currency.quantize(candle.value)),
        "trades": candle.trades,
    }


# -- time alignment -----------------------------------------------------------------


def candle_start(
    executed_at: datetime, interval: str, tz: zoneinfo.ZoneInfo
) -> datetime:
    """The start of the bar containing ``executed_at``, aligned on the market's
    local clock (daily bars at local midnight), as an aware UTC-comparable time."""
    local = executed_at.astimezone(tz)
    midnight = datetime.combine(local.date(), time(0), tzinfo=tz)
    if interval == Interval.D1:
        return midnight
    length = INTERVAL_LENGTH[Interval(interval)]
    # Wall-clock minutes since local midnight (DST days are 23 or 25 hours long).
    minutes = local.hour * 60 + local.minute
    step = int(length.total_seconds() // 60)
    start_minutes = minutes - minutes % step
    return datetime.combine(
        local.date(),
        time(start_minutes // 60, start_minutes % 60, fold=local.fold),
        tzinfo=tz,
    )


def trading_date_of(executed_at: datetime, tz: zoneinfo.ZoneInfo) -> date:
    return executed_at.astimezone(tz).date()


# -- the batch hook -----------------------------------------------------------------


def prices_apply(outcome: BatchOutcome) -> list[Message]:
    """Fold a batch into summaries and candles; return ticker and candle messages."""
    if not outcome.symbols:
        return []
    trades_by_symbol: defaultdict[int, list[Trade]] = defaultdict(list)
    for trade in outcome.trades:
        trades_by_symbol[trade.symbol_id].append(trade)
    summaries = _summaries_lock(sorted(outcome.symbols))
    tz = outcome.market.tzinfo
    for symbol_id, summary in summaries.items():
        for trade in trades_by_symbol.get(symbol_id, []):
            _fold_trade(summary, trade, tz)
        book = outcome.books.get(symbol_id)
        if book is not None:
            _set_top_of_book(summary, outcome.symbols[symbol_id], book)
            _set_auction(summary, outcome.symbols[symbol_id], book)
        summary.updated_at = outcome.now
    bulk_update_rows(SecuritySummary, list(summaries.values()), SUMMARY_FIELDS)
    candles = _candles_fold(outcome.trades, tz)
    symbol_ids = sorted(summaries)
    outcome.after_commit.append(lambda: scans_evaluate_task.delay(symbol_ids))
    return _messages(outcome, summaries, candles)


def _summaries_lock(symbol_ids: list[int]) -> dict[int, SecuritySummary]:
    SecuritySummary.objects.bulk_create(
        [SecuritySummary(symbol_id=symbol_id) for symbol_id in symbol_ids],
        ignore_conflicts=True,
    )
    rows = (
        SecuritySummary.objects.select_for_update()
        .filter(symbol_id__in=symbol_ids)
        .order_by("symbol_id")
    )
    return {row.symbol_id: row for row in rows}


def _fold_trade(summary: SecuritySummary, trade: Trade, tz: zoneinfo.ZoneInfo) -> None:
    trading_date = trading_date_of(trade.executed_at, tz)
    if summary.trading_date != trading_date:
        if summary.trading_date is not None:
            summary.previous_close = summary.last
        summary.trading_date = trading_date
        summary.open = summary.high = summary.low = None
        summary.volume = summary.value_traded = Decimal(0)
        summary.trades = 0
    price = trade.price
    summary.last = price
    summary.last_quantity = trade.quantity
    summary.last_trade_at = trade.executed_at
    summary.open = price if summary.open is None else summary.open
    summary.high = price if summary.high is None else max(summary.high, price)
    summary.low = price if summary.low is None else min(summary.low, price)
    summary.volume += trade.quantity
    summary.value_traded += trade.value
    summary.trades += 1


def _set_top_of_book(
    summary: SecuritySummary, symbol: Symbol, book: engine.OrderBook
) -> None:
    for side, top in (("bid", book.best_bid()), ("ask", book.best_ask())):
        if top is None:
            price = quantity = None
            orders = 0
        else:
            price, quantity = symbol.from_ticks(top[0]), symbol.from_lots(top[1])
            orders = top[2]
        setattr(summary, f"best_{side}", price)
        setattr(summary, f"best_{side}_quantity", quantity)
        setattr(summary, f"best_{side}_orders", orders)


def _set_auction(
    summary: SecuritySummary, symbol: Symbol, book: engine.OrderBook
) -> None:
    """The indicative uncross of a book collecting an auction (else cleared)."""
    found = book.indicative(book.last_price) if book.in_auction else None
    summary.in_auction = book.in_auction
    if found is None:
        summary.indicative_price = summary.indicative_quantity = None
        summary.indicative_surplus = None
        summary.indicative_surplus_side = ""
        return
    summary.indicative_price = symbol.from_ticks(found.price)
    summary.indicative_quantity = symbol.from_lots(found.matched)
    summary.indicative_surplus = symbol.from_lots(found.surplus)
    summary.indicative_surplus_side = (
        "" if found.surplus_side is None else found.surplus_side.value
    )


def _candles_fold(trades: list[Trade], tz: zoneinfo.ZoneInfo) -> list[Candle]:
    """Fold trades (in per-symbol ``seq`` order) into their candles; returns the
    candles changed, created or updated."""
    if not trades:
        return []
    keys = {
        (trade.symbol_id, interval, candle_start(trade.executed_at, interval, tz))
        for trade in trades
        for interval in Interval.values
    }
    query = Q()
    for symbol_id, interval, start in keys:
        query |= Q(symbol_id=symbol_id, interval=interval, start=start)
    existing = {
        (c.symbol_id, c.interval, c.start): c
        for c in Candle.objects.select_for_update().filter(query).order_by("pk")
    }
    created: dict[tuple[int, str, datetime], Candle] = {}
    for trade in sorted(trades, key=lambda t: (t.symbol_id, t.seq)):
        for interval in Interval.values:
            key = (
                trade.symbol_id,
                interval,
                candle_start(trade.executed_at, interval, tz),
            )
            candle = existing.get(key) or created.get(key)
            if candle is None:
                created[key] = _candle_new(trade, interval, key[2])
            elif trade.seq > candle.last_trade_seq:
                _candle_add(candle, trade)
    Candle.objects.bulk_create(list(created.values()))
    bulk_update_rows(Candle, list(existing.values()), CANDLE_FIELDS)
    return [*existing.values(), *created.values()]


def _candle_new(trade: Trade, interval: str, start: datetime) -> Candle:
    return Candle(
        symbol_id=trade.symbol_id,
        interval=interval,
        start=start,
        open=trade.price,
        high=trade.price,
        low=trade.price,
        close=trade.price,
        volume=trade.quantity,
        value=trade.value,
        trades=1,
        last_trade_seq=trade.seq,
    )


def _candle_add(candle: Candle, trade: Trade) -> None:
    candle.high = max(candle.high, trade.price)
    candle.low = min(candle.low, trade.price)
    candle.close = trade.price
    candle.volume += trade.quantity
    candle.value += trade.value
    candle.trades += 1
    candle.last_trade_seq = trade.seq


def _messages(
    outcome: BatchOutcome, summaries: dict[int, SecuritySummary], candles: list[Candle]
) -> list[Message]:
    counts: Counter[str] = Counter()
    for symbol_id in summaries:
        counts[ticker_topic(outcome.symbols[symbol_id])] += 1
    for candle in candles:
        counts[candles_topic(outcome.symbols[candle.symbol_id], candle.interval)] += 1
    next_seq = stream_advance(counts)
    messages: list[Message] = []
    for symbol_id, summary in summaries.items():
        symbol = outcome.symbols[symbol_id]
        topic = ticker_topic(symbol)
        messages.append(
            stream_message(topic, next_seq[topic], summary_to_wire(summary, symbol))
        )
    for candle in sorted(candles, key=lambda c: (c.symbol_id, c.interval, c.start)):
        symbol = outcome.symbols[candle.symbol_id]
        topic = candles_topic(symbol, candle.interval)
        messages.append(
            stream_message(topic, next_seq[topic], candle_to_wire(candle, symbol))
        )
        next_seq[topic] += 1
    return messages


# -- reads ------------------------------------------------------------------------------


def summary_snapshot(symbol: Symbol) -> dict[str, Any]:
    """The symbol's summary with the ``ticker`` sequence it reflects."""
    topic = ticker_topic(symbol)
    with snapshot_transaction():
        seq = stream_current([topic])[topic]
        summary = SecuritySummary.objects.filter(symbol=symbol).first()
    return {
        "seq": seq,
        **summary_to_wire(summary or SecuritySummary(symbol=symbol), symbol),
    }


def candles_list(
    symbol: Symbol,
    interval: str,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> list[Candle]:
    """Bars of ``interval`` with ``start`` in [start, end), oldest first; without a
    range the latest ``limit`` bars."""
    bars = Candle.objects.filter(symbol=symbol, interval=interval)
    if start is not None:
        bars = bars.filter(start__gte=start)
    if end is not None:
        bars = bars.filter(start__lt=end)
    if start is None:
        return list(reversed(bars.order_by("-start")[:limit]))
    return list(bars.order_by("start")[:limit])


# -- backfill ---------------------------------------------------------------------------


def candles_rebuild(*, symbol: Symbol, since: datetime | None = None) -> int:
    """Rebuild the symbol's candles from its trades (all, or from the daily bar
    containing ``since``); returns the number of trades folded. For a new interval
    or after repairing trades; regular updates are incremental."""
    tz = symbol.market.tzinfo
    with transaction.atomic():
        candles = Candle.objects.select_for_update().filter(symbol=symbol)
        trades = Trade.objects.filter(symbol=symbol).order_by("seq")
        if since is not None:
            floor = candle_start(since, Interval.D1, tz)
            candles = candles.filter(start__gte=floor)
            trades = trades.filter(executed_at__gte=floor)
        candles.delete()
        folded = 0
        chunk: list[Trade] = []
        for trade in trades.iterator(chunk_size=2000):
            chunk.append(trade)
            if len(chunk) == 2000:
                _candles_fold(chunk, tz)
                folded += len(chunk)
                chunk = []
        _candles_fold(chunk, tz)
        folded += len(chunk)
    return folded


# -- stream topics ----------------------------------------------------------------------


class TickerTopic:
    def upstreams(self, user: Any, argument: str) -> list[str]:
        return [ticker_topic(symbol_or_error("ticker", argument))]

    def snapshot(self, user: Any, argument: str, upstreams: list[str]) -> Snapshot:
        data = summary_snapshot(symbol_or_error("ticker", argument))
        return Snapshot(seq=data.pop("seq"), data=data)


class CandlesTopic:
    """``candles.<MARKET:CODE>.<interval>``: the latest bars, then each changed bar."""

    def _parse(self, argument: str) -> tuple[Symbol, str]:
        identifier, _, interval = argument.rpartition(".")
        if interval not in Interval.values:
            raise unknown(f"candles.{argument}")
        return symbol_or_error("candles", identifier), interval

    def upstreams(self, user: Any, argument: str) -> list[str]:
        symbol, interval = self._parse(argument)
        return [candles_topic(symbol, interval)]

    def snapshot(self, user: Any, argument: str, upstreams: list[str]) -> Snapshot:
        symbol, interval = self._parse(argument)
        topic = candles_topic(symbol, interval)
        with snapshot_transaction():
            seq = stream_current([topic])[topic]
            bars = candles_list(symbol, interval, None, None, 200)
        return Snapshot(
            seq=seq,
            data={
                "symbol": symbol.identifier,
                "interval": interval,
                "candles": [candle_to_wire(bar, symbol) for bar in bars],
            },
        )


register("ticker", TickerTopic())
register("candles", CandlesTopic())
