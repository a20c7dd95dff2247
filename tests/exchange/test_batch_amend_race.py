"""An amend committing while a matching batch runs (real worker, two connections)."""

from decimal import Decimal

import pytest

from oms.models import Order, OrderRequest
from tests.conftest import (
    assert_trading_consistent,
    balance_of,
    wait_for,
)
from tests.exchange.pausing import PauseBeforeMakers
from tests.trading import place

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_amend_committed_mid_batch_keeps_its_hold_and_a_fill_at_the_new_price_succeeds(
    monkeypatch, matcher, symbol, alice_client, bob_client, alice_account, bob_account
):
    aud = symbol.currency
    # given alice's buy of 10 resting at 10.00 (holds 100.00)
    buy = place(alice_client, alice_account, side="buy", price="10.00", quantity="10")
    wait_for(lambda: Order.objects.get(pk=buy["id"]).status == "working")

    # when bob's sell of 5 at 9.00 is matched by a batch that pauses after locking
    # bob's order (and reading the inbox) and before it locks alice's ...
    pause = PauseBeforeMakers().install(monkeypatch)
    sell = _sell(bob_client, bob_account, "9.00", "5")
    assert pause.paused.wait(20)
    # ... alice amends her buy to 11.00 on another connection and commits (the
    # hold rises to 110.00) ...
    amend = alice_client.patch(
        f"/api/v1/orders/{buy['id']}", {"price": "11.00"}, format="json"
    )
    assert amend.status_code == 202, amend.json()
    assert balance_of(alice_account, aud).held == Decimal("110.00")
    pause.resume.set()

    # ... the batch fills 5 at 10.00 and a later batch applies the amend
    wait_for(lambda: Order.objects.get(pk=sell["id"]).status == "filled")
    wait_for(
        lambda: not OrderRequest.objects.filter(processed_at__isnull=True).exists()
    )
    order = Order.objects.get(pk=buy["id"])
    assert (order.price, order.filled_quantity, order.held_amount) == (
        Decimal("11.00"),
        Decimal(5),
        Decimal("55.00"),
    )
    assert balance_of(alice_account, aud).held == Decimal("55.00")
    assert balance_of(alice_account, aud).available == Decimal("9895.00")

    # then a fill at the new price succeeds and the market goes on
    second = _sell(bob_client, bob_account, "11.00", "5")
    wait_for(lambda: Order.objects.get(pk=second["id"]).status == "filled")
    assert Order.objects.get(pk=buy["id"]).status == "filled"
    assert balance_of(alice_account, aud).held == 0
    assert balance_of(alice_account, aud).available == Decimal("9895.00")
    assert balance_of(bob_account, aud).available == Decimal("10105.00")
    assert_trading_consistent()


def _sell(client, account, price: str, quantity: str) -> dict:
    return place(client, account, side="sell", price=price, quantity=quantity)
