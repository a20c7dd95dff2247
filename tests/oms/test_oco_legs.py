"""OCO pairs: a leg whose partner ended first never executes (at entry and at a
rebuild), and a pair on one side holds what its larger leg needs."""

from decimal import Decimal

import pytest
from django.db import transaction

from oms.models import Order, OrderEvent, OrderRequest
from oms.services import OrderSpec, default_time_in_force, order_place
from registry.ledger import LedgerBatch, Line
from registry.models import Bucket, JournalEntry
from tests.conftest import (
    MatcherThread,
    assert_trading_consistent,
    balance_of,
    wait_for,
)
from tests.exchange.pausing import PauseBeforeMakers
from tests.trading import match_now, place

pytestmark = pytest.mark.django_db(transaction=True)


def _inbox_empty() -> bool:
    return not OrderRequest.objects.filter(processed_at__isnull=True).exists()


def _sell(user, account, **fields) -> Order:
    fields = {
        "account_id": account.pk,
        "symbol": "XSX:XS01",
        "side": "sell",
        "type": "limit",
        **fields,
    }
    fields.setdefault("time_in_force", default_time_in_force(fields["type"]))
    for name in ("price", "stop_price", "quantity"):
        if name in fields:
            fields[name] = Decimal(fields[name])
    return order_place(user=user, spec=OrderSpec(**fields)).order


def test_a_leg_placed_while_its_partner_is_being_filled_is_cancelled_not_entered(
    monkeypatch, matcher, symbol, alice, alice_account, bob_client, bob_account
):
    shares = symbol.asset
    # given bob's resting buy of 5 at 10.00
    buy = place(bob_client, bob_account, side="buy", price="10.00", quantity="5")
    wait_for(lambda: Order.objects.get(pk=buy["id"]).status == "working")
    # when alice's IOC sell of 5 at 10.00 is taken by a batch that pauses before
    # it locks it ...
    pause = PauseBeforeMakers(before_lock=1).install(monkeypatch)
    first = _sell(
        alice, alice_account, price="10.00", quantity="5", time_in_force="ioc"
    )
    assert pause.paused.wait(20)
    # ... and her stop-loss leg pairing with it commits meanwhile
    stop = _sell(
        alice,
        alice_account,
        type="stop",
        stop_price="9.00",
        quantity="5",
        oco_with=first.pk,
    )
    pause.resume.set()
    wait_for(_inbox_empty)

    # then the first leg filled and the stop-loss never reached the book
    assert Order.objects.get(pk=first.pk).status == "filled"
    stop = Order.objects.get(pk=stop.pk)
    assert (stop.status, stop.status_reason, stop.held_amount) == (
        "cancelled",
        "oco",
        Decimal(0),
    )
    assert list(
        OrderEvent.objects.filter(order=stop).values_list("to_status", "reason")
    ) == [("pending", ""), ("cancelled", "oco")]
    assert balance_of(alice_account, shares).held == 0
    assert balance_of(alice_account, shares).available == Decimal(995)
    assert_trading_consistent()


def test_a_rebuild_cancels_a_live_leg_whose_partner_ended(symbol, alice, alice_account):
    shares = symbol.asset
    # given a take-profit and a stop-loss selling 5 each, both live ...
    take_profit = _sell(alice, alice_account, price="11.00", quantity="5")
    stop = _sell(
        alice,
        alice_account,
        type="stop",
        stop_price="9.00",
        quantity="5",
        oco_with=take_profit.pk,
    )
    match_now()
    assert Order.objects.get(pk=stop.pk).status == "waiting"
    # ... and stored data in which the take-profit ended without its partner (as
    # an earlier version could leave it): cancelled, its own hold released
    _end_without_the_engine(Order.objects.get(pk=take_profit.pk))

    # when a worker rebuilds the market
    runner = MatcherThread("XSX").start()
    try:
        wait_for(lambda: Order.objects.get(pk=stop.pk).status == "cancelled")
    finally:
        runner.stop()

    # then the stop-loss is cancelled as the partner of an ended leg
    stop = Order.objects.get(pk=stop.pk)
    assert (stop.status_reason, stop.held_amount) == ("oco", Decimal(0))
    assert balance_of(alice_account, shares).held == 0
    assert balance_of(alice_account, shares).available == Decimal(1000)
    assert_trading_consistent()


def _end_without_the_engine(order: Order) -> None:
    """Cancel ``order`` in the database only, releasing exactly its hold."""
    key = (order.account_id, order.held_asset_id)
    with transaction.atomic():
        ledger = LedgerBatch([key])
        ledger.post(
            kind=JournalEntry.Kind.RELEASE,
            lines=[
                Line(*key, Bucket.HELD, -order.held_amount),
                Line(*key, Bucket.AVAILABLE, order.held_amount),
            ],
            reference=f"order:{order.pk}",
        )
        ledger.flush()
        Order.objects.filter(pk=order.pk).update(
            status="cancelled", status_reason="requested", held_amount=0
        )
