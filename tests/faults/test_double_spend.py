"""Double spend: many parallel requests (buy orders and withdrawals), each for the
whole available balance, round after round: at most one may win each round."""

import threading
from decimal import Decimal

import pytest

from oms.models import Order
from registry.models import Balance
from tests.conftest import wait_for
from tests.faults.conftest import traders
from tests.faults.harness import (
    Acknowledgements,
    MatcherProcess,
    RestClient,
    WebServer,
    limit_body,
    record_figures,
    scale,
)
from tests.faults.invariants import assert_invariants

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PARALLEL = scale(20, 200)
ROUNDS = scale(5, 100)
CASH = Decimal("1000.00")


def cash_of(account) -> Balance:
    return Balance.objects.get(account=account, asset=account.currency)


class Round:
    """``PARALLEL`` requests released together by a barrier: even ones place a
    buy holding the whole cash (100 x 10.00), odd ones withdraw it all."""

    def __init__(self, clients: list[RestClient], account, number: int) -> None:
        self.clients = clients
        self.account = account
        self.number = number
        self.barrier = threading.Barrier(len(clients))
        self.winners: list[tuple[str, int]] = []
        self.acks = Acknowledgements()

    def fire(self, index: int) -> None:
        rest = self.clients[index]
        key = f"ds-{self.number}-{index}"
        self.barrier.wait(60)
        if index % 2 == 0:
            body = limit_body(
                self.account.pk, "buy", "10.00", "100", client_order_id=key
            )
            reply = rest.request("POST", "/orders", body)
            kind = "order"
        else:
            body = {"amount": str(CASH), "idempotency_key": key}
            reply = rest.request(
                "POST", f"/accounts/{self.account.pk}/withdrawals", body
            )
            kind = "withdrawal"
        if self.acks.count(kind, reply, {201, 422}) and reply.status == 201:
            with self.acks.lock:
                self.winners.append((kind, reply.body["id"]))

    def run(self) -> None:
        threads = [
            threading.Thread(target=self.fire, args=(i,))
            for i in range(len(self.clients))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)


def release(rest: RestClient, account, winner: tuple[str, int]) -> None:
    """Give the cash back: cancel the winning order or withdrawal."""
    kind, pk = winner
    if kind == "order":
        assert rest.request("DELETE", f"/orders/{pk}").status == 202
        wait_for(lambda: Order.objects.get(pk=pk).status == "cancelled", timeout=60)
    else:
        assert rest.request("POST", f"/transfers/{pk}/cancel").status in (200, 201)
    wait_for(lambda: cash_of(account).available == CASH, timeout=60)


def test_parallel_full_balance_orders_and_withdrawals_never_overspend(tmp_path, symbol):
    (trader,) = traders(symbol, 1, cash=str(CASH), units="0")
    web = WebServer(tmp_path / "web.log", workers=2, threads=16)
    matcher = MatcherProcess(tmp_path / "matcher.log")
    clients = [RestClient(web.port, trader.token) for _ in range(PARALLEL)]
    overspends, wins, refusals, unexpected = 0, 0, 0, []
    try:
        wait_for(lambda: matcher.owns_market, timeout=60)
        for rest in clients:  # connect before the first barrier
            assert rest.request("GET", f"/accounts/{trader.account.pk}").status == 200
        for number in range(ROUNDS):
            round_ = Round(clients, trader.account, number)
            round_.run()
            balance = cash_of(trader.account)
            if len(round_.winners) > 1 or balance.available < 0 or balance.held > CASH:
                overspends += 1
            wins += len(round_.winners)
            refusals += sum(
                n for key, n in round_.acks.statuses.items() if key.endswith(" 422")
            )
            unexpected += round_.acks.unexpected
            # the round's single winner holds everything; nothing else is held
            assert (len(round_.winners), balance.available, balance.held) == (
                1,
                Decimal("0.00"),
                CASH,
            ), (round_.winners, balance.available, balance.held)
            release(clients[0], trader.account, round_.winners[0])
    finally:
        for rest in clients:
            rest.close()
        record_figures(
            "double_spend",
            {
                "parallel": PARALLEL,
                "rounds": ROUNDS,
                "overspends": overspends,
                "wins": wins,
                "refusals_422": refusals,
                "unexpected": len(unexpected),
            },
        )
        matcher.stop()
        web.stop()
    assert unexpected == []
    assert overspends == 0
    assert_invariants()
