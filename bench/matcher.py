"""Matching worker throughput: a queued backlog drained into trades and the ledger.

Usage: .venv/bin/python bench/matcher.py [--orders 5000] [--batch-size 200]

Queues ``--orders`` random limit orders on one symbol through the OMS (no matcher
running), then times one ``MatchingWorker`` draining them (each batch one
transaction: order states, trades, ledger postings, events, stream sequences).
Baseline in the same run: the pure engine on the same command stream, i.e. the
ceiling without persistence.
"""

import argparse
import random
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fresh_database


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=200)
    args = parser.parse_args()
    fresh_database()

    from django.contrib.auth import get_user_model

    from exchange import engine
    from exchange.matching import MatchingWorker
    from exchange.models import Trade
    from oms.models import Order, OrderRequest
    from oms.services import OrderSpec, order_place
    from registry.api import accounts_of
    from registry.selectors import ledger_differences

    rng = random.Random(42)
    users = [get_user_model().objects.get(username=name) for name in ("alice", "bob")]
    accounts = {user: [a.pk for a in accounts_of(user)] for user in users}
    start = time.perf_counter()
    for _ in range(args.orders):
        user = rng.choice(users)
        order_place(
            user=user,
            spec=OrderSpec(
                account_id=rng.choice(accounts[user]),
                symbol="XSX:XS01",
                side=rng.choice(["buy", "sell"]),
                type="limit",
                time_in_force=rng.choice(["gtc", "gtc", "gtc", "ioc"]),
                price=Decimal(rng.randint(990, 1010)) / 100,
                quantity=Decimal(rng.randint(1, 50)),
            ),
        )
    entry_seconds = time.perf_counter() - start

    # baseline: the engine alone on the same commands
    book = engine.OrderBook()
    commands = [
        engine.NewOrder(
            order_id=o.pk,
            side=engine.Side(o.side),
            order_type=engine.OrderType.LIMIT,
            time_in_force=engine.TimeInForce(o.time_in_force),
            quantity=int(o.quantity),
            price=int(o.price * 100),
        )
        for o in Order.objects.order_by("pk")
    ]
    start = time.perf_counter()
    for command in commands:
        book.apply(command)
    engine_seconds = time.perf_counter() - start

    stop = threading.Event()
    worker = MatchingWorker(
        "XSX", batch_size=args.batch_size, poll_seconds=0.05, stop_event=stop
    )
    thread = threading.Thread(target=worker.run)
    start = time.perf_counter()
    thread.start()
    while OrderRequest.objects.filter(processed_at__isnull=True).exists():
        time.sleep(0.05)
    match_seconds = time.perf_counter() - start
    stop.set()
    thread.join()

    trades = Trade.objects.count()
    assert not ledger_differences(), "the ledger does not reconcile"
    n = args.orders
    print(
        f"{n} orders on one symbol, batch size {args.batch_size}, {trades} trades, PostgreSQL"
    )
    print(f"order entry (OMS service, sequential)  {n / entry_seconds:10.0f} orders/s")
    print(
        f"matching worker (persisted)            {n / match_seconds:10.0f} orders/s  {trades / match_seconds:8.0f} trades/s"
    )
    print(f"engine alone (baseline)                {n / engine_seconds:10.0f} orders/s")
    print(
        f"persisted / engine                     {engine_seconds / match_seconds:10.4f}"
    )


if __name__ == "__main__":
    main()
