"""Depth by order and execution reports, as folded by the matching batch hook."""

from decimal import Decimal
from typing import Any

import pytest

from exchange.matching import MatchingWorker, booking
from exchange.models import Market, StreamSequence, Trade
from marketdata.depth import (
    ExecutionsTopic,
    OrdersBookTopic,
    executions_list,
    orders_book_snapshot,
)
from oms.services import OrderSpec, order_cancel, order_place
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def published(monkeypatch):
    """Messages the matching worker publishes, as (topic, message)."""
    messages: list[Any] = []
    monkeypatch.setattr(booking, "publish_on_commit", messages.extend)
    return messages


@pytest.fixture
def worker(market):
    worker = MatchingWorker(market.code)
    worker.rebuild()
    return worker


def place(user, account, side, price, quantity, tif="gtc"):
    return order_place(
        user=user,
        spec=OrderSpec(
            account_id=account.pk,
            symbol="XSX:XS01",
            side=side,
            type="limit",
            time_in_force=tif,
            price=Decimal(price),
            quantity=Decimal(quantity),
        ),
    ).order


def on(messages, prefix):
    return [(topic, m) for topic, m in messages if topic.startswith(prefix)]


def test_a_batch_publishes_the_changed_resting_orders_with_zero_for_those_that_left(
    symbol, worker, published, alice, bob, alice_account, bob_account
):
    # given a book of three resting orders (batch 1)
    sell_1 = place(alice, alice_account, "sell", "10.05", "100")
    sell_2 = place(alice, alice_account, "sell", "10.10", "50")
    bid = place(bob, bob_account, "buy", "9.90", "20")
    worker.process_batch()
    assert [m for _, m in on(published, "orders_book.")] == [
        {
            "type": "stream.message",
            "topic": "orders_book.XSX:XS01",
            "seq": 1,
            "data": [
                {"id": sell_1.pk, "side": "sell", "price": "10.05", "quantity": "100"},
                {"id": sell_2.pk, "side": "sell", "price": "10.10", "quantity": "50"},
                {"id": bid.pk, "side": "buy", "price": "9.90", "quantity": "20"},
            ],
        }
    ]
    published.clear()

    # when one batch: bob lifts the first ask and part of the second, cancels his
    # bid, and an ask rests and is taken within the batch
    taker = place(bob, bob_account, "buy", "10.10", "120")
    order_cancel(user=bob, order_id=bid.pk)
    passing = place(alice, alice_account, "sell", "10.00", "10")
    place(bob, bob_account, "buy", "10.00", "10", tif="ioc")
    worker.process_batch()

    # then one message: the orders that were on the book before, with what is left
    # of them; the takers and the ask that came and went do not appear
    [(topic, message)] = on(published, "orders_book.")
    assert (topic, message["seq"]) == ("orders_book.XSX:XS01", 2)
    assert message["data"] == [
        {"id": sell_1.pk, "side": "sell", "price": "10.05", "quantity": "0"},
        {"id": sell_2.pk, "side": "sell", "price": "10.10", "quantity": "30"},
        {"id": bid.pk, "side": "buy", "price": "9.90", "quantity": "0"},
    ]
    assert taker.pk not in {row["id"] for row in message["data"]}
    assert passing.pk not in {row["id"] for row in message["data"]}
    assert StreamSequence.objects.get(topic="orders_book.XSX:XS01").seq == 2


