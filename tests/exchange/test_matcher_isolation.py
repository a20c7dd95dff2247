"""No single request may stall a market: one that keeps failing on its own is
isolated after a bounded number of tries, and everything else proceeds."""

import logging
from decimal import Decimal

import pytest

from exchange.models import IsolatedRequest, Trade
from oms.models import Order, OrderEvent, OrderRequest
from oms.services import order_cancel
from registry.ledger import InsufficientBalanceError
from tests.conftest import (
    MatcherThread,
    assert_trading_consistent,
    balance_of,
    wait_for,
)
from tests.exchange.invariants import assert_book_not_crossed
from tests.exchange.matcher_support import inbox_empty, place, status_of

pytestmark = pytest.mark.django_db(transaction=True)


def always_failing(order_id: int, fails_in):
    """A batch hook that fails every batch that leaves the order in a status for
    which ``fails_in(status)`` holds."""
    calls: list[int] = []

    def hook(outcome) -> list:
        for order in outcome.orders:
            if order.pk == order_id and fails_in(order.status):
                calls.append(order_id)
                raise InsufficientBalanceError(
                    (order.account_id, 0), "held", Decimal(1)
                )
        return []

    return hook, calls


def test_a_place_that_always_fails_is_rejected_after_three_tries_and_the_rest_proceeds(
    market, symbol, alice, alice_account, bob, bob_account, hooks, client, caplog
):
    # given a batch with a place that always fails between two good ones
    caplog.set_level(logging.ERROR, logger="exchange.matching.isolation")
    buy = place(alice, alice_account, "buy", "9.00", "5")
    poison = place(alice, alice_account, "buy", "9.01", "5")
    sell = place(bob, bob_account, "sell", "9.00", "3")
    hook, calls = always_failing(poison.pk, lambda status: status != "rejected")
    hooks(hook)
    cash = alice_account.currency

    # when the matcher runs
    matcher = MatcherThread("XSX").start()
    try:
        wait_for(inbox_empty)
        # a later batch proceeds as usual
        later = place(bob, bob_account, "sell", "9.00", "2")
        wait_for(lambda: status_of(later) == "filled")
    finally:
        matcher.stop()

    # then the poison place failed once in the batch and three times alone, and
    # was rejected with its reservation released
    assert len(calls) == 4
    poison.refresh_from_db()
    assert (poison.status, poison.status_reason, poison.held_amount) == (
        "rejected",
        "place_rejected:isolated:InsufficientBalanceError",
        Decimal("0.00"),
    )
    assert list(
        OrderEvent.objects.filter(order=poison, to_status="rejected").values_list(
            "from_status", "reason"
        )
    ) == [("pending", "place_rejected:isolated:InsufficientBalanceError")]
    isolated = IsolatedRequest.objects.get()
    assert (isolated.order_id, isolated.kind, isolated.attempts) == (
        poison.pk,
        "place",
        3,
    )
    assert isolated.reason.startswith("InsufficientBalanceError: account ")
    assert OrderRequest.objects.get(pk=isolated.request_id).processed_at is not None
    assert "isolated place request" in caplog.text
    # ... the other requests were matched: the buy filled by both sells
    assert [(t.price, t.quantity) for t in Trade.objects.order_by("seq")] == [
        (Decimal("9.00"), Decimal("3")),
        (Decimal("9.00"), Decimal("2")),
    ]
    assert (status_of(buy), status_of(sell)) == ("filled", "filled")
    assert balance_of(alice_account, cash).held == Decimal("0.00")
    assert_book_not_crossed()
    assert_trading_consistent()
    # ... and the alert metric counts it
    metrics = client.get("/metrics").content.decode()
    assert 'xchange_matcher_isolated_requests_total{market="XSX"} 1.0' in metrics
    assert 'xchange_matcher_requests_waiting{market="XSX"} 0.0' in metrics


def test_a_cancel_that_always_fails_is_recorded_as_failed_and_the_order_stays_working(
    market, symbol, alice, alice_account, bob, bob_account, hooks
):
    # given a working order whose cancel always fails
    matcher = MatcherThread("XSX").start()
    try:
        buy = place(alice, alice_account, "buy", "9.00", "5")
        wait_for(lambda: status_of(buy) == "working")
        held = Order.objects.get(pk=buy.pk).held_amount
        hook, calls = always_failing(buy.pk, lambda status: status == "cancelled")
        hooks(hook)

        # when it is cancelled, and other requests follow
        order_cancel(user=alice, order_id=buy.pk)
        sell = place(bob, bob_account, "sell", "9.00", "2")
        wait_for(inbox_empty)
    finally:
        matcher.stop()

    # then the cancel is recorded as failed, the order still works and was filled
    # by the later sell
    order = Order.objects.get(pk=buy.pk)
    assert (order.status, order.status_reason) == (
        "partially_filled",
        "cancel_failed:InsufficientBalanceError",
    )
    assert order.held_amount == held - Decimal("18.00")
    assert status_of(sell) == "filled"
    assert len(calls) == 3  # its batch held only the cancel: each try was alone
    assert IsolatedRequest.objects.get().kind == "cancel"
    assert_book_not_crossed()
    assert_trading_consistent()


def test_a_place_that_cannot_even_be_rejected_is_recorded_and_left_for_staff(
    market, symbol, alice, alice_account, bob, bob_account, hooks
):
    # given a place whose every batch fails, its rejection included
    poison = place(alice, alice_account, "buy", "9.00", "5")
    hook, calls = always_failing(poison.pk, lambda status: True)
    hooks(hook)
    held = Order.objects.get(pk=poison.pk).held_amount

    # when the matcher runs, and a later request arrives
    matcher = MatcherThread("XSX").start()
    try:
        wait_for(inbox_empty)
        sell = place(bob, bob_account, "sell", "9.50", "1")
        wait_for(lambda: status_of(sell) == "working")
    finally:
        matcher.stop()

    # then after three lone tries and a failed isolation the request is only
    # marked processed and recorded; the order keeps its reservation
    assert len(calls) == 4
    order = Order.objects.get(pk=poison.pk)
    assert (order.status, order.held_amount) == ("pending", held)
    assert list(
        OrderEvent.objects.filter(order=poison)
        .exclude(from_status="new")
        .values_list("from_status", "to_status", "reason")
    ) == [("pending", "pending", "place_rejected:isolated:unresolved")]
    isolated = IsolatedRequest.objects.get()
    assert (isolated.order_id, isolated.attempts) == (poison.pk, 3)
    assert isolated.reason.startswith("unresolved: InsufficientBalanceError: ")
    assert_book_not_crossed()
    assert_trading_consistent()
