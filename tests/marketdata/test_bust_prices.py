"""Market data after a bust or a correction: flagged on the tape, and the summary
and bars recomputed from the remaining trades in the bust's transaction."""

import threading
import zoneinfo
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.db import connections
from django.test import Client
from django.urls import reverse

from exchange.busts import trade_bust, trade_correct
from exchange.models import Trade
from marketdata.models import Candle, SecuritySummary
from tests import factories
from tests.conftest import assert_trading_consistent, client_for, wait_for
from tests.trading import cross, place

pytestmark = pytest.mark.django_db(transaction=True)

SYDNEY = zoneinfo.ZoneInfo("Australia/Sydney")
D = Decimal
SUMMARY_KEYS = ["last", "open", "high", "low", "volume", "value_traded", "trades"]


def local(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=SYDNEY)


@pytest.fixture
def tape(symbol, alice_client, alice_account, bob_client, bob_account):
    """Three trades on Wednesday 25 November 2026 (Sydney): 100 @ 10.00 at 10:00,
    40 @ 12.00 at 10:01, 10 @ 11.00 at 10:07; alice sells, bob buys."""
    made = []
    for at, price, quantity in [
        (local(2026, 11, 25, 10, 0, 10), "10.00", "100"),
        (local(2026, 11, 25, 10, 1, 20), "12.00", "40"),
        (local(2026, 11, 25, 10, 7, 0), "11.00", "10"),
    ]:
        with time_machine.travel(at, tick=False):
            made.append(
                cross(
                    (alice_client, alice_account),
                    (bob_client, bob_account),
                    price=price,
                    quantity=quantity,
                    matcher=False,
                )
            )
    return made


@pytest.fixture
def staff(db):
    return factories.user("staff", is_staff=True)


def summary(client: Any) -> dict[str, Any]:
    body = client.get("/api/v1/symbols/XSX:XS01/summary").json()
    return {key: body[key] for key in [*SUMMARY_KEYS, "vwap"]}


def bars(symbol, interval: str) -> list[tuple[Any, ...]]:
    rows = Candle.objects.filter(symbol=symbol, interval=interval).order_by("start")
    return [
        (
            f"{c.start.astimezone(SYDNEY):%H:%M}",
            *(c.open, c.high, c.low, c.close, c.volume, c.trades),
        )
        for c in rows
    ]


def tape_of(client: Any) -> list[tuple[str, str, bool]]:
    rows = client.get("/api/v1/symbols/XSX:XS01/trades").json()["results"]
    return [(row["price"], row["quantity"], row["busted"]) for row in rows]


def test_a_bust_flags_the_trade_and_recomputes_the_summary_and_bars(
    symbol, tape, staff, alice
):
    client = client_for(alice)
    assert summary(client) == {
        "last": "11.00",
        "open": "10.00",
        "high": "12.00",
        "low": "10.00",
        "volume": "150",
        "value_traded": "1590.00",
        "trades": 3,
        "vwap": "10.600000",
    }
    assert bars(symbol, "5m") == [
        ("10:00", D("10.00"), D("12.00"), D("10.00"), D("12.00"), D(140), 2),
        ("10:05", D("11.00"), D("11.00"), D("11.00"), D("11.00"), D(10), 1),
    ]

    # when the 12.00 trade (the day's high) is busted
    trade_bust(trade=tape[1], acting_user=staff, reason="Erroneous price")

    # then it stays on the tape, flagged, and market data no longer counts it
    assert tape_of(client) == [
        ("11.00", "10", False),
        ("12.00", "40", True),
        ("10.00", "100", False),
    ]
    assert summary(client) == {
        "last": "11.00",
        "open": "10.00",
        "high": "11.00",
        "low": "10.00",
        "volume": "110",
        "value_traded": "1110.00",
        "trades": 2,
        "vwap": "10.090909",
    }
    assert bars(symbol, "1m") == [
        ("10:00", D("10.00"), D("10.00"), D("10.00"), D("10.00"), D(100), 1),
        ("10:07", D("11.00"), D("11.00"), D("11.00"), D("11.00"), D(10), 1),
    ]
    assert bars(symbol, "5m") == [
        ("10:00", D("10.00"), D("10.00"), D("10.00"), D("10.00"), D(100), 1),
        ("10:05", D("11.00"), D("11.00"), D("11.00"), D("11.00"), D(10), 1),
    ]
    assert bars(symbol, "1d") == [
        ("00:00", D("10.00"), D("11.00"), D("10.00"), D("11.00"), D(110), 2),
    ]
    assert_trading_consistent()


