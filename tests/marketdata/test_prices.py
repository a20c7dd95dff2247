"""Level 1 summaries and candles: hand-computed bars, timezone alignment, wiring."""

import zoneinfo
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.management import call_command

from exchange.models import Trade
from marketdata.models import Candle, SecuritySummary
from marketdata.prices import _candles_fold, _fold_trade, candle_start, candles_rebuild
from oms.models import Order
from tests.conftest import wait_for

SYDNEY = zoneinfo.ZoneInfo("Australia/Sydney")


def local(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=SYDNEY)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_bars_align_on_the_market_clock_not_utc():
    # 00:05:30 on 23 Nov in Sydney (UTC+11) is still 22 Nov in UTC
    at = utc(2026, 11, 22, 13, 5, 30)
    assert candle_start(at, "1d", SYDNEY) == utc(2026, 11, 22, 13, 0)
    assert candle_start(at, "1h", SYDNEY) == utc(2026, 11, 22, 13, 0)
    assert candle_start(at, "5m", SYDNEY) == utc(2026, 11, 22, 13, 5)
    assert candle_start(at, "15m", SYDNEY) == utc(2026, 11, 22, 13, 0)
    assert candle_start(at, "1m", SYDNEY) == utc(2026, 11, 22, 13, 5)


def test_daily_bars_follow_the_dst_change():
    # Sydney moves from UTC+10 to UTC+11 at 02:00 on 4 October 2026
    assert candle_start(local(2026, 10, 4, 12, 0), "1d", SYDNEY) == utc(
        2026, 10, 3, 14, 0
    )
    assert candle_start(local(2026, 10, 5, 12, 0), "1d", SYDNEY) == utc(
        2026, 10, 4, 13, 0
    )
    # an intraday bar after the jump starts on the new offset
    assert candle_start(local(2026, 10, 4, 3, 7), "5m", SYDNEY) == utc(
        2026, 10, 3, 16, 5
    )


def make_trade(symbol, account, seq, at, price, quantity) -> Trade:
    price, quantity = Decimal(price), Decimal(quantity)
    return Trade.objects.create(
        symbol=symbol,
        seq=seq,
        price=price,
        quantity=quantity,
        value=price * quantity,
        aggressor_side="buy",
        buy_order_id=seq,
        sell_order_id=seq,
        buyer=account,
        seller=account,
        executed_at=at,
        settlement_date=at.date(),
        settled_at=at,
    )


def bars(symbol, interval):
    return [
        (c.start, c.open, c.high, c.low, c.close, c.volume, c.trades)
        for c in Candle.objects.filter(symbol=symbol, interval=interval).order_by(
            "start"
        )
    ]


@pytest.mark.django_db
def test_candles_for_a_known_sequence_of_trades_equal_hand_computed_bars(
    symbol, alice_account
):
    trades = [
        make_trade(
            symbol, alice_account, 1, local(2026, 11, 23, 9, 59, 30), "10.00", "10"
        ),
        make_trade(
            symbol, alice_account, 2, local(2026, 11, 23, 10, 0, 10), "10.20", "5"
        ),
        make_trade(
            symbol, alice_account, 3, local(2026, 11, 23, 10, 4, 59), "9.90", "20"
        ),
        make_trade(
            symbol, alice_account, 4, local(2026, 11, 24, 0, 30, 0), "11.00", "1"
        ),
    ]
    # folded in two batches, as the matcher would
    _candles_fold(trades[:2], SYDNEY)
    _candles_fold(trades[2:], SYDNEY)
    D = Decimal
    assert bars(symbol, "1m") == [
        (local(2026, 11, 23, 9, 59), D("10"), D("10"), D("10"), D("10"), D(10), 1),
        (
            local(2026, 11, 23, 10, 0),
            D("10.2"),
            D("10.2"),
            D("10.2"),
            D("10.2"),
            D(5),
            1,
        ),
        (local(2026, 11, 23, 10, 4), D("9.9"), D("9.9"), D("9.9"), D("9.9"), D(20), 1),
        (local(2026, 11, 24, 0, 30), D("11"), D("11"), D("11"), D("11"), D(1), 1),
    ]
    assert bars(symbol, "5m") == [
        (local(2026, 11, 23, 9, 55), D("10"), D("10"), D("10"), D("10"), D(10), 1),
        (
            local(2026, 11, 23, 10, 0),
            D("10.2"),
            D("10.2"),
            D("9.9"),
            D("9.9"),
            D(25),
            2,
        ),
        (local(2026, 11, 24, 0, 30), D("11"), D("11"), D("11"), D("11"), D(1), 1),
    ]
    # the daily bars split at Sydney midnight, which is 13:00 UTC the day before
    assert bars(symbol, "1d") == [
        (utc(2026, 11, 22, 13), D("10"), D("10.2"), D("9.9"), D("9.9"), D(35), 3),
        (utc(2026, 11, 23, 13), D("11"), D("11"), D("11"), D("11"), D(1), 1),
    ]
    # folding a trade again changes nothing (redelivered batch)
    _candles_fold(trades[2:3], SYDNEY)
    assert bars(symbol, "1d")[0][5:] == (D(35), 3)
    # and a backfill reproduces the incremental bars exactly
    before = {i: bars(symbol, i) for i in ("1m", "5m", "15m", "30m", "1h", "1d")}
    assert candles_rebuild(symbol=symbol) == 4
    assert {i: bars(symbol, i) for i in before} == before
    call_command("candles_backfill", "--symbol", "XSX:XS01")
    assert {i: bars(symbol, i) for i in before} == before


