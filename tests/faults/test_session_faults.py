"""Session faults: ``pg_terminate_backend`` on the matching worker's sessions and on
the web server's sessions while orders flow. Nothing is restarted: the same
processes must carry on."""

import random
import threading
import time
from collections.abc import Callable

import pytest

from oms.models import Order, OrderRequest
from tests.conftest import wait_for
from tests.exchange.test_matcher_process import advisory_holders
from tests.faults.conftest import Trader, traders
from tests.faults.harness import (
    Acknowledgements,
    MatcherProcess,
    RestClient,
    WebServer,
    limit_body,
    record_figures,
    scale,
    terminate_backends,
)
from tests.faults.invariants import assert_invariants

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

TERMINATIONS = scale(10, 30)
TERMINATE_EVERY_SECONDS = scale(1.2, 1.0)
CLIENTS = 4


class Flow:
    """Clients placing crossing orders until told to stop (bounded by
    ``max_orders`` each). A failed request (5xx or no answer) is retried with the
    same body and ``client_order_id``, as a careful client does, a few times."""

    def __init__(self, port: int, accounts: list[Trader], max_orders: int) -> None:
        self.port = port
        self.accounts = accounts
        self.max_orders = max_orders
        self.stop = threading.Event()
        self.acks = Acknowledgements()
        self.sent: set[str] = set()
        self.retries = 0

    def client(self, index: int) -> None:
        rng = random.Random(200 + index)
        rests = {t.account.pk: RestClient(self.port, t.token) for t in self.accounts}
        for i in range(self.max_orders):
            if self.stop.is_set():
                break
            trader = rng.choice(self.accounts)
            key = f"sf-{index}-{i}"
            body = limit_body(
                trader.account.pk,
                rng.choice(["buy", "sell"]),
                f"{rng.randint(995, 1005) / 100:.2f}",
                str(rng.randint(1, 10)),
                client_order_id=key,
            )
            with self.acks.lock:
                self.sent.add(key)
            self.place(rests[trader.account.pk], body)
            time.sleep(0.02)
        for rest in rests.values():
            rest.close()

    def place(self, rest: RestClient, body: dict[str, object]) -> None:
        for attempt in range(5):
            reply = rest.request("POST", "/orders", body)
            # A session lost under the request is an honest 503 (JSON, retry
            # later), never a 500; the retry under the same key places it once.
            unavailable = isinstance(reply.body, dict) and reply.body.get("code") in (
                "database_unavailable",
                "busy",
            )
            expected = {200, 201, 422} | ({503} if unavailable else set())
            self.acks.count("place", reply, expected)
            if reply.status in (200, 201):
                if reply.status == 201 or attempt:
                    self.acks.order(reply)
                return
            if reply.status and reply.status < 500:
                return
            with self.acks.lock:
                self.retries += 1
            time.sleep(0.2)

    def run_while(self, fault: Callable[[], None]) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self.client, args=(i,)) for i in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        try:
            fault()
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(300)
        return threads


def inbox_drained() -> bool:
    return not OrderRequest.objects.filter(processed_at__isnull=True).exists()


def test_terminating_the_workers_sessions_mid_flow_loses_and_repeats_nothing(
    tmp_path, symbol, web
):
    accounts = traders(symbol, 10, cash="100000.00", units="10000")
    matcher = MatcherProcess(tmp_path / "matcher.log", name="faults-sm")
    flow = Flow(web.port, accounts, max_orders=scale(400, 5000))
    terminated = []

    def fault() -> None:
        for _ in range(TERMINATIONS):
            time.sleep(TERMINATE_EVERY_SECONDS)
            terminated.append(terminate_backends("faults-sm"))

    try:
        wait_for(lambda: matcher.owns_market, timeout=60)
        flow.run_while(fault)
        wait_for(inbox_drained, timeout=180)
        # the same process carries on: a new order after the last fault is matched
        later = RestClient(web.port, accounts[0].token).request(
            "POST", "/orders", limit_body(accounts[0].account.pk, "buy", "9.00", "1")
        )
        assert later.status == 201, later
        wait_for(lambda: Order.objects.get(pk=later.body["id"]).status == "working")
        flow.acks.order(later)
        alive, holders = matcher.is_alive, advisory_holders()
        ownerships = matcher.ownership_count()
    finally:
        matcher.stop()
    record_figures(
        "session_faults_worker",
        {
            "terminations": len(terminated),
            "sessions_terminated": sum(terminated),
            "ownerships": ownerships,
            "acknowledged_orders": len(flow.acks.placed),
            "client_errors": len(flow.acks.unexpected),
        },
    )
    # still the owner, by the advisory lock: a worker matching on a session that
    # does not hold it is unfenced (another worker could take the market)
    assert (alive, holders) == (True, 1)
    assert ownerships >= 2  # it lost the market and took it back itself
    assert flow.acks.unexpected == []
    assert_invariants(placed=flow.acks.placed)


def test_terminating_the_web_servers_sessions_mid_flow_surfaces_no_500_and_duplicates_nothing(
    tmp_path, symbol
):
    accounts = traders(symbol, 10, cash="100000.00", units="10000")
    web = WebServer(tmp_path / "web.log", name="faults-sw")
    matcher = MatcherProcess(tmp_path / "matcher.log")
    flow = Flow(web.port, accounts, max_orders=scale(400, 5000))
    terminated = []
    pid = web.process.pid

    def fault() -> None:
        for _ in range(TERMINATIONS):
            time.sleep(TERMINATE_EVERY_SECONDS)
            terminated.append(terminate_backends("faults-sw"))

    try:
        wait_for(lambda: matcher.owns_market, timeout=60)
        flow.run_while(fault)
        later = RestClient(web.port, accounts[0].token).request(
            "POST", "/orders", limit_body(accounts[0].account.pk, "buy", "9.00", "1")
        )
        wait_for(inbox_drained, timeout=180)
        alive = web.is_alive and web.process.pid == pid
    finally:
        matcher.stop()
        web.stop()
    keys = list(
        Order.objects.filter(client_order_id__startswith="sf-").values_list(
            "client_order_id", flat=True
        )
    )
    record_figures(
        "session_faults_web",
        {
            "terminations": len(terminated),
            "sessions_terminated": sum(terminated),
            "orders_sent": len(flow.sent),
            "orders_stored": len(keys),
            "acknowledged_orders": len(flow.acks.placed),
            "server_errors": flow.acks.server_errors,
            "retries": flow.retries,
            "statuses": dict(sorted(flow.acks.statuses.items())),
        },
    )
    assert (alive, later.status) == (True, 201), later
    flow.acks.order(later)
    assert len(keys) == len(set(keys))  # no order placed twice
    assert set(keys) <= flow.sent
    assert [(op, status) for op, status, _ in flow.acks.unexpected] == []
    assert_invariants(placed=flow.acks.placed)
