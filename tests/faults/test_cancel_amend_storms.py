"""Cancel-all and amend storms: threads cancelling everything, amending and placing
against the very accounts whose orders the worker is matching."""

import random
import threading
import time

import pytest

from oms.models import OrderRequest
from tests.conftest import wait_for
from tests.faults.conftest import Trader, traders
from tests.faults.harness import (
    Acknowledgements,
    MatcherProcess,
    RestClient,
    limit_body,
    record_figures,
    scale,
)
from tests.faults.invariants import assert_invariants

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ACCOUNTS = scale(10, 50)
OPERATIONS = scale(800, 8000)
CLIENTS = 8
#: What each operation may answer: anything else (a 5xx, a dropped connection, a
#: deadlock message) is a failure surfaced to the client.
EXPECTED = {
    "place": {201, 422},
    # 400 quantity_below_filled / nothing_to_amend, 409 order_not_open,
    # 422 insufficient_funds or _holdings
    "amend": {202, 400, 409, 422},
    "cancel": {202, 409},
    "cancel_all": {202},
}


class Storm:
    def __init__(self, port: int, accounts: list[Trader]) -> None:
        self.port = port
        self.accounts = accounts
        self.acks = Acknowledgements()
        self.open_orders: dict[int, list[int]] = {t.account.pk: [] for t in accounts}

    def client(self, index: int) -> None:
        rng = random.Random(100 + index)
        rests = {t.account.pk: RestClient(self.port, t.token) for t in self.accounts}
        for i in range(OPERATIONS // CLIENTS):
            trader = rng.choice(self.accounts)
            rest = rests[trader.account.pk]
            pick = rng.random()
            if pick < 0.55:
                self.place(rest, trader, rng, f"st-{index}-{i}")
            elif pick < 0.85:
                self.amend(rest, trader, rng)
            elif pick < 0.95:
                self.cancel(rest, trader, rng)
            else:
                self.cancel_all(rest, trader, rng)
        for rest in rests.values():
            rest.close()

    def place(
        self, rest: RestClient, trader: Trader, rng: random.Random, client_order_id: str
    ) -> None:
        body = limit_body(
            trader.account.pk,
            rng.choice(["buy", "sell"]),
            f"{rng.randint(990, 1010) / 100:.2f}",
            str(rng.randint(1, 30)),
            client_order_id=client_order_id,
        )
        reply = rest.request("POST", "/orders", body)
        if self.acks.count("place", reply, EXPECTED["place"]) and reply.status == 201:
            self.acks.order(reply)
            with self.acks.lock:
                self.open_orders[trader.account.pk].append(reply.body["id"])

    def _some_order(self, trader: Trader, rng: random.Random) -> int | None:
        with self.acks.lock:
            mine = self.open_orders[trader.account.pk]
            return rng.choice(mine) if mine else None

    def amend(self, rest: RestClient, trader: Trader, rng: random.Random) -> None:
        order_id = self._some_order(trader, rng)
        if order_id is None:
            return
        change = rng.choice(["price", "quantity", "both"])
        body = {}
        if change in ("price", "both"):
            body["price"] = f"{rng.randint(990, 1010) / 100:.2f}"
        if change in ("quantity", "both"):
            body["quantity"] = str(rng.randint(1, 40))
        reply = rest.request("PATCH", f"/orders/{order_id}", body)
        self.acks.count("amend", reply, EXPECTED["amend"])
        if reply.status == 409:
            self.forget(trader, order_id)

    def forget(self, trader: Trader, order_id: int) -> None:
        """A finished order is not worth amending again."""
        with self.acks.lock:
            mine = self.open_orders[trader.account.pk]
            if order_id in mine:
                mine.remove(order_id)

    def cancel(self, rest: RestClient, trader: Trader, rng: random.Random) -> None:
        order_id = self._some_order(trader, rng)
        if order_id is None:
            return
        reply = rest.request("DELETE", f"/orders/{order_id}")
        if self.acks.count("cancel", reply, EXPECTED["cancel"]) and reply.status == 202:
            self.acks.cancels([order_id])
        self.forget(trader, order_id)

    def cancel_all(self, rest: RestClient, trader: Trader, rng: random.Random) -> None:
        body = {"account": trader.account.pk}
        if rng.random() < 0.5:
            body["side"] = rng.choice(["buy", "sell"])
        reply = rest.request("POST", "/orders/cancel-all", body)
        ok = self.acks.count("cancel_all", reply, EXPECTED["cancel_all"])
        if ok and reply.status == 202:
            self.acks.cancels(reply.body["orders"])


def test_cancel_all_and_amend_storms_during_batches_surface_no_error_and_keep_holds_exact(
    tmp_path, symbol, web
):
    accounts = traders(symbol, ACCOUNTS, cash="100000.00", units="10000")
    matcher = MatcherProcess(tmp_path / "matcher.log")
    storm = Storm(web.port, accounts)
    started = time.monotonic()
    try:
        wait_for(lambda: matcher.owns_market, timeout=60)
        threads = [
            threading.Thread(target=storm.client, args=(i,)) for i in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(900)
        wait_for(
            lambda: not OrderRequest.objects.filter(processed_at__isnull=True).exists(),
            timeout=180,
        )
    finally:
        matcher.stop()
    acks = storm.acks
    record_figures(
        "cancel_amend_storms",
        {
            "accounts": ACCOUNTS,
            "operations": sum(acks.statuses.values()),
            "statuses": dict(sorted(acks.statuses.items())),
            "server_errors": acks.server_errors,
            "unexpected": len(acks.unexpected),
            "elapsed_s": round(time.monotonic() - started, 1),
        },
    )
    assert acks.unexpected == []
    assert_invariants(
        placed=acks.placed, cancelled=acks.cancelled, originals=acks.originals
    )
