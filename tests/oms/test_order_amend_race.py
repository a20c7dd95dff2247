"""An amend racing the real matching worker: the worker's batch has filled part of
the order and holds its row lock, uncommitted, when the amend arrives on another
connection. The amend waits for the lock and is validated against the order and
market as that batch left them (filled quantity, last trade for the band); the
invariants hold afterwards and no request is lost or duplicated."""

import threading
from decimal import Decimal
from typing import Any

import pytest
from django.db import connections

from exchange.models import Market, Symbol
from oms.models import Order, OrderRequest
from oms.services import AmendSpec, OrderError, order_amend
from tests.conftest import assert_trading_consistent, wait_for
from tests.oms.racing import PausedBatch, lock_waiters
from tests.trading import place

pytestmark = pytest.mark.django_db(transaction=True)

D = Decimal


def amend_in_thread(user: Any, order_id: int, amend: AmendSpec) -> dict[str, Any]:
    """Start ``order_amend`` on its own connection; the dict gets its outcome."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            order_amend(user=user, order_id=order_id, amend=amend)
            outcome["result"] = "accepted"
        except OrderError as error:
            outcome["result"] = (error.status, error.code)
        finally:
            connections.close_all()

    outcome["thread"] = threading.Thread(target=run, daemon=True)
    outcome["thread"].start()
    return outcome


@pytest.mark.parametrize(
    ("amend", "expected"),
    [
        # refused by the limits, as the placement would be
        (AmendSpec(quantity=D(101)), (400, "quantity_above_maximum")),
        # the band is measured from the trade the paused batch made (at 10.00)
        (AmendSpec(price=D("11.01")), (422, "price_outside_band")),
        # the order still has 50: a no-op
        (AmendSpec(quantity=D(50)), (400, "nothing_to_amend")),
        # below the 20 the paused batch filled
        (AmendSpec(quantity=D(20)), (400, "quantity_below_filled")),
        (AmendSpec(quantity=D(30)), "accepted"),
    ],
)
def test_an_amend_arriving_while_a_batch_fills_the_order_sees_that_batch(
    monkeypatch,
    matcher,
    market,
    symbol,
    alice_client,
    alice_account,
    bob,
    bob_client,
    bob_account,
    amend,
    expected,
):
    # given a symbol limited to 100 per order in a market with a 10% band, and
    # bob's buy of 50 at 10.00 resting (no trade yet: no band)
    Symbol.objects.filter(pk=symbol.pk).update(max_quantity=D(100))
    Market.objects.filter(pk=market.pk).update(price_band_percent=D(10))
    buy = place(bob_client, bob_account, side="buy", price="10.00", quantity="50")
    wait_for(lambda: Order.objects.get(pk=buy["id"]).status == "working")
    paused = PausedBatch(
        monkeypatch,
        lambda batch: (
            buy["id"] in batch.states and batch.states[buy["id"]].order.filled_quantity
        ),
    )

    # when alice's sell of 20 fills part of it, and bob's amend arrives while the
    # worker's batch is still uncommitted
    place(alice_client, alice_account, side="sell", price="10.00", quantity="20")
    assert paused.paused.wait(10)
    outcome = amend_in_thread(bob, buy["id"], amend)
    wait_for(lambda: lock_waiters() >= 1)  # it waits for the order's row lock
    paused.release()
    outcome["thread"].join(10)
    assert not outcome["thread"].is_alive()

    # then the amend was judged on the filled order
    assert outcome["result"] == expected
    amends = OrderRequest.objects.filter(order_id=buy["id"], kind="amend")
    wait_for(lambda: not OrderRequest.objects.filter(processed_at=None).exists())
    order = Order.objects.get(pk=buy["id"])
    if expected == "accepted":
        assert list(amends.values_list("quantity", flat=True)) == [D(30)]
        # 10 left at 10.00 (no fees on this market)
        assert (order.quantity, order.filled_quantity, order.held_amount) == (
            D(30),
            D(20),
            D("100.00"),
        )
    else:
        assert not amends.exists()
        assert (order.quantity, order.filled_quantity, order.held_amount) == (
            D(50),
            D(20),
            D("300.00"),
        )
    assert (order.status, order.price) == ("partially_filled", D("10.00"))
    assert_trading_consistent()
