"""Cancels, cancel-all and expiries racing the matching batch (real worker, real
connections): no deadlock, no skipped expiry, no silently dropped request."""

import random
import threading
from decimal import Decimal

import pytest
from django.db import connections, transaction

from exchange import engine
from exchange.matching import MatchingWorker
from exchange.services import market_state_set
from oms.models import Order, OrderEvent, OrderRequest
from oms.services import order_cancel_queue
from tests import factories
from tests.conftest import (
    assert_trading_consistent,
    balance_of,
    client_for,
    wait_for,
)
from tests.exchange.pausing import HoldBatches, PauseBeforeMakers
from tests.trading import match_now, place

pytestmark = pytest.mark.django_db(transaction=True)


def _inbox_empty() -> bool:
    return not OrderRequest.objects.filter(processed_at__isnull=True).exists()


def _in_thread(target) -> threading.Thread:
    def run() -> None:
        try:
            target()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_cancel_all_while_a_batch_holds_the_accounts_orders_neither_waits_nor_deadlocks(
    monkeypatch, matcher, symbol, alice_client, bob_client, alice_account, bob_account
):
    aud = symbol.currency
    # given alice's resting buy of 10 at 10.00 (the maker) ...
    maker = place(alice_client, alice_account, side="buy", price="10.00", quantity="10")
    wait_for(lambda: Order.objects.get(pk=maker["id"]).status == "working")
    # ... and a batch that has locked alice's new order and bob's crossing sell
    # and pauses before it locks the maker
    hold = HoldBatches().install(monkeypatch)
    pause = PauseBeforeMakers().install(monkeypatch)
    other = place(alice_client, alice_account, side="buy", price="9.00", quantity="1")
    sell = place(bob_client, bob_account, side="sell", price="10.00", quantity="4")
    hold.release()
    assert pause.paused.wait(20)

    # when alice cancels all her orders on another connection
    responses = []
    thread = _in_thread(
        lambda: responses.append(
            alice_client.post(
                "/api/v1/orders/cancel-all",
                {"account": alice_account.pk},
                format="json",
            )
        )
    )
    thread.join(10)
    finished_while_paused = not thread.is_alive()
    pause.resume.set()
    thread.join(20)

    # then the cancel-all did not wait for the batch, and both went through
    assert finished_while_paused
    assert [r.status_code for r in responses] == [202]
    assert sorted(responses[0].json()["orders"]) == sorted([maker["id"], other["id"]])
    wait_for(lambda: Order.objects.get(pk=maker["id"]).status == "cancelled")
    wait_for(_inbox_empty)
    assert Order.objects.get(pk=sell["id"]).status == "filled"
    assert Order.objects.get(pk=other["id"]).status == "cancelled"
    assert Order.objects.get(pk=maker["id"]).filled_quantity == Decimal(4)
    assert balance_of(alice_account, aud).held == 0
    assert balance_of(alice_account, aud).available == Decimal("9960.00")
    assert_trading_consistent()


def test_a_storm_of_cancel_all_and_places_against_the_matcher_surfaces_no_error(
    matcher, symbol, alice_account, bob_account, alice, bob
):
    # given two clients trading each other on four threads while the matcher runs
    failures: list[object] = []

    def trader(user, account, side: str, seed: int) -> None:
        client = client_for(user)
        rng = random.Random(seed)
        for _ in range(25):
            if rng.random() < 0.25:
                response = client.post(
                    "/api/v1/orders/cancel-all", {"account": account.pk}, format="json"
                )
                expected = 202
            else:
                price = f"{rng.choice(['9.98', '9.99', '10.00', '10.01'])}"
                response = client.post(
                    "/api/v1/orders",
                    {
                        "account": account.pk,
                        "symbol": "XSX:XS01",
                        "side": side,
                        "type": "limit",
                        "time_in_force": "gtc",
                        "price": price,
                        "quantity": str(rng.randint(1, 5)),
                    },
                    format="json",
                )
                expected = 201
            if response.status_code != expected:
                failures.append((response.status_code, response.content))

    # when they all run at once
    threads = [
        _in_thread(lambda: trader(alice, alice_account, "buy", 1)),
        _in_thread(lambda: trader(alice, alice_account, "sell", 2)),
        _in_thread(lambda: trader(bob, bob_account, "buy", 3)),
        _in_thread(lambda: trader(bob, bob_account, "sell", 4)),
    ]
    for thread in threads:
        thread.join(120)
        assert not thread.is_alive()
    wait_for(_inbox_empty, timeout=60)

    # then no request failed, and every reservation is exact
    assert failures == []
    assert Order.objects.count() > 50
    assert_trading_consistent()


