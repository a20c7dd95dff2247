"""The spine end to end: REST order entry, matching, trades and the ledger."""

from decimal import Decimal
from typing import Any

import pytest

from exchange.models import Trade
from oms.models import Order, OrderEvent
from tests.conftest import assert_ledger_balanced, balance_of, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def place(client, account, **body):
    body = {"account": account.pk, "symbol": "XSX:XS01", "time_in_force": "gtc", **body}
    return client.post("/api/v1/orders", body, format="json")


def test_two_clients_cross_and_the_trade_moves_cash_and_holdings_exactly(
    matcher, symbol, alice_client, bob_client, alice_account, bob_account
):
    # given a resting sell from alice
    sell = place(
        alice_client,
        alice_account,
        side="sell",
        type="limit",
        price="10.05",
        quantity="100",
    )
    assert sell.status_code == 201, sell.json()
    assert sell.json()["status"] == "pending"
    wait_for(lambda: Order.objects.get(pk=sell.json()["id"]).status == "working")

    # when bob buys 60 at a higher limit
    buy = place(
        bob_client, bob_account, side="buy", type="limit", price="10.10", quantity="60"
    )
    assert buy.status_code == 201
    wait_for(lambda: Order.objects.get(pk=buy.json()["id"]).status == "filled")

    # then one trade at the resting price
    trade = Trade.objects.get()
    assert (trade.price, trade.quantity, trade.aggressor_side) == (
        Decimal("10.05"),
        Decimal(60),
        "buy",
    )
    trades = bob_client.get("/api/v1/symbols/XSX:XS01/trades").json()["results"]
    assert [(t["price"], t["quantity"], t["aggressor_side"]) for t in trades] == [
        ("10.05", "60", "buy")
    ]

    aud, xs01 = symbol.currency, symbol.asset
    # bob paid exactly 603.00 and got 60 shares; his limit-price reservation is gone
    assert balance_of(bob_account, aud).available == Decimal("9397.00")
    assert balance_of(bob_account, aud).held == 0
    assert balance_of(bob_account, xs01).available == Decimal(1060)
    # alice received 603.00 and still has 40 held for the rest of her order
    assert balance_of(alice_account, aud).available == Decimal("10603.00")
    assert balance_of(alice_account, xs01).available == Decimal(900)
    assert balance_of(alice_account, xs01).held == Decimal(40)

    order = alice_client.get(f"/api/v1/orders/{sell.json()['id']}").json()
    assert (order["status"], order["filled_quantity"], order["average_price"]) == (
        "partially_filled",
        "60",
        "10.050000",
    )
    assert list(
        OrderEvent.objects.filter(order_id=buy.json()["id"]).values_list(
            "from_status", "to_status"
        )
    ) == [("new", "pending"), ("pending", "accepted"), ("accepted", "filled")]
    assert_ledger_balanced()


def test_cancelling_a_partially_filled_order_releases_exactly_its_unused_reservation(
    matcher, symbol, alice_client, bob_client, alice_account, bob_account
):
    buy = place(
        bob_client, bob_account, side="buy", type="limit", price="9.99", quantity="100"
    )
    wait_for(lambda: Order.objects.get(pk=buy.json()["id"]).status == "working")
    assert balance_of(bob_account, symbol.currency).held == Decimal("999.00")

    place(
        alice_client,
        alice_account,
        side="sell",
        type="limit",
        price="9.99",
        quantity="30",
    )
    wait_for(
        lambda: Order.objects.get(pk=buy.json()["id"]).status == "partially_filled"
    )
    assert balance_of(bob_account, symbol.currency).held == Decimal("699.30")

    response = bob_client.delete(f"/api/v1/orders/{buy.json()['id']}")
    assert response.status_code == 202
    wait_for(lambda: Order.objects.get(pk=buy.json()["id"]).status == "cancelled")

    cash = balance_of(bob_account, symbol.currency)
    assert (cash.available, cash.held) == (Decimal("9700.30"), Decimal(0))
    cancelled = OrderEvent.objects.get(order_id=buy.json()["id"], to_status="cancelled")
    assert cancelled.acting_user is not None
    assert (cancelled.reason, cancelled.acting_user.username) == ("requested", "bob")
    assert Order.objects.get(pk=buy.json()["id"]).held_amount == 0
    assert_ledger_balanced()