def test_a_new_trading_date_rolls_the_summary_over():
    summary = SecuritySummary(volume=Decimal(0), value_traded=Decimal(0), trades=0)
    day1 = Trade(
        price=Decimal("10.00"),
        quantity=Decimal(5),
        value=Decimal("50.00"),
        executed_at=local(2026, 11, 23, 15, 0),
    )
    day1b = Trade(
        price=Decimal("10.40"),
        quantity=Decimal(5),
        value=Decimal("52.00"),
        executed_at=local(2026, 11, 23, 15, 30),
    )
    day2 = Trade(
        price=Decimal("10.80"),
        quantity=Decimal(2),
        value=Decimal("21.60"),
        executed_at=local(2026, 11, 24, 10, 0),
    )
    for trade in (day1, day1b):
        _fold_trade(summary, trade, SYDNEY)
    assert (
        summary.open,
        summary.high,
        summary.low,
        summary.last,
        summary.volume,
        summary.vwap,
    ) == (
        Decimal("10.00"),
        Decimal("10.40"),
        Decimal("10.00"),
        Decimal("10.40"),
        Decimal(10),
        Decimal("10.2"),
    )
    _fold_trade(summary, day2, SYDNEY)
    assert (
        summary.previous_close,
        summary.open,
        summary.volume,
        summary.trades,
        summary.change,
    ) == (
        Decimal("10.40"),
        Decimal("10.80"),
        Decimal(2),
        1,
        Decimal("0.40"),
    )
    assert summary.change_percent is not None
    assert summary.change_percent.quantize(Decimal("0.0001")) == Decimal("3.8462")


@pytest.mark.django_db(transaction=True)
def test_matching_keeps_the_summary_and_candles_and_rest_serves_them(
    matcher, symbol, alice_client, bob_client, alice_account, bob_account
):
    def place(client, account, **body):
        response = client.post(
            "/api/v1/orders",
            {"account": account.pk, "symbol": "XSX:XS01", **body},
            format="json",
        )
        assert response.status_code == 201, response.json()
        return response.json()["id"]

    place(alice_client, alice_account, side="sell", price="10.00", quantity="30")
    place(alice_client, alice_account, side="sell", price="10.10", quantity="50")
    buy = place(bob_client, bob_account, side="buy", price="10.10", quantity="40")
    wait_for(lambda: Order.objects.get(pk=buy).status == "filled")
    place(bob_client, bob_account, side="buy", price="9.50", quantity="7")
    wait_for(
        lambda: SecuritySummary.objects.filter(
            symbol=symbol, best_bid__isnull=False
        ).exists()
    )

    summary = bob_client.get("/api/v1/symbols/XSX:XS01/summary").json()
    assert {
        k: summary[k]
        for k in (
            "last",
            "open",
            "high",
            "low",
            "volume",
            "value_traded",
            "trades",
            "vwap",
            "best_bid",
            "best_bid_quantity",
            "best_ask",
            "best_ask_quantity",
            "previous_close",
            "change",
        )
    } == {
        "last": "10.10",
        "open": "10.00",
        "high": "10.10",
        "low": "10.00",
        "volume": "40",
        "value_traded": "401.00",
        "trades": 2,
        "vwap": "10.025000",
        "best_bid": "9.50",
        "best_bid_quantity": "7",
        "best_ask": "10.10",
        "best_ask_quantity": "40",
        "previous_close": None,
        "change": None,
    }
    assert summary["seq"] >= 2
    candles = bob_client.get("/api/v1/symbols/XSX:XS01/candles?interval=1d").json()
    assert [
        (c["open"], c["high"], c["low"], c["close"], c["volume"], c["trades"])
        for c in candles
    ] == [("10.00", "10.10", "10.00", "10.10", "40", 2)]
    bad = bob_client.get("/api/v1/symbols/XSX:XS01/candles?interval=2m")
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_interval")
    bad = bob_client.get("/api/v1/symbols/XSX:XS01/candles?from=yesterday")
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_time")
    missing = bob_client.get("/api/v1/symbols/XSX:NOPE/summary")
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
