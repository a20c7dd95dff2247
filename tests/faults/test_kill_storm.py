"""Kill storm: order entry and cancels over REST while the owning matching worker is
SIGKILLed again and again, with a standby taking over each time."""

import functools
import random
import threading
import time
from datetime import UTC, datetime

import pytest

from oms.models import OrderRequest
from tests.conftest import wait_for
from tests.faults.conftest import Trader, traders
from tests.faults.harness import (
    MatcherProcess,
    RestClient,
    backend_pids,
    limit_body,
    record_figures,
    scale,
)
from tests.faults.invariants import assert_invariants

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ORDERS = scale(600, 5000)
ACCOUNTS = scale(40, 200)
KILL_EVERY_SECONDS = scale(3.0, 10.0)
KILLS = scale(4, 10)
CLIENTS = 8


class Storm:
    """Clients placing (and now and then cancelling) orders at a steady pace, so
    that traffic flows through every kill; records what was acknowledged.

    Each client sends its share of ``ORDERS``, and goes on (up to three times
    as many) until ``done`` is set: traffic must still flow after the last kill,
    however slow the machine.
    """

    def __init__(self, port: int, accounts: list[Trader], duration: float) -> None:
        self.port = port
        self.accounts = accounts
        self.interval = duration * CLIENTS / ORDERS
        self.lock = threading.Lock()
        self.placed: list[int] = []
        self.cancelled: list[int] = []
        self.failures: list[tuple[str, int, object]] = []
        self.done = threading.Event()
        self.sent = 0

    def client(self, index: int) -> None:
        rng = random.Random(index)
        clients: dict[int, RestClient] = {}
        mine: list[tuple[int, Trader]] = []
        start = time.monotonic()
        for i in range(3 * ORDERS // CLIENTS):
            if i >= ORDERS // CLIENTS and self.done.is_set():
                break
            time.sleep(max(0.0, start + i * self.interval - time.monotonic()))
            trader = rng.choice(self.accounts)
            rest = clients.setdefault(
                trader.account.pk, RestClient(self.port, trader.token)
            )
            if mine and rng.random() < 0.1:
                self.cancel(rest, trader, mine, rng)
            self.place(rest, trader, mine, rng, f"ks-{index}-{i}")
        for rest in clients.values():
            rest.close()

    def place(
        self,
        rest: RestClient,
        trader: Trader,
        mine: list[tuple[int, Trader]],
        rng: random.Random,
        client_order_id: str,
    ) -> None:
        body = limit_body(
            trader.account.pk,
            rng.choice(["buy", "sell"]),
            f"{rng.randint(995, 1005) / 100:.2f}",
            str(rng.randint(1, 20)),
            tif=rng.choice(["gtc", "gtc", "gtc", "ioc"]),
            client_order_id=client_order_id,
        )
        reply = rest.request("POST", "/orders", body)
        with self.lock:
            self.sent += 1
        if reply.status in (200, 201):
            with self.lock:
                self.placed.append(reply.body["id"])
            mine.append((reply.body["id"], trader))
        elif reply.status != 422:
            self.failures.append(("place", reply.status, reply.body))

    def cancel(
        self,
        rest: RestClient,
        trader: Trader,
        mine: list[tuple[int, Trader]],
        rng: random.Random,
    ) -> None:
        order_id, owner = mine.pop(rng.randrange(len(mine)))
        if owner is not trader:
            rest = RestClient(self.port, owner.token)
        reply = rest.request("DELETE", f"/orders/{order_id}")
        if reply.status == 202:
            with self.lock:
                self.cancelled.append(order_id)
        elif reply.status != 409:  # 409 order_not_open: it had finished
            self.failures.append(("cancel", reply.status, reply.body))


def sessions_gone_seconds(killed: MatcherProcess, killed_at: float) -> float:
    """Seconds from the kill until PostgreSQL has ended the dead worker's sessions
    (and with them its advisory lock)."""
    wait_for(lambda: not backend_pids(killed.application_name), timeout=60)
    return round(time.time() - killed_at, 3)


def takeover_seconds(kill_times: list[float]) -> list[float]:
    """For each kill: seconds until the first batch after it was committed (the
    ``processed_at`` its new owner stamps on the requests it takes)."""
    figures = []
    for killed_at in kill_times:
        first = (
            OrderRequest.objects.filter(
                processed_at__gt=datetime.fromtimestamp(killed_at, UTC)
            )
            .order_by("processed_at")
            .values_list("processed_at", flat=True)
            .first()
        )
        if first is not None:
            figures.append(round(first.timestamp() - killed_at, 3))
    return figures


def test_a_kill_storm_loses_no_acknowledged_order_or_cancel_and_duplicates_no_fill(
    tmp_path, symbol, web
):
    accounts = traders(symbol, ACCOUNTS, cash="1000000.00", units="100000")
    names = iter(range(KILLS + 2))

    def matcher() -> MatcherProcess:
        n = next(names)
        return MatcherProcess(tmp_path / f"matcher-{n}.log", name=f"faults-m{n}")

    active = matcher()
    wait_for(lambda: active.owns_market, timeout=30)
    standby = matcher()
    storm = Storm(web.port, accounts, duration=KILLS * KILL_EVERY_SECONDS + 2)
    clients = [threading.Thread(target=storm.client, args=(i,)) for i in range(CLIENTS)]
    kill_times: list[float] = []
    released: list[float] = []
    owners: list[MatcherProcess] = []
    started = time.monotonic()
    try:
        for thread in clients:
            thread.start()
        for _kill in range(KILLS):
            time.sleep(KILL_EVERY_SECONDS)
            # the standby that took over last time owns the market by now, and
            # the new standby is up (a Django boot takes seconds on a busy box)
            wait_for(functools.partial(getattr, active, "owns_market"), timeout=60)
            wait_for(functools.partial(getattr, standby, "is_booted"), timeout=60)
            kill_times.append(time.time())
            active.kill()
            killed = active
            owners.append(standby)
            active, standby = standby, matcher()
            released.append(sessions_gone_seconds(killed, kill_times[-1]))
        # the last takeover must see traffic too
        wait_for(lambda: active.owns_market, timeout=60)
        time.sleep(KILL_EVERY_SECONDS)
        storm.done.set()
        for thread in clients:
            thread.join(300)
        wait_for(
            lambda: not OrderRequest.objects.filter(processed_at__isnull=True).exists(),
            timeout=180,
        )
    finally:
        storm.done.set()
        active.stop()
        standby.stop()
    elapsed = time.monotonic() - started
    takeovers = takeover_seconds(kill_times)
    record_figures(
        "kill_storm",
        {
            "orders_sent": storm.sent,
            "accounts": ACCOUNTS,
            "kills": len(kill_times),
            "kill_every_s": KILL_EVERY_SECONDS,
            "acknowledged_orders": len(storm.placed),
            "acknowledged_cancels": len(storm.cancelled),
            "client_errors": len(storm.failures),
            "sessions_released_s": released,
            "owned_after_s": [
                round(m.owned_at - k, 3)
                for m, k in zip(owners, kill_times, strict=False)
            ],
            "takeover_s": takeovers,
            "takeover_median_s": sorted(takeovers)[len(takeovers) // 2]
            if takeovers
            else None,
            "takeover_max_s": max(takeovers, default=None),
            "elapsed_s": round(elapsed, 1),
        },
    )
    assert storm.failures == []
    assert_invariants(placed=storm.placed, cancelled=storm.cancelled)
    assert (len(kill_times), len(takeovers)) == (KILLS, KILLS)