def test_a_backlog_matched_in_one_batch_keeps_every_reservation_exact(
    market, symbol, alice, bob, alice_account, bob_account
):
    # given 300 random orders queued while no matcher runs (fees on, to exercise them)
    import random

    from oms.models import OrderRequest
    from oms.services import OrderError, OrderSpec, order_place
    from tests.conftest import MatcherThread, assert_trading_consistent

    market.maker_fee_bps, market.taker_fee_bps = Decimal(5), Decimal(10)
    market.save()
    rng = random.Random(11)
    for _ in range(300):
        user, account = rng.choice([(alice, alice_account), (bob, bob_account)])
        try:
            order_place(
                user=user,
                spec=OrderSpec(
                    account_id=account.pk,
                    symbol="XSX:XS01",
                    side=rng.choice(["buy", "sell"]),
                    type="limit",
                    time_in_force=rng.choice(["gtc", "gtc", "ioc", "fok"]),
                    price=Decimal(rng.randint(990, 1010)) / 100,
                    quantity=Decimal(rng.randint(1, 30)),
                ),
            )
        except OrderError:
            pass
    # when one matcher takes them in batches of 200
    runner = MatcherThread("XSX").start()
    try:
        wait_for(
            lambda: not OrderRequest.objects.filter(processed_at__isnull=True).exists()
        )
    finally:
        runner.stop()
    # then every invariant holds
    assert Trade.objects.count() > 50
    assert_trading_consistent()


def test_a_failed_batch_rolls_back_whole_and_the_worker_rebuilds_and_carries_on(
    matcher, symbol, alice_client, bob_client, alice_account, bob_account
):
    from exchange import matching

    failures: list[Any] = []

    def failing_once(outcome):
        if outcome.trades and not failures:
            failures.append(len(outcome.trades))
            raise RuntimeError("simulated failure inside the batch transaction")
        return []

    matching.batch_hook_register(failing_once)
    try:
        sell = place(
            alice_client, alice_account, side="sell", price="10.00", quantity="10"
        )
        buy = place(bob_client, bob_account, side="buy", price="10.00", quantity="10")
        wait_for(lambda: Order.objects.get(pk=buy.json()["id"]).status == "filled")
    finally:
        matching._batch_hooks.remove(failing_once)
    assert failures == [1]
    assert Order.objects.get(pk=sell.json()["id"]).status == "filled"
    assert Trade.objects.count() == 1
    assert_ledger_balanced()


def test_time_priority_is_the_order_orders_entered_the_book_and_survives_a_restart(
    market, symbol, alice_client, alice_account
):
    from tests.conftest import MatcherThread

    first_worker = MatcherThread("XSX").start()
    try:
        first = place(
            alice_client, alice_account, side="buy", price="9.00", quantity="1"
        )
        wait_for(lambda: Order.objects.get(pk=first.json()["id"]).status == "working")
        second = place(
            alice_client, alice_account, side="buy", price="9.00", quantity="1"
        )
        wait_for(lambda: Order.objects.get(pk=second.json()["id"]).status == "working")
    finally:
        first_worker.stop()
    second_worker = MatcherThread("XSX").start()
    try:
        third = place(
            alice_client, alice_account, side="buy", price="9.00", quantity="1"
        )
        wait_for(lambda: Order.objects.get(pk=third.json()["id"]).status == "working")
        book = second_worker.worker.books[symbol.pk]
        assert [o[0] for o in book.orders()] == [
            first.json()["id"],
            second.json()["id"],
            third.json()["id"],
        ]
    finally:
        second_worker.stop()
    priorities = [
        Order.objects.get(pk=r.json()["id"]).priority for r in (first, second, third)
    ]
    assert None not in priorities
    assert priorities == sorted(p or 0 for p in priorities)
    assert len(set(priorities)) == 3


def test_the_trades_tape_pages_by_sequence_and_time(
    matcher, symbol, alice_client, bob_client, alice_account, bob_account
):
    for count, price in enumerate(("10.00", "10.01", "10.02"), start=1):
        place(alice_client, alice_account, side="sell", price=price, quantity="1")
        place(bob_client, bob_account, side="buy", price=price, quantity="1")

        def traded(expected: int = count) -> bool:
            return Trade.objects.count() == expected

        wait_for(traded)
    url = "/api/v1/symbols/XSX:XS01/trades"

    def prices(query):
        response = bob_client.get(url + query)
        assert response.status_code == 200, response.json()
        return [(t["seq"], t["price"]) for t in response.json()["results"]]

    assert prices("") == [(3, "10.02"), (2, "10.01"), (1, "10.00")]
    assert prices("?after_seq=1") == [(3, "10.02"), (2, "10.01")]
    assert prices("?before_seq=3&after_seq=1") == [(2, "10.01")]
    second = Trade.objects.get(seq=2).executed_at.isoformat().replace("+", "%2B")
    assert prices(f"?to={second}") == [(1, "10.00")]
    assert prices(f"?from={second}") == [(3, "10.02"), (2, "10.01")]
    assert prices("?limit=1") == [(3, "10.02")]
    for query, code in (
        ("?from=noon", "invalid_time"),
        ("?after_seq=x", "invalid_seq"),
    ):
        response = bob_client.get(url + query)
        assert (response.status_code, response.json()["code"]) == (400, code)
