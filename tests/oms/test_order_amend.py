"""Amend goes through the checks a placement goes through (one validation path):
grid, minimum quantity, the symbol's limits, the static price band, the trading
state and the ledger's bound; each refusal has the placement's code and status and
changes nothing. An amend to what the order already has is ``nothing_to_amend``.

No matching worker runs unless a test says so: the amended orders are pending."""

from decimal import Decimal
from typing import Any

import pytest

from exchange.models import Market, Symbol
from exchange.services import market_set_state
from oms.models import Order, OrderEvent, OrderRequest
from registry.models import Balance, JournalEntry, Posting
from tests.trading import match_now, place

pytestmark = pytest.mark.django_db

D = Decimal
ORDERS = "/api/v1/orders"


def snapshot() -> dict[str, Any]:
    """Everything an amend may write."""
    return {
        "orders": list(
            Order.objects.order_by("pk").values_list(
                "pk", "status", "quantity", "price", "held_amount", "updated_at"
            )
        ),
        "events": OrderEvent.objects.count(),
        "requests": list(
            OrderRequest.objects.order_by("pk").values_list(
                "pk", "kind", "quantity", "price", "processed_at"
            )
        ),
        "entries": JournalEntry.objects.count(),
        "postings": Posting.objects.count(),
        "balances": list(
            Balance.objects.order_by("account_id", "asset_id").values_list(
                "account_id", "asset_id", "available", "held"
            )
        ),
    }


def amend(client, order: dict[str, Any], **body: str):
    return client.patch(f"{ORDERS}/{order['id']}", body, format="json")


def assert_refused(response, status: int, code: str, field: str | None) -> None:
    assert response.status_code == status, response.json()
    body = response.json()
    assert (body["code"], body.get("field")) == (code, field), body
    assert body["message"]


def set_limits(symbol: Symbol, **limits: object) -> None:
    Symbol.objects.filter(pk=symbol.pk).update(**limits)


@pytest.mark.parametrize(
    ("limits", "change", "status", "code"),
    [
        ({"max_quantity": D(100)}, {"quantity": "101"}, 400, "quantity_above_maximum"),
        ({"min_quantity": D(10)}, {"quantity": "5"}, 400, "quantity_below_minimum"),
        ({"max_value": D(500)}, {"quantity": "51"}, 422, "value_above_maximum"),
        ({"max_value": D(500)}, {"price": "10.01"}, 422, "value_above_maximum"),
        ({"min_value": D(300)}, {"quantity": "29"}, 422, "value_below_minimum"),
        ({"min_value": D(300)}, {"price": "5.99"}, 422, "value_below_minimum"),
        (
            {},
            {"price": "100000000000.00", "quantity": "10000000"},
            422,
            "order_too_large",
        ),
    ],
)
def test_an_amend_past_a_limit_is_refused_like_a_placement_and_changes_nothing(
    bob_client, bob_account, symbol, limits, change, status, code
):
    # given bob's buy of 50 at 10.00 (value 500.00), then the symbol's limits
    order = place(bob_client, bob_account, side="buy", price="10.00", quantity="50")
    set_limits(symbol, **limits)
    before = snapshot()

    # when he amends it past a limit, then it is refused and nothing changed
    assert_refused(amend(bob_client, order, **change), status, code, "quantity")
    assert snapshot() == before

    # and a new order with the amended terms is refused the same way
    terms = {"price": "10.00", "quantity": "50", **change}
    response = bob_client.post(
        ORDERS,
        {
            "account": bob_account.pk,
            "symbol": "XSX:XS01",
            "side": "buy",
            "type": "limit",
            **terms,
        },
        format="json",
    )
    assert_refused(response, status, code, "quantity")
    assert snapshot() == before


def test_an_amend_within_the_limits_is_accepted(bob_client, bob_account, symbol):
    order = place(bob_client, bob_account, side="buy", price="10.00", quantity="50")
    set_limits(symbol, max_quantity=D(100), max_value=D(1000), min_value=D(50))

    response = amend(bob_client, order, quantity="100")

    assert response.status_code == 202, response.json()
    request = OrderRequest.objects.get(order_id=order["id"], kind="amend")
    assert (request.quantity, request.price) == (D(100), None)
    assert Order.objects.get(pk=order["id"]).held_amount == D("1000.00")


@pytest.fixture
def banded_market(market, symbol, alice_client, alice_account, bob_client, bob_account):
    """A 10% band around the last trade at 10.00 (a real cross)."""
    place(alice_client, alice_account, side="sell", price="10.00", quantity="1")
    place(bob_client, bob_account, side="buy", price="10.00", quantity="1")
    match_now()
    Market.objects.filter(pk=market.pk).update(price_band_percent=D(10))
    return market