def test_every_day_order_expires_at_the_close_even_one_locked_meanwhile(
    market, symbol, alice_client, alice_account
):
    aud = symbol.currency
    # given a resting DAY buy ...
    day = place(
        alice_client,
        alice_account,
        side="buy",
        price="10.00",
        quantity="10",
        time_in_force="day",
    )
    match_now()
    assert Order.objects.get(pk=day["id"]).status == "working"
    # ... locked by another connection while the market closes
    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with transaction.atomic():
            Order.objects.select_for_update().get(pk=day["id"])
            locked.set()
            release.wait(1)

    holder = _in_thread(hold_lock)
    assert locked.wait(10)
    staff = factories.user("staff", is_staff=True)
    market_state_set(market=market, state="closed", acting_user=staff, reason="Close")
    release.set()
    holder.join(10)

    # then its expiry was queued, and the matcher expires it
    assert list(
        OrderRequest.objects.filter(order_id=day["id"]).values_list("kind", flat=True)
    ) == ["place", "expire"]
    match_now()
    order = Order.objects.get(pk=day["id"])
    assert (order.status, order.status_reason, order.held_amount) == (
        "expired",
        "expired",
        Decimal(0),
    )
    assert balance_of(alice_account, aud).held == 0
    assert balance_of(alice_account, aud).available == Decimal("10000.00")
    assert_trading_consistent()


def test_a_cancel_of_an_order_that_filled_first_is_recorded_as_refused(
    symbol, alice_client, bob_client, alice_account, bob_account
):
    # given alice's resting sell, bob's buy taking it, then alice's cancel of it
    sell = place(alice_client, alice_account, side="sell", price="10.00", quantity="5")
    match_now()
    place(bob_client, bob_account, side="buy", price="10.00", quantity="5")
    order_cancel_queue(order_id=sell["id"], acting_user=alice_account_user(sell))

    # when the matcher takes both in one batch
    match_now()

    # then the sell filled and the cancel is an event, not lost
    order = Order.objects.get(pk=sell["id"])
    assert (order.status, order.status_reason) == ("filled", "")
    last = OrderEvent.objects.filter(order_id=sell["id"]).last()
    assert last is not None
    assert (last.from_status, last.to_status, last.reason) == (
        "filled",
        "filled",
        "cancel_rejected:order_not_live",
    )
    assert _inbox_empty()
    assert_trading_consistent()


def test_a_cancel_of_a_live_order_the_engine_lost_cancels_it_as_not_in_book(
    symbol, alice_client, alice_account, caplog
):
    aud = symbol.currency
    # given alice's resting buy, which a worker's book has lost
    buy = place(alice_client, alice_account, side="buy", price="10.00", quantity="10")
    match_now()
    worker = MatchingWorker("XSX")
    worker.rebuild()
    worker.books[symbol.pk].apply(engine.CancelOrder(buy["id"]))
    assert buy["id"] not in worker.books[symbol.pk]

    # when her cancel reaches that worker
    order_cancel_queue(order_id=buy["id"], acting_user=alice_account_user(buy))
    with caplog.at_level("ERROR"):
        assert worker.process_batch() == 1

    # then the inconsistency is logged, the order ends and its hold is released
    assert "in the database but not in the book" in caplog.text
    order = Order.objects.get(pk=buy["id"])
    assert (order.status, order.status_reason, order.held_amount) == (
        "cancelled",
        "not_in_book",
        Decimal(0),
    )
    last = OrderEvent.objects.filter(order_id=buy["id"]).last()
    assert last is not None
    assert (last.from_status, last.to_status, last.reason) == (
        "working",
        "cancelled",
        "not_in_book",
    )
    assert balance_of(alice_account, aud).held == 0
    assert balance_of(alice_account, aud).available == Decimal("10000.00")
    assert_trading_consistent()


def alice_account_user(order: dict):
    return Order.objects.get(pk=order["id"]).account.access.get().user
