"""Fixtures of the registry tests: a timed trading scenario.

``scenario`` is a timed scenario (time-machine; real order entry and the real
matching worker run synchronously in the test's transaction; maker 5 bps, taker
10 bps):

- T1: carol's account is opened and 5000.00 AUD deposited;
- T2: alice offers 100 XS01 @ 10.00 (it rests);
- T3: carol bids for 100 @ 10.00 (holds 1000.00 + the worst-case fee 1.00);
- T4: the matcher fills it: carol pays 1001.00 for 100 units (cost 1001.00);
- T5: carol offers 40 @ 12.00 (holds 40 units); bob bids for them at T5 too;
- T6: the matcher fills it: carol receives 480.00 - 0.24; her cost base falls by
  1001.00 x 40 / 100 = 400.40;
- T7: the test itself runs (the timeline is in the future of the fixtures').
"""

from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from exchange.models import Trade
from oms.models import Order
from tests import factories
from tests.conftest import client_for
from tests.trading import match_now, place, set_fees

US = timedelta(microseconds=1)


class Timeline:
    """The instants ``t[1]`` .. ``t[7]`` (an hour apart, from tomorrow) and what the
    scenario made: carol's account and client, the two trades, the orders."""

    def __init__(self) -> None:
        start = timezone.now().replace(microsecond=0) + timedelta(days=1)
        self.t = {n: start + timedelta(hours=n) for n in range(1, 8)}
        self.carol: Any = None
        self.carol_client: Any = None
        self.trades: list[Trade] = []
        self.orders: dict[str, Any] = {}

    def at(self, n: int) -> Any:
        return time_machine.travel(self.t[n], tick=False)


@pytest.fixture
def scenario(market, symbol, alice_client, alice_account, bob_client, bob_account):
    set_fees(market, maker_bps=5, taker_bps=10)
    line = Timeline()
    carol = factories.user("carol")
    with line.at(1):
        carol_account = factories.account(carol, cash="5000.00")
    carol_client = client_for(carol)
    with line.at(2):
        sell = place(
            alice_client, alice_account, side="sell", price="10.00", quantity="100"
        )
        match_now()
    with line.at(3):
        buy = place(
            carol_client, carol_account, side="buy", price="10.00", quantity="100"
        )
    with line.at(4):
        match_now()
    with line.at(5):
        carol_sell = place(
            carol_client, carol_account, side="sell", price="12.00", quantity="40"
        )
        match_now()
        bob_buy = place(
            bob_client, bob_account, side="buy", price="12.00", quantity="40"
        )
    with line.at(6):
        match_now()
    assert Order.objects.get(pk=bob_buy["id"]).status == "filled"
    line.carol = carol_account
    line.carol_client = carol_client
    line.trades = [
        Trade.objects.get(buy_order_id=buy["id"]),
        Trade.objects.get(buy_order_id=bob_buy["id"]),
    ]
    line.orders = {"alice_sell": sell, "carol_buy": buy, "carol_sell": carol_sell}
    with line.at(7):  # the test runs after the scenario
        yield line