def test_busting_the_last_trade_moves_last_back_to_the_one_before(
    symbol, tape, staff, alice
):
    trade_bust(trade=tape[2], acting_user=staff, reason="Erroneous price")

    assert summary(client_for(alice)) == {
        "last": "12.00",
        "open": "10.00",
        "high": "12.00",
        "low": "10.00",
        "volume": "140",
        "value_traded": "1480.00",
        "trades": 2,
        "vwap": "10.571429",
    }
    stored = SecuritySummary.objects.get(symbol=symbol)
    assert (stored.last_quantity, stored.last_trade_at) == (
        D(40),
        local(2026, 11, 25, 10, 1, 20),
    )
    assert bars(symbol, "5m") == [
        ("10:00", D("10.00"), D("12.00"), D("10.00"), D("12.00"), D(140), 2),
    ]


def test_after_a_correction_the_summary_and_the_web_page_agree_on_last(
    symbol, tape, staff, alice, alice_account
):
    client = client_for(alice)

    # when the 10.00 trade is corrected to 100 @ 10.50 at 10:30 the same day
    with time_machine.travel(local(2026, 11, 25, 10, 30, 0), tick=False):
        result = trade_correct(
            trade=tape[0],
            price=D("10.50"),
            quantity=D(100),
            acting_user=staff,
            reason="Agreed price was 10.50",
        )

    # then the tape shows the bust flagged and the replacement as the latest trade
    assert tape_of(client) == [
        ("10.50", "100", False),
        ("11.00", "10", False),
        ("12.00", "40", False),
        ("10.00", "100", True),
    ]
    # the summary is the remaining trades plus the correction, in tape order
    assert summary(client) == {
        "last": "10.50",
        "open": "12.00",
        "high": "12.00",
        "low": "10.50",
        "volume": "150",
        "value_traded": "1640.00",
        "trades": 3,
        "vwap": "10.933333",
    }
    browser = Client()
    browser.force_login(alice)
    page = browser.get(
        reverse("web:trade", args=["XSX:XS01"]), {"account": alice_account.pk}
    )
    assert page.status_code == 200
    assert page.context["last"] == "10.50"
    assert bars(symbol, "5m") == [
        ("10:00", D("12.00"), D("12.00"), D("12.00"), D("12.00"), D(40), 1),
        ("10:05", D("11.00"), D("11.00"), D("11.00"), D("11.00"), D(10), 1),
        ("10:30", D("10.50"), D("10.50"), D("10.50"), D("10.50"), D(100), 1),
    ]
    assert bars(symbol, "1d") == [
        ("00:00", D("12.00"), D("12.00"), D("10.50"), D("10.50"), D(150), 3),
    ]
    assert Trade.objects.get(pk=result.correction.pk).seq == 5
    assert_trading_consistent()


def expected_summary(symbol) -> dict[str, Any]:
    """The summary figures recomputed by hand from the trades not busted."""
    trades = list(
        Trade.objects.filter(symbol=symbol, busted_at__isnull=True).order_by("seq")
    )
    prices = [trade.price for trade in trades]
    return {
        "last": prices[-1],
        "open": prices[0],
        "high": max(prices),
        "low": min(prices),
        "volume": sum(trade.quantity for trade in trades),
        "value_traded": sum(trade.value for trade in trades),
        "trades": len(trades),
    }


def test_busts_racing_the_matching_worker_leave_market_data_equal_to_the_tape(
    matcher, symbol, staff, alice_client, alice_account, bob_client, bob_account
):
    # given trades booked by the real matching worker, all on one trading day
    with time_machine.travel(local(2026, 11, 25, 11, 0, 0)):
        first = [
            cross(
                (alice_client, alice_account),
                (bob_client, bob_account),
                price=f"{10 + n}.00",
                quantity="10",
            )
            for n in range(4)
        ]
        errors: list[Exception] = []

        def bust(trade: Trade) -> None:
            try:
                trade_bust(trade=trade, acting_user=staff, reason="Race")
            except Exception as error:  # reported to the test
                errors.append(error)
            finally:
                connections.close_all()

        # when each is busted on another connection while the worker books more
        for trade in first:
            buster = threading.Thread(target=bust, args=(trade,))
            place(alice_client, alice_account, side="sell", price="9.50", quantity="5")
            buster.start()
            place(bob_client, bob_account, side="buy", price="9.50", quantity="5")
            buster.join(30)
            assert not buster.is_alive()
        wait_for(lambda: Trade.objects.filter(symbol=symbol).count() == 8)
        wait_for(
            lambda: SecuritySummary.objects.get(symbol=symbol).trades == 4, timeout=20
        )

    # then the summary and the daily bar are exactly the remaining trades
    assert errors == []
    stored = SecuritySummary.objects.get(symbol=symbol)
    assert {key: getattr(stored, key) for key in SUMMARY_KEYS} == {
        "last": D("9.50"),
        "open": D("9.50"),
        "high": D("9.50"),
        "low": D("9.50"),
        "volume": D(20),
        "value_traded": D("190.00"),
        "trades": 4,
    }
    assert expected_summary(symbol) == {
        key: getattr(stored, key) for key in SUMMARY_KEYS
    }
    assert bars(symbol, "1d") == [
        ("00:00", D("9.50"), D("9.50"), D("9.50"), D("9.50"), D(20), 4),
    ]
    assert_trading_consistent()
