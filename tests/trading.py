"""Helpers for tests that trade: place orders by REST and match them, either with a
running matcher thread (``transaction=True`` tests) or synchronously in the test's
own transaction (``match_now``: deterministic, works under time-machine)."""

from decimal import Decimal
from typing import Any

from exchange.matching import MatchingWorker
from exchange.models import Market, Trade
from oms.models import Order
from tests.conftest import wait_for


def place(client: Any, account: Any, **body: Any) -> dict[str, Any]:
    """POST a GTC limit order for XSX:XS01; returns the order (asserts 201)."""
    body = {
        "account": account.pk,
        "symbol": "XSX:XS01",
        "type": "limit",
        "time_in_force": "gtc",
        **body,
    }
    response = client.post("/api/v1/orders", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def match_now(market_code: str = "XSX") -> int:
    """Run the market's matching worker over its inbox in this thread and
    transaction; returns the number of requests processed."""
    worker = MatchingWorker(market_code)
    worker.rebuild()
    processed = 0
    while count := worker.process_batch():
        processed += count
    return processed


def set_fees(market: Market, *, maker_bps: int, taker_bps: int) -> None:
    Market.objects.filter(pk=market.pk).update(
        maker_fee_bps=Decimal(maker_bps), taker_fee_bps=Decimal(taker_bps)
    )


def cross(
    seller: tuple[Any, Any],
    buyer: tuple[Any, Any],
    *,
    price: str,
    quantity: str,
    matcher: bool = True,
) -> Trade:
    """A resting sell from ``seller`` (client, account), then a buy from ``buyer``
    taking it whole: the buyer is the aggressor (taker). Returns the trade."""
    sell = place(seller[0], seller[1], side="sell", price=price, quantity=quantity)
    if matcher:
        wait_for(lambda: Order.objects.get(pk=sell["id"]).status == "working")
    else:
        match_now()
    buy = place(buyer[0], buyer[1], side="buy", price=price, quantity=quantity)
    if matcher:
        wait_for(lambda: Order.objects.get(pk=buy["id"]).status == "filled")
    else:
        match_now()
    return Trade.objects.get(buy_order_id=buy["id"])
