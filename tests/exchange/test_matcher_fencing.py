"""Fencing: a matching worker that lost its database session never persists a
batch again until it has re-acquired the market and rebuilt its books."""

import threading
import time
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import F

from exchange.models import MarketOwner
from oms.models import Order
from tests.conftest import MatcherThread, assert_trading_consistent, wait_for
from tests.exchange.invariants import assert_book_not_crossed
from tests.exchange.matcher_support import (
    CommitLog,
    backend_pid,
    backend_terminate,
    inbox_empty,
    place,
    places_processed_per_order,
    status_of,
)

pytestmark = pytest.mark.django_db(transaction=True)


def owner_and_standby(hooks, how: str):
    """Start an owner and a standby for XSX; the owner's first batch stalls inside
    its transaction and loses its session there (``how``)."""
    first = MatcherThread("XSX").start()
    wait_for(lambda: first.worker.is_owner and first.worker.is_ready)
    second = MatcherThread("XSX").start()
    log = CommitLog({"first": first.worker, "second": second.worker})
    hooks(log.hook)
    stalled = threading.Event()
    pids: list[int] = []

    def stall(outcome) -> list:
        if outcome.books is first.worker.books and not stalled.is_set():
            if how == "idle_timeout":
                with connection.cursor() as cursor:
                    cursor.execute("SET idle_in_transaction_session_timeout = '300ms'")
            pids.append(backend_pid())
            stalled.set()
            time.sleep(1.5)  # idle in the batch transaction, past the timeout
        return []

    hooks(stall)
    return first, second, log, stalled, pids


@pytest.mark.parametrize("how", ["idle_timeout", "terminate"])
def test_an_owner_that_loses_its_session_mid_batch_never_writes_until_it_reacquires(
    how, symbol, alice, alice_account, bob, bob_account, hooks
):
    # given an owner whose batch stalls, and a standby
    first, second, log, stalled, pids = owner_and_standby(hooks, how)
    try:
        buy = place(alice, alice_account, "buy", "9.00", "5")
        wait_for(stalled.is_set)
        if how == "terminate":
            backend_terminate(pids[0])

        # when the standby takes over and the flow goes on
        wait_for(lambda: second.worker.is_owner)
        wait_for(lambda: status_of(buy) == "working")
        sells = [place(bob, bob_account, "sell", "9.00", "1") for _ in range(3)]
        buys = [place(alice, alice_account, "buy", "8.99", "2") for _ in range(3)]
        wait_for(lambda: not first.worker.is_owner)
        wait_for(inbox_empty)
        time.sleep(1.0)  # the old owner has had its chance to come back
        late = place(bob, bob_account, "sell", "9.50", "1")
        wait_for(inbox_empty)

        # then only the standby wrote, each request once, and nothing is crossed
        assert not first.worker.is_owner
        assert log.by("first") == []
        assert places_processed_per_order() == {
            order.pk: 1 for order in [buy, *sells, *buys, late]
        }
        assert Order.objects.get(pk=buy.pk).filled_quantity == Decimal("3")
        assert_book_not_crossed()
        assert_trading_consistent()

        # and the old owner writes again only after re-acquiring and rebuilding
        rebuilds = first.worker.rebuilds
        second.stop()
        wait_for(lambda: first.worker.is_owner and first.worker.is_ready)
        assert (first.worker.acquisitions, first.worker.rebuilds) == (2, rebuilds + 1)
        last = place(bob, bob_account, "sell", "8.99", "6")
        wait_for(lambda: status_of(last) == "filled")
        assert len(wait_for(lambda: log.by("first"))) == 1
        assert_book_not_crossed()
        assert_trading_consistent()
    finally:
        first.stop()
        if second.thread.is_alive():
            second.stop()


def test_a_worker_whose_epoch_moved_on_refuses_its_batch_and_gives_the_market_up(
    market, symbol, alice, alice_account
):
    # given an owner
    first = MatcherThread("XSX").start()
    try:
        wait_for(lambda: first.worker.is_owner and first.worker.is_ready)
        epoch = MarketOwner.objects.get(market=market).epoch
        # when a successor's epoch is recorded (as after a takeover it missed)
        MarketOwner.objects.filter(market=market).update(epoch=F("epoch") + 1)
        buy = place(alice, alice_account, "buy", "9.00", "5")

        # then its next batch fails the fence; it takes the market anew, rebuilds
        # and processes the request once
        wait_for(lambda: status_of(buy) == "working")
        assert first.worker.acquisitions == 2
        assert first.worker.rebuilds == 2
        assert MarketOwner.objects.get(market=market).epoch == epoch + 2
        assert places_processed_per_order() == {buy.pk: 1}
        assert_trading_consistent()
    finally:
        first.stop()
