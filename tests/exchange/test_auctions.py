"""Call auctions and the circuit breaker through the matching worker.

Orders placed while the market is in pre-open rest without matching (the book may
cross) and the summary publishes the indicative uncross; when the market opens the
worker uncrosses the book at the equilibrium price. The closing auction uncrosses at
the close, and the close then expires DAY orders. A trade beyond the dynamic band
halts the symbol; when the cooling-off ends the book uncrosses and trading resumes.
The worker is driven step by step (``Driver.run``).
"""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from exchange.models import Market, Symbol, Trade
from exchange.services import market_state_set, sessions_advance
from marketdata.models import SecuritySummary
from oms.models import Order
from oms.services import OrderError
from tests.conftest import assert_ledger_balanced, assert_trading_consistent, balance_of
from tests.oms.test_order_types import Driver, place, reload

pytestmark = pytest.mark.django_db(transaction=True)

D = Decimal


def set_state(market: Market, state: str, staff) -> None:
    market_state_set(
        market=Market.objects.get(pk=market.pk),
        state=state,
        acting_user=staff,
        reason="test",
    )


@pytest.fixture
def staff():
    from tests import factories

    return factories.user(is_staff=True)


@pytest.fixture
def driver(market, symbol) -> Driver:
    return Driver(market.code)


def trades() -> list[tuple[Decimal, Decimal, int, int, str]]:
    return list(
        Trade.objects.order_by("seq").values_list(
            "price", "quantity", "buy_order_id", "sell_order_id", "aggressor_side"
        )
    )


def test_the_opening_auction_collects_crossing_orders_and_uncrosses_at_the_open(
    driver, market, symbol, staff, alice, bob, alice_account, bob_account
):
    set_state(market, "pre_open", staff)
    # price  buy>=  sell<=  executable
    #  9.90    30     10      10
    # 10.00    30     30      30   <- equilibrium (max volume, no surplus)
    # 10.10    10     30      10
    b1 = place(bob, bob_account, side="buy", price="10.10", quantity="10")
    b2 = place(bob, bob_account, side="buy", price="10.00", quantity="20")
    s1 = place(alice, alice_account, side="sell", price="9.90", quantity="10")
    s2 = place(alice, alice_account, side="sell", price="10.00", quantity="20")
    driver.run()

    assert not Trade.objects.exists()
    assert {reload(o).status for o in (b1, b2, s1, s2)} == {"working"}
    assert driver.book.in_auction
    summary = SecuritySummary.objects.get(symbol=symbol)
    assert (
        summary.in_auction,
        summary.indicative_price,
        summary.indicative_quantity,
        summary.indicative_surplus,
    ) == (True, D("10.00"), D(30), D(0))
    # market orders cannot join the auction
    with pytest.raises(OrderError) as error:
        place(bob, bob_account, side="buy", type="market", quantity="1")
    assert error.value.code == "not_allowed_in_auction"

    set_state(market, "opening_auction", staff)
    driver.run()
    assert not Trade.objects.exists()
    set_state(market, "open", staff)
    driver.run()

    # one price for every fill, the fronts of both sides paired in price-time
    # priority (b1 with s1, then b2 with s2); no aggressor
    assert trades() == [
        (D("10.00"), D(10), b1.pk, s1.pk, ""),
        (D("10.00"), D(20), b2.pk, s2.pk, ""),
    ]
    assert {reload(o).status for o in (b1, b2, s1, s2)} == {"filled"}
    assert not driver.book.in_auction
    assert not Symbol.objects.get(pk=symbol.pk).book_in_auction
    summary = SecuritySummary.objects.get(symbol=symbol)
    assert (summary.in_auction, summary.indicative_price, summary.last) == (
        False,
        None,
        D("10.00"),
    )
    # bob paid 300.00 (reservations at 10.10 and 10.00 released to the fills)
    cash = balance_of(bob_account, symbol.currency)
    assert (cash.available, cash.held) == (D("9700.00"), 0)
    assert_trading_consistent()
    assert_ledger_balanced()


