"""Resubmitting a place request under its ``client_order_id`` returns the original
order (200) whatever amends and fills did to it since: the request is compared by
the fingerprint stored at placement, not with the order's current fields. A
different body under the same id is still 409."""

import threading
from decimal import Decimal
from typing import Any

import pytest
from django.db import connections

from oms.models import Order, OrderRequest
from registry.models import Balance, JournalEntry
from tests.conftest import assert_trading_consistent, client_for, wait_for
from tests.oms.racing import PausedBatch
from tests.trading import match_now, place

D = Decimal
ORDERS = "/api/v1/orders"


def body_for(account: Any, **changes: str) -> dict[str, Any]:
    return {
        "account": account.pk,
        "symbol": "XSX:XS01",
        "side": "buy",
        "type": "limit",
        "time_in_force": "gtc",
        "price": "10.00",
        "quantity": "100",
        "client_order_id": "retry-1",
        **changes,
    }


def snapshot() -> dict[str, Any]:
    return {
        "orders": list(
            Order.objects.order_by("pk").values_list(
                "pk", "status", "quantity", "filled_quantity", "price", "held_amount"
            )
        ),
        "requests": OrderRequest.objects.count(),
        "entries": JournalEntry.objects.count(),
        "balances": list(
            Balance.objects.order_by("pk").values_list("pk", "available", "held")
        ),
    }


def resubmit(client: Any, body: dict[str, Any]):
    return client.post(ORDERS, body, format="json")


def placed(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    response = resubmit(client, body)
    assert response.status_code == 201, response.json()
    return response.json()


@pytest.mark.django_db
def test_a_retry_after_an_amend_returns_the_amended_original_order(
    bob_client, bob_account
):
    # given bob's order, amended by the worker from 100 at 10.00 to 60 at 9.50
    body = body_for(bob_account)
    first = placed(bob_client, body)
    match_now()
    amended = bob_client.patch(
        f"{ORDERS}/{first['id']}", {"quantity": "60", "price": "9.50"}, format="json"
    )
    assert amended.status_code == 202, amended.json()
    match_now()
    before = snapshot()

    # when he retries the original POST (also with other spellings of it)
    for retry in (body, {**body, "price": "10.0", "quantity": "100.000"}):
        response = resubmit(bob_client, retry)

        # then he gets the original order, as it is now, and nothing changed
        assert response.status_code == 200, response.json()
        assert response.json()["id"] == first["id"]
        assert (response.json()["quantity"], response.json()["price"]) == (
            "60",
            "9.50",
        )
    assert snapshot() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    "changes",
    [{"quantity": "60", "price": "9.50"}, {"quantity": "101"}, {"side": "sell"}],
    ids=["the amended terms", "another quantity", "another side"],
)
def test_a_different_body_after_an_amend_is_still_409(bob_client, bob_account, changes):
    first = placed(bob_client, body_for(bob_account))
    match_now()
    bob_client.patch(
        f"{ORDERS}/{first['id']}", {"quantity": "60", "price": "9.50"}, format="json"
    )
    match_now()
    before = snapshot()

    response = resubmit(bob_client, body_for(bob_account, **changes))

    assert response.status_code == 409, response.json()
    assert (response.json()["code"], response.json()["field"]) == (
        "duplicate_client_order_id",
        "client_order_id",
    )
    assert snapshot() == before


@pytest.mark.django_db
def test_a_retry_after_a_fill_returns_the_original_order(
    alice_client, alice_account, bob_client, bob_account
):
    body = body_for(bob_account)
    first = placed(bob_client, body)
    place(alice_client, alice_account, side="sell", price="10.00", quantity="40")
    match_now()
    before = snapshot()

    response = resubmit(bob_client, body)

    assert response.status_code == 200, response.json()
    assert (response.json()["id"], response.json()["filled_quantity"]) == (
        first["id"],
        "40",
    )
    assert snapshot() == before


@pytest.mark.django_db
def test_an_order_placed_before_fingerprints_is_compared_by_its_fields(
    bob_client, bob_account
):
    body = body_for(bob_account)
    first = placed(bob_client, body)
    Order.objects.filter(pk=first["id"]).update(request_fingerprint="")

    assert resubmit(bob_client, body).status_code == 200
    assert resubmit(bob_client, {**body, "quantity": "99"}).status_code == 409


@pytest.mark.django_db(transaction=True)
def test_a_retry_racing_the_batch_that_applies_an_amend_returns_the_original(
    monkeypatch, matcher, bob, bob_client, bob_account
):
    # given bob's resting order and his amend to 60, which the worker's batch has
    # applied but not yet committed
    body = body_for(bob_account)
    first = placed(bob_client, body)
    wait_for(lambda: Order.objects.get(pk=first["id"]).status == "working")
    paused = PausedBatch(
        monkeypatch,
        lambda batch: any(request.kind == "amend" for request in batch.requests),
    )
    amended = bob_client.patch(
        f"{ORDERS}/{first['id']}", {"quantity": "60"}, format="json"
    )
    assert amended.status_code == 202, amended.json()
    assert paused.paused.wait(10)

    # when the original POST is retried on another connection meanwhile, and
    # again once the batch has committed
    statuses: list[int] = []

    def retry() -> None:
        try:
            statuses.append(resubmit(client_for(bob), body).status_code)
        finally:
            connections.close_all()

    during = threading.Thread(target=retry)
    during.start()
    during.join(10)
    paused.release()
    wait_for(lambda: Order.objects.get(pk=first["id"]).quantity == D(60))
    after = threading.Thread(target=retry)
    after.start()
    after.join(10)

    # then both got the original order, and nothing was placed twice
    assert statuses == [200, 200]
    assert Order.objects.filter(client_order_id="retry-1").count() == 1
    assert list(OrderRequest.objects.order_by("pk").values_list("kind", flat=True)) == [
        "place",
        "amend",
    ]
    assert not OrderRequest.objects.filter(processed_at=None).exists()
    assert Balance.objects.get(account=bob_account, asset__code="AUD").held == D(
        "600.00"
    )
    assert_trading_consistent()
