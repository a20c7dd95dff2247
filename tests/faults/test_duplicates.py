"""Duplicates: many submissions over fewer ``client_order_id``s, concurrently, some
with an altered body: one order per id, 409 for every altered body, no extra hold."""

import random
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
    limit_body,
    record_figures,
    scale,
)
from tests.faults.invariants import assert_invariants

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SUBMISSIONS = scale(1000, 10000)
KEYS = scale(200, 2000)
CLIENTS = 8
ALTERED_SHARE = 0.2


def body_for(account_id: int, key: int, *, altered: bool) -> dict:
    quantity = 1 + key % 10 + (1 if altered else 0)
    return limit_body(
        account_id, "buy", "1.00", str(quantity), client_order_id=f"dup-{key}"
    )


def submissions(account_id: int) -> list[tuple[int, dict]]:
    """Each key ``SUBMISSIONS / KEYS`` times, shuffled; a share of them altered."""
    rng = random.Random(11)
    keys = [key for key in range(KEYS) for _ in range(SUBMISSIONS // KEYS)]
    rng.shuffle(keys)
    return [
        (key, body_for(account_id, key, altered=rng.random() < ALTERED_SHARE))
        for key in keys
    ]


def code_of(answer: object) -> str | None:
    return answer.get("code") if isinstance(answer, dict) else None


def expected(body: dict, key: int, created: dict) -> tuple[int, str | None]:
    """The same body again returns the original (200); another body is a 409."""
    if body == created.get(key):
        return 200, None
    return 409, "duplicate_client_order_id"


def test_resubmissions_make_one_order_per_client_order_id_and_no_extra_hold(
    tmp_path, symbol, web
):
    (trader,) = traders(symbol, 1, cash="1000000.00", units="0")
    matcher = MatcherProcess(tmp_path / "matcher.log")
    work = submissions(trader.account.pk)
    acks = Acknowledgements()
    replies: list[tuple[int, dict, int, object]] = []

    def client(index: int) -> None:
        rest = RestClient(web.port, trader.token)
        for key, body in work[index::CLIENTS]:
            reply = rest.request("POST", "/orders", body)
            acks.count("place", reply, {200, 201, 409})
            with acks.lock:
                replies.append((key, body, reply.status, reply.body))
        rest.close()

    try:
        wait_for(lambda: matcher.owns_market, timeout=60)
        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
        wait_for(
            lambda: not Order.objects.filter(status="pending").exists(), timeout=120
        )
    finally:
        matcher.stop()

    created = {key: body for key, body, status, _ in replies if status == 201}
    created_count = sum(1 for _k, _b, status, _r in replies if status == 201)
    # every other reply agrees with the body that created the order
    wrong = [
        (key, status, answer)
        for key, body, status, answer in replies
        if status != 201 and (status, code_of(answer)) != expected(body, key, created)
    ]
    altered = sum(1 for key, body, _s, _r in replies if body != created.get(key))
    conflicts = sum(1 for _k, _b, status, _r in replies if status == 409)
    orders = Order.objects.filter(account=trader.account)
    held = Balance.objects.get(account=trader.account, asset__code="AUD").held
    needed = sum(
        Decimal(body["quantity"]) * Decimal("1.00") for body in created.values()
    )
    record_figures(
        "duplicates",
        {
            "submissions": len(replies),
            "keys": KEYS,
            "orders": orders.count(),
            "created_201": created_count,
            "altered_bodies": altered,
            "conflicts_409": conflicts,
            "wrong_answers": len(wrong),
            "unexpected": len(acks.unexpected),
            "extra_hold": f"{held - needed:f}",
        },
    )
    assert acks.unexpected == []
    assert (created_count, len(created), orders.count()) == (KEYS, KEYS, KEYS)
    assert wrong == []
    assert conflicts == altered
    assert held == needed
    assert_invariants(placed=list(orders.values_list("pk", flat=True)))
