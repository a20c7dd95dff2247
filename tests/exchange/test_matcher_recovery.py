"""The matcher recovers from losing its wake-up connection, and picks up markets
created after it started."""

import threading

import pytest

from exchange.matching import MatcherSupervisor, MatchingWorker
from exchange.models import Trade
from tests import factories
from tests.conftest import assert_trading_consistent, wait_for
from tests.exchange.invariants import assert_book_not_crossed
from tests.exchange.matcher_support import backend_terminate, place, status_of

pytestmark = pytest.mark.django_db(transaction=True)


class SlowPollingMatcher:
    """A matcher that polls only every 30 s: within a test's time it handles
    work promptly only if woken."""

    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self.worker = MatchingWorker(
            "XSX", poll_seconds=30.0, stop_event=self.stop_event
        )
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(40)
        assert not self.thread.is_alive()


def test_a_lost_wakeup_connection_is_reconnected_without_rebuilding_the_books(
    symbol, alice, alice_account, bob, bob_account
):
    # given a working matcher that is woken by notifications
    matcher = SlowPollingMatcher()
    worker = matcher.worker
    try:
        first = place(alice, alice_account, "buy", "9.00", "5")
        wait_for(lambda: status_of(first) == "working")
        waiter = worker.waiter
        assert waiter is not None
        old_pid = waiter.backend_pid

        # when its LISTEN session is killed
        assert old_pid is not None
        backend_terminate(old_pid)
        wait_for(lambda: waiter.disconnects == 1)
        wait_for(lambda: waiter.backend_pid not in (None, old_pid))

        # then it is woken again by new work, and never rebuilt its books
        sell = place(bob, bob_account, "sell", "9.00", "5")
        wait_for(lambda: status_of(sell) == "filled", timeout=10)
        assert (worker.rebuilds, worker.acquisitions) == (1, 1)
        assert worker.waiter is waiter
        assert Trade.objects.count() == 1
    finally:
        matcher.stop()
    assert_trading_consistent()


def test_a_market_created_after_the_workers_started_is_matched(db, settings):
    # given a supervisor serving every market, with one market
    factories.market("XSX")
    stop = threading.Event()
    supervisor = MatcherSupervisor(
        None, stop_event=stop, poll_seconds=0.1, discover_seconds=0.2
    ).start()
    try:
        assert sorted(supervisor.workers) == ["XSX"]

        # when a market is created (as in the admin) and traded
        new = factories.market("XNW")
        factories.symbol(new, "NW01")
        alice, bob = factories.user("alice"), factories.user("bob")
        symbol = new.symbols.get()
        alice_account = factories.account(alice, cash="1000.00")
        bob_account = factories.account(bob, holdings={symbol: "10"})
        buy = place(alice, alice_account, "buy", "5.00", "4", symbol="XNW:NW01")
        sell = place(bob, bob_account, "sell", "5.00", "4", symbol="XNW:NW01")

        # then a worker for it starts and matches the orders
        wait_for(lambda: status_of(sell) == "filled", timeout=10)
        assert status_of(buy) == "filled"
        assert sorted(supervisor.workers) == ["XNW", "XSX"]
        assert supervisor.workers["XNW"].is_owner
    finally:
        stop.set()
        assert not supervisor.join(10)
    assert_book_not_crossed()
    assert_trading_consistent()