def test_each_fill_sends_an_execution_report_to_each_owner_with_fee_and_liquidity(
    market, symbol, worker, published, alice, bob, alice_account, bob_account
):
    Market.objects.filter(pk=market.pk).update(maker_fee_bps=5, taker_fee_bps=10)
    worker.rebuild()
    maker = place(alice, alice_account, "sell", "10.00", "100")
    worker.process_batch()
    published.clear()

    taker = place(bob, bob_account, "buy", "10.00", "60")
    worker.process_batch()

    trade = Trade.objects.get()
    executed_at = trade.executed_at.isoformat()
    reports = on(published, "executions.")
    assert reports == [
        (
            f"executions.acct.{bob_account.pk}",
            {
                "type": "stream.message",
                "topic": f"executions.acct.{bob_account.pk}",
                "seq": 1,
                "account": bob_account.pk,
                "data": {
                    "trade_id": trade.pk,
                    "order_id": taker.pk,
                    "account": bob_account.pk,
                    "symbol": "XSX:XS01",
                    "side": "buy",
                    "price": "10.00",
                    "quantity": "60",
                    "fee": "0.60",
                    "liquidity": "taker",
                    "executed_at": executed_at,
                },
            },
        ),
        (
            f"executions.acct.{alice_account.pk}",
            {
                "type": "stream.message",
                "topic": f"executions.acct.{alice_account.pk}",
                "seq": 1,
                "account": alice_account.pk,
                "data": {
                    "trade_id": trade.pk,
                    "order_id": maker.pk,
                    "account": alice_account.pk,
                    "symbol": "XSX:XS01",
                    "side": "sell",
                    "price": "10.00",
                    "quantity": "60",
                    "fee": "0.30",
                    "liquidity": "maker",
                    "executed_at": executed_at,
                },
            },
        ),
    ]


def test_a_batch_without_book_changes_or_fills_publishes_no_depth(
    symbol, worker, published, alice, alice_account
):
    # an IOC that finds nothing to trade never rests
    place(alice, alice_account, "sell", "10.00", "5", tif="ioc")
    worker.process_batch()
    assert on(published, "orders_book.") == []
    assert on(published, "executions.") == []
    assert not StreamSequence.objects.filter(topic__startswith="orders_book.").exists()


def test_the_snapshot_lists_resting_orders_best_price_first_in_time_priority(
    symbol, worker, alice, bob, alice_account, bob_account
):
    a1 = place(alice, alice_account, "sell", "10.10", "5")
    a2 = place(bob, bob_account, "sell", "10.05", "7")
    a3 = place(alice, alice_account, "sell", "10.05", "9")
    b1 = place(bob, bob_account, "buy", "9.90", "4")
    b2 = place(alice, alice_account, "buy", "9.95", "3")
    b3 = place(bob, bob_account, "buy", "9.90", "2")
    place(alice, alice_account, "buy", "10.05", "2")  # takes 2 from a2
    worker.process_batch()

    snapshot = orders_book_snapshot(symbol)

    def rows(side):
        return [(r["id"], r["price"], r["quantity"]) for r in snapshot[side]]

    assert snapshot["seq"] == 1
    assert rows("asks") == [
        (a2.pk, "10.05", "5"),
        (a3.pk, "10.05", "9"),
        (a1.pk, "10.10", "5"),
    ]
    assert rows("bids") == [
        (b2.pk, "9.95", "3"),
        (b1.pk, "9.90", "4"),
        (b3.pk, "9.90", "2"),
    ]
    assert OrdersBookTopic().snapshot(None, "XSX:XS01", []).seq == 1


def test_the_executions_snapshot_holds_each_accounts_latest_fills_newest_first(
    symbol, worker, alice, bob, alice_account, bob_account
):
    # given 30 trades between alice and bob, and a second account of alice's
    other = factories.account(alice, cash="1000.00")
    for _ in range(30):
        place(alice, alice_account, "sell", "10.00", "1")
        place(bob, bob_account, "buy", "10.00", "1")
    worker.process_batch()
    upstreams = [
        f"executions.acct.{alice_account.pk}",
        f"executions.acct.{other.pk}",
    ]

    snapshot = ExecutionsTopic().snapshot(alice, "", upstreams)

    assert snapshot.seqs == {str(alice_account.pk): 30, str(other.pk): 0}
    trade_ids = list(Trade.objects.order_by("-id").values_list("id", flat=True))
    assert [r["trade_id"] for r in snapshot.data] == trade_ids
    assert {(r["account"], r["side"], r["liquidity"]) for r in snapshot.data} == {
        (alice_account.pk, "sell", "maker")
    }
    assert len(executions_list(alice_account.pk, limit=20)) == 20
