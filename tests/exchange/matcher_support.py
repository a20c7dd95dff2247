"""Helpers for tests that run matching workers in threads."""

import threading
from decimal import Decimal

from django.db import connection

from exchange.matching import BatchOutcome
from exchange.matching.worker import MatchingWorker
from oms.models import Order, OrderEvent, OrderRequest, OrderStatus
from oms.services import OrderSpec, order_place


def place(user, account, side: str, price: str, quantity: str, symbol="XSX:XS01"):
    return order_place(
        user=user,
        spec=OrderSpec(
            account_id=account.pk,
            symbol=symbol,
            side=side,
            type="limit",
            time_in_force="gtc",
            price=Decimal(price),
            quantity=Decimal(quantity),
        ),
    ).order


def inbox_empty() -> bool:
    return not OrderRequest.objects.filter(processed_at__isnull=True).exists()


def status_of(order: Order) -> str:
    return Order.objects.get(pk=order.pk).status


def places_processed_per_order() -> dict[int, int]:
    """Order id -> how many times its place left ``pending`` (1 each, if no
    request was processed twice)."""
    counts: dict[int, int] = {}
    for order_id in OrderEvent.objects.filter(
        from_status=OrderStatus.PENDING
    ).values_list("order_id", flat=True):
        counts[order_id] = counts.get(order_id, 0) + 1
    return counts


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def backend_terminate(pid: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])


class CommitLog:
    """Which worker committed which batches: a batch hook that records, after
    commit (a batch that rolled back is not in it), the ids of the orders the
    batch changed, under the name of the worker whose books it used."""

    def __init__(self, workers: dict[str, MatchingWorker]) -> None:
        self.workers = workers
        self.lock = threading.Lock()
        self.commits: list[tuple[str, frozenset[int]]] = []

    def hook(self, outcome: BatchOutcome) -> list:
        name = next(
            (n for n, w in self.workers.items() if w.books is outcome.books), "?"
        )
        ids = frozenset(order.pk for order in outcome.orders)

        def record() -> None:
            with self.lock:
                self.commits.append((name, ids))

        outcome.after_commit.append(record)
        return []

    def by(self, name: str) -> list[frozenset[int]]:
        with self.lock:
            return [ids for who, ids in self.commits if who == name]