@pytest.mark.parametrize("price", ["8.99", "11.01"])
def test_an_amend_to_a_price_outside_the_band_is_refused_like_a_placement(
    banded_market, bob_client, bob_account, price
):
    order = place(bob_client, bob_account, side="buy", price="9.50", quantity="10")
    before = snapshot()

    response = amend(bob_client, order, price=price)

    assert_refused(response, 422, "price_outside_band", "price")
    assert response.json()["message"] == (
        "The price must be from 9.00 to 11.00 (10% around the reference price 10.00)."
    )
    assert snapshot() == before
    placed = bob_client.post(
        ORDERS,
        {
            "account": bob_account.pk,
            "symbol": "XSX:XS01",
            "side": "buy",
            "price": price,
            "quantity": "10",
        },
        format="json",
    )
    assert_refused(placed, 422, "price_outside_band", "price")
    assert snapshot() == before


def test_an_amend_of_the_quantity_alone_is_not_held_to_a_band_that_moved(
    banded_market, bob_client, bob_account
):
    # the order's price was inside the band when placed; the band moved away since
    order = place(bob_client, bob_account, side="buy", price="9.50", quantity="10")
    Market.objects.filter(pk=banded_market.pk).update(price_band_percent=D(1))

    response = amend(bob_client, order, quantity="5")

    assert response.status_code == 202, response.json()


def test_an_amend_while_the_market_is_halted_is_refused_like_a_placement(
    market, bob_client, bob_account
):
    order = place(bob_client, bob_account, side="buy", price="10.00", quantity="10")
    market_set_state(market=market, action="halt", acting_user=None, reason="news")
    before = snapshot()

    assert_refused(amend(bob_client, order, quantity="5"), 422, "market_halted", None)
    assert snapshot() == before


def test_an_amend_off_the_lot_grid_is_refused(bob_client, bob_account, market):
    from tests import factories

    factories.symbol(market, "XS02", lot_size=D(10), min_quantity=D(100))
    order = place(
        bob_client,
        bob_account,
        symbol="XSX:XS02",
        side="buy",
        price="1.00",
        quantity="200",
    )
    before = snapshot()

    assert_refused(
        amend(bob_client, order, quantity="205"), 400, "quantity_off_lot", "quantity"
    )
    assert_refused(
        amend(bob_client, order, quantity="90"),
        400,
        "quantity_below_minimum",
        "quantity",
    )
    assert snapshot() == before


# -- nothing to amend -------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"price": "10.00"}, "price"),
        ({"quantity": "10"}, "quantity"),
        ({"price": "10.0", "quantity": "10.000"}, "quantity"),
    ],
)
def test_an_amend_to_what_the_order_already_has_is_nothing_to_amend(
    bob_client, bob_account, change, field
):
    order = place(bob_client, bob_account, side="buy", price="10.00", quantity="10")
    before = snapshot()

    response = amend(bob_client, order, **change)

    assert_refused(response, 400, "nothing_to_amend", field)
    assert snapshot() == before


def test_an_amend_that_changes_one_of_two_fields_is_accepted(bob_client, bob_account):
    order = place(bob_client, bob_account, side="buy", price="10.00", quantity="10")

    response = amend(bob_client, order, price="10.00", quantity="8")

    assert response.status_code == 202, response.json()
    request = OrderRequest.objects.get(order_id=order["id"], kind="amend")
    assert (request.quantity, request.price) == (D(8), None)


def test_amending_back_while_an_amend_waits_is_not_nothing_to_amend(
    bob_client, bob_account
):
    # the worker has not applied the first amend: the second undoes it
    order = place(bob_client, bob_account, side="buy", price="10.00", quantity="10")
    assert amend(bob_client, order, quantity="8").status_code == 202

    response = amend(bob_client, order, quantity="10")

    assert response.status_code == 202, response.json()
    assert list(
        OrderRequest.objects.filter(order_id=order["id"], kind="amend").values_list(
            "quantity", flat=True
        )
    ) == [D(8), D(10)]


def test_amending_the_price_back_while_an_amend_waits_ends_at_the_last_price(
    bob_client, bob_account
):
    # given a resting buy at 10.00 whose amend to 10.02 the worker has not applied
    order = place(bob_client, bob_account, side="buy", price="10.00", quantity="10")
    match_now()
    assert amend(bob_client, order, price="10.02").status_code == 202

    # when the client moves it back to 10.00 before the worker runs, then it runs
    assert amend(bob_client, order, price="10.00").status_code == 202
    match_now()

    # then the order rests at the last price asked for, holding exactly that
    stored = Order.objects.get(pk=order["id"])
    assert (stored.status, stored.price, stored.held_amount) == (
        "working",
        D("10.00"),
        D("100.00"),
    )
    assert list(
        OrderRequest.objects.filter(order_id=order["id"], kind="amend").values_list(
            "price", flat=True
        )
    ) == [D("10.02"), D("10.00")]
