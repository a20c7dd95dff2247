"""Summaries and candles after a trade bust or correction: recomputed, not folded.

The matching worker folds trades into summaries and candles incrementally
(``marketdata.prices``). A bust removes a trade from market data, which folding
cannot undo, so :func:`prices_after_bust` (registered as a bust hook, run inside
the bust's transaction) recomputes from the symbol's remaining (not busted) trades:

- the summary's day figures (open, high, low, volume, value traded, trades, and so
  the vwap) over its trading date, ``last`` / ``last_quantity`` / ``last_trade_at``
  from the latest remaining trade, and ``previous_close`` when the busted trade
  was on an earlier trading date (the last remaining trade before the summary's
  trading date);
- every bar (each interval) that contained the busted trade; a bar left with no
  trade is deleted and published with ``trades: 0`` and null prices;
- a correction's replacement trade is folded into its bars like a matched trade.

Locks, after the bust's trade, balance and ``trades`` stream locks: the symbol's
summary row, then its candle rows, then the ``ticker`` / ``candles`` stream
sequences (the order the matching batch takes them in). Returns the ``ticker`` and
``candles`` messages to publish on commit.
"""

from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.db.models import QuerySet

from exchange.models import Symbol, Trade
from exchange.streams import Message, stream_advance, stream_message
from marketdata.models import INTERVAL_LENGTH, Candle, Interval, SecuritySummary
from marketdata.prices import (
    SUMMARY_FIELDS,
    _candles_fold,
    _fold_trade,
    _summaries_lock,
    candle_start,
    candle_to_wire,
    candles_topic,
    summary_to_wire,
    ticker_topic,
    trading_date_of,
)

#: Wider than any bar, so a DST change cannot push a trade of the bar outside it.
_BAR_MARGIN = timedelta(hours=2)


def prices_after_bust(busted: Trade, correction: Trade | None) -> list[Message]:
    """Recompute the summary and the busted trade's bars; fold the correction."""
    symbol = (
        Symbol.objects.select_related("market", "asset", "currency")
        .filter(pk=busted.symbol_id)
        .get()
    )
    tz = symbol.market.tzinfo
    # As if the busted trade had never happened, then the correction folded in
    # like any matched trade (it may fall on a later trading date, or bar).
    remaining = Trade.objects.filter(symbol=symbol, busted_at__isnull=True)
    if correction is not None:
        remaining = remaining.exclude(pk=correction.pk)
    summary = _summaries_lock([symbol.pk])[symbol.pk]
    _summary_recompute(summary, remaining, busted, tz)
    bars = {
        (bar.interval, bar.start): bar
        for bar in _bars_recompute(symbol, remaining, busted, tz)
    }
    if correction is not None:
        _fold_trade(summary, correction, tz)
        for bar in _candles_fold([correction], tz):
            bars[(bar.interval, bar.start)] = bar
    summary.save(update_fields=SUMMARY_FIELDS)
    return _messages(symbol, summary, list(bars.values()))


def _summary_recompute(
    summary: SecuritySummary, trades: QuerySet[Trade], busted: Trade, tz: ZoneInfo
) -> None:
    """Set the summary's trade figures from ``trades`` (see the module)."""
    latest = trades.order_by("-seq").first()
    summary.last = None if latest is None else latest.price
    summary.last_quantity = None if latest is None else latest.quantity
    summary.last_trade_at = None if latest is None else latest.executed_at
    if summary.trading_date is None:
        return
    day_start = datetime.combine(summary.trading_date, datetime.min.time(), tzinfo=tz)
    if trading_date_of(busted.executed_at, tz) < summary.trading_date:
        before = trades.filter(executed_at__lt=day_start).order_by("-seq").first()
        summary.previous_close = None if before is None else before.price
    day = [
        trade
        for trade in trades.filter(executed_at__gte=day_start).order_by("seq")
        if trading_date_of(trade.executed_at, tz) == summary.trading_date
    ]
    prices = [trade.price for trade in day]
    summary.open = prices[0] if prices else None
    summary.high = max(prices, default=None)
    summary.low = min(prices, default=None)
    summary.volume = sum((trade.quantity for trade in day), Decimal(0))
    summary.value_traded = sum((trade.value for trade in day), Decimal(0))
    summary.trades = len(day)


def _bars_recompute(
    symbol: Symbol, remaining: QuerySet[Trade], busted: Trade, tz: ZoneInfo
) -> list[Candle]:
    """Recompute from ``remaining`` (or delete, if emptied) each bar that held the
    busted trade."""
    changed: list[Candle] = []
    for interval in Interval.values:
        start = candle_start(busted.executed_at, interval, tz)
        bar = (
            Candle.objects.select_for_update()
            .filter(symbol=symbol, interval=interval, start=start)
            .first()
        )
        if bar is None:
            continue
        length = INTERVAL_LENGTH[Interval(interval)]
        trades = [
            trade
            for trade in remaining.filter(
                executed_at__gte=start - _BAR_MARGIN,
                executed_at__lt=start + length + _BAR_MARGIN,
            ).order_by("seq")
            if candle_start(trade.executed_at, interval, tz) == start
        ]
        if trades:
            _bar_set(bar, trades)
            bar.save()
        else:
            bar.delete()
            bar.trades = 0
        changed.append(bar)
    return changed


def _bar_set(bar: Candle, trades: list[Trade]) -> None:
    prices = [trade.price for trade in trades]
    bar.open, bar.close = prices[0], prices[-1]
    bar.high, bar.low = max(prices), min(prices)
    bar.volume = sum((trade.quantity for trade in trades), Decimal(0))
    bar.value = sum((trade.value for trade in trades), Decimal(0))
    bar.trades = len(trades)
    bar.last_trade_seq = trades[-1].seq


def bar_to_wire(bar: Candle, symbol: Symbol) -> dict[str, Any]:
    """A bar's message; an emptied (deleted) bar has null prices and no trades."""
    if bar.trades:
        return candle_to_wire(bar, symbol)
    return {
        "start": bar.start.isoformat(),
        "open": None,
        "high": None,
        "low": None,
        "close": None,
        "volume": str(symbol.asset.quantize(Decimal(0))),
        "value": str(symbol.currency.quantize(Decimal(0))),
        "trades": 0,
    }


def _messages(
    symbol: Symbol, summary: SecuritySummary, bars: list[Candle]
) -> list[Message]:
    counts: Counter[str] = Counter({ticker_topic(symbol): 1})
    for bar in bars:
        counts[candles_topic(symbol, bar.interval)] += 1
    next_seq = stream_advance(counts)
    topic = ticker_topic(symbol)
    messages = [
        stream_message(topic, next_seq[topic], summary_to_wire(summary, symbol))
    ]
    for bar in sorted(bars, key=lambda b: (b.interval, b.start)):
        topic = candles_topic(symbol, bar.interval)
        messages.append(
            stream_message(topic, next_seq[topic], bar_to_wire(bar, symbol))
        )
        next_seq[topic] += 1
    return messages