def test_a_rebuilt_worker_keeps_the_auction_book_and_uncrosses_it_later(
    driver, market, symbol, staff, alice, bob, alice_account, bob_account
):
    set_state(market, "pre_open", staff)
    place(bob, bob_account, side="buy", price="10.20", quantity="5")
    place(alice, alice_account, side="sell", price="10.00", quantity="5")
    driver.run()
    assert Symbol.objects.get(pk=symbol.pk).book_in_auction

    fresh = Driver(market.code)  # e.g. after a crash: the crossed book comes back
    assert fresh.book.in_auction
    assert fresh.book.snapshot() == driver.book.snapshot()
    set_state(market, "open", staff)
    fresh.run()
    # equilibrium: both prices execute 5; closest to no reference -> the lowest
    assert [(t[0], t[1]) for t in trades()] == [(D("10.00"), D(5))]
    assert_ledger_balanced()


def test_the_closing_auction_uncrosses_at_the_close_then_day_orders_expire(
    driver, market, symbol, staff, alice, bob, alice_account, bob_account
):
    day = place(
        bob, bob_account, side="buy", price="9.00", quantity="10", time_in_force="day"
    )
    driver.run()
    set_state(market, "closing_auction", staff)
    place(bob, bob_account, side="buy", price="10.00", quantity="10")
    place(alice, alice_account, side="sell", price="10.00", quantity="4")
    driver.run()
    assert not Trade.objects.exists()
    set_state(market, "closed", staff)
    driver.run()

    assert [(t[0], t[1], t[4]) for t in trades()] == [(D("10.00"), D(4), "")]
    day = reload(day)
    assert (day.status, day.held_amount) == ("expired", 0)
    # the unfilled 6 of the GTC auction bid stay on the book for tomorrow
    assert driver.book.depth() == ([(1000, 6, 1)], [])
    assert balance_of(bob_account, symbol.currency).held == D("60.00")
    assert_trading_consistent()
    assert_ledger_balanced()


def test_a_trade_beyond_the_dynamic_band_halts_the_symbol_until_the_cooling_off_ends(
    driver, market, symbol, alice, bob, alice_account, bob_account
):
    Market.objects.filter(pk=market.pk).update(
        circuit_breaker_percent=D(5), cooling_off_seconds=60
    )
    place(alice, alice_account, side="sell", price="10.00", quantity="1")
    place(bob, bob_account, side="buy", price="10.00", quantity="1")
    driver.run()
    assert driver.book.band == (950, 1050)  # 10.00 +/- 5%

    place(alice, alice_account, side="sell", price="10.40", quantity="5")
    place(alice, alice_account, side="sell", price="11.00", quantity="5")
    sweep = place(bob, bob_account, side="buy", price="11.00", quantity="10")
    driver.run()

    # 5 traded at 10.40; 11.00 is beyond the band: the symbol halts, the rest rests
    assert [(t[0], t[1]) for t in trades()][1:] == [(D("10.40"), D(5))]
    halted = Symbol.objects.get(pk=symbol.pk)
    assert (halted.trading_state, halted.book_in_auction) == ("halted", True)
    assert halted.halted_until is not None
    assert reload(sweep).remaining_quantity == D(5)
    with pytest.raises(OrderError) as error:
        place(bob, bob_account, side="buy", price="10.50", quantity="1")
    assert error.value.code == "symbol_halted"

    with time_machine.travel(halted.halted_until + timedelta(seconds=1)):
        done = sessions_advance(now=timezone.now())
        assert list(done.resumed) == [symbol.identifier]
        driver.run()
    # the uncross at the crossed 11.00 level
    assert [(t[0], t[1]) for t in trades()][2:] == [(D("11.00"), D(5))]
    assert reload(sweep).status == "filled"
    assert not driver.book.in_auction
    assert_trading_consistent()
    assert_ledger_balanced()


def test_orders_placed_while_halted_wait_and_a_halt_from_pre_open_keeps_the_auction(
    driver, market, symbol, staff, alice, bob, alice_account, bob_account
):
    set_state(market, "pre_open", staff)
    place(bob, bob_account, side="buy", price="10.10", quantity="5")
    place(alice, alice_account, side="sell", price="10.00", quantity="5")
    driver.run()
    set_state(market, "halted", staff)
    driver.run()
    assert driver.book.in_auction and not Trade.objects.exists()
    set_state(market, "open", staff)
    driver.run()
    assert [(t[0], t[1]) for t in trades()] == [(D("10.00"), D(5))]
    assert Order.objects.filter(status="filled").count() == 2
