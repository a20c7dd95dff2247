import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest
from django.db import connections
from django.db.models import Sum
from rest_framework.test import APIClient

from exchange.matching import MatchingWorker
from registry.models import Asset, Balance, Posting
from tests import factories


def _cancel_all_tasks_bounded(loop: asyncio.AbstractEventLoop) -> None:
    """asyncio.runners._cancel_all_tasks with a time limit: an event loop closing at
    the end of an async test must not wait forever for a task that does not end on
    cancellation (seen, rarely, in a Redis channel-layer receive). Stuck tasks are
    logged and left behind instead of hanging the whole run."""
    pending = asyncio.all_tasks(loop)
    if not pending:
        return
    for task in pending:
        task.cancel()
    _done, stuck = loop.run_until_complete(asyncio.wait(pending, timeout=5))
    for task in stuck:
        logging.getLogger(__name__).warning("task did not end on cancel: %r", task)


asyncio.runners._cancel_all_tasks = _cancel_all_tasks_bounded  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _fast_hasher(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_channel_layer():
    """A new channel-layer instance per test: each async test runs on its own event
    loop, and a Redis layer keeps per-loop receive state that must not leak."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def market(db):
    return factories.market("XSX")


@pytest.fixture
def symbol(market):
    return factories.symbol(market, "XS01")


@pytest.fixture
def alice(db):
    return factories.user("alice")


@pytest.fixture
def bob(db):
    return factories.user("bob")


@pytest.fixture
def alice_account(alice, symbol):
    return factories.account(alice, cash="10000.00", holdings={symbol: "1000"})


@pytest.fixture
def bob_account(bob, symbol):
    return factories.account(bob, cash="10000.00", holdings={symbol: "1000"})


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def alice_client(alice):
    return client_for(alice)


@pytest.fixture
def bob_client(bob):
    return client_for(bob)


def wait_for(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02
):
    """Poll ``predicate`` until it returns something truthy, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        time.sleep(interval)


class MatcherThread:
    """A matching worker for one market, run in a thread of the test process."""

    def __init__(self, market_code: str) -> None:
        self.stop_event = threading.Event()
        self.worker = MatchingWorker(
            market_code, batch_size=200, poll_seconds=0.1, stop_event=self.stop_event
        )
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.worker.run()
        finally:
            connections.close_all()

    def start(self) -> "MatcherThread":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def matcher(market) -> Iterator[MatcherThread]:
    """A running matcher for XSX (tests using it need ``transaction=True``)."""
    runner = MatcherThread(market.code).start()
    yield runner
    runner.stop()


def ledger_sums() -> dict[str, Decimal]:
    """Sum of all postings per asset code (every one must be zero)."""
    rows = Posting.objects.values("asset__code").annotate(total=Sum("amount"))
    return {row["asset__code"]: row["total"] for row in rows}


def assert_ledger_balanced() -> None:
    assert all(total == 0 for total in ledger_sums().values()), ledger_sums()
    # Stored balances equal the postings, bucket by bucket.
    for balance in Balance.objects.all():
        postings = Posting.objects.filter(account=balance.account, asset=balance.asset)
        for bucket in ("available", "held", "unsettled"):
            total = postings.filter(bucket=bucket).aggregate(t=Sum("amount"))["t"] or 0
            assert getattr(balance, bucket) == total, (balance, bucket, total)
        # ... and the cost base equals the postings' cost changes.
        cost = postings.aggregate(c=Sum("cost_delta"))["c"] or 0
        assert balance.cost == cost, (balance, "cost", cost)


def balance_of(account, asset: Asset) -> Balance:
    return Balance.objects.get(account=account, asset=asset)


def bust_notice_seqs(symbol_id: int) -> list[int]:
    """The ``trades`` stream sequences the symbol's busts took (their audit
    records name them)."""
    from exchange.models import Trade
    from registry.models import AuditRecord

    busted = Trade.objects.filter(symbol_id=symbol_id, busted_at__isnull=False)
    ids = [str(pk) for pk in busted.values_list("pk", flat=True)]
    records = AuditRecord.objects.filter(
        action="trade_bust", object_type="exchange.trade", object_id__in=ids
    )
    return [record.changes["tape_seq"] for record in records]


def assert_trading_consistent() -> None:
    """The invariants of DESIGN.md over everything in the database."""
    from collections import defaultdict

    from django.db.models import Max, Min

    from exchange.models import Trade
    from oms.models import OPEN_STATUSES, RESTING_STATUSES, Order, OrderEvent

    # no fill duplicated: trades, fill events and filled quantities agree (a staff
    # correction is a trade of its own but not a fill of the orders it names)
    traded: dict[int, Decimal] = defaultdict(Decimal)
    for trade in Trade.objects.filter(corrected_from__isnull=True):
        traded[trade.buy_order_id] += trade.quantity
        traded[trade.sell_order_id] += trade.quantity
    event_fills = dict(
        OrderEvent.objects.filter(fill_quantity__isnull=False)
        .values_list("order_id")
        .annotate(total=Sum("fill_quantity"))
    )
    for order in Order.objects.all():
        assert (
            order.filled_quantity
            == traded.get(order.pk, 0)
            == event_fills.get(order.pk, 0)
        )
        assert 0 <= order.filled_quantity <= order.quantity
        if order.is_terminal:
            assert order.held_amount == 0, order
    for symbol_id in Order.objects.values_list("symbol_id", flat=True).distinct():
        seqs = list(
            Trade.objects.filter(symbol_id=symbol_id)
            .order_by("seq")
            .values_list("seq", flat=True)
        )
        # the trades stream is gapless: trades and the busts' notices on the tape
        seqs = sorted([*seqs, *bust_notice_seqs(symbol_id)])
        assert seqs == list(range(1, len(seqs) + 1))
        resting = Order.objects.filter(symbol_id=symbol_id, status__in=RESTING_STATUSES)
        best_bid = resting.filter(side="buy").aggregate(p=Max("price"))["p"]
        best_ask = resting.filter(side="sell").aggregate(p=Min("price"))["p"]
        assert best_bid is None or best_ask is None or best_bid < best_ask
    # held amounts are exactly what the open orders and pending withdrawals need
    from tests.registry.helpers import pending_withdrawals_total

    for balance in Balance.objects.filter(allow_negative=False):
        reserved = (
            Order.objects.filter(
                account=balance.account,
                held_asset=balance.asset,
                status__in=OPEN_STATUSES,
            ).aggregate(total=Sum("held_amount"))["total"]
            or 0
        ) + pending_withdrawals_total(balance.account_id, balance.asset_id)
        assert balance.held == reserved, (balance, reserved)
    assert_ledger_balanced()
