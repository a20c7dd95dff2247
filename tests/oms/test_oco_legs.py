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


def _held(account, asset) -> tuple[Decimal, Decimal]:
    balance = balance_of(account, asset)
    return balance.held, balance.available


def _pair(user, account, *, take_profit: str, stop_loss: str) -> tuple[Order, Order]:
    """A take-profit sell at 11.00 and a stop-loss sell at 9.00, paired."""
    first = _sell(user, account, price="11.00", quantity=take_profit)
    second = _sell(
        user,
        account,
        type="stop",
        stop_price="9.00",
        quantity=stop_loss,
        oco_with=first.pk,
    )
    return first, second


def test_a_pair_selling_on_one_side_holds_what_its_larger_leg_needs(
    symbol, alice, alice_account
):
    # when alice pairs a take-profit of 5 with a stop-loss of 5, then of 3 with 4
    _pair(alice, alice_account, take_profit="5", stop_loss="5")
    match_now()
    # then each pair holds its larger leg's need: 5, then 4
    assert _held(alice_account, symbol.asset) == (Decimal(5), Decimal(995))
    _pair(alice, alice_account, take_profit="3", stop_loss="4")
    match_now()
    assert _held(alice_account, symbol.asset) == (Decimal(9), Decimal(991))
    assert_trading_consistent()


def test_a_fill_of_one_leg_releases_the_other_legs_share_exactly(
    symbol, alice, alice_account, bob_client, bob_account
):
    # given a pair holding 6 (take-profit 4, stop-loss 6)
    take_profit, stop = _pair(alice, alice_account, take_profit="4", stop_loss="6")
    match_now()
    assert _held(alice_account, symbol.asset) == (Decimal(6), Decimal(994))

    # when bob takes 3 of the take-profit
    place(bob_client, bob_account, side="buy", price="11.00", quantity="3")
    match_now()

    # then the stop-loss is cancelled and the pair holds the take-profit's last 1
    assert Order.objects.get(pk=stop.pk).status_reason == "oco"
    assert Order.objects.get(pk=take_profit.pk).held_amount == Decimal(1)
    assert _held(alice_account, symbol.asset) == (Decimal(1), Decimal(996))
    assert_trading_consistent()


def test_cancelling_one_leg_alone_leaves_the_other_holding_exactly_its_own_need(
    market, symbol, alice, alice_account
):
    from exchange.services import market_state_set
    from oms.services import order_cancel_queue
    from tests import factories

    # given a pair queued while the market was open, not matched before it closed
    take_profit, stop = _pair(alice, alice_account, take_profit="5", stop_loss="3")
    staff = factories.user("staff", is_staff=True)
    market_state_set(market=market, state="closed", acting_user=staff, reason="x")
    assert _held(alice_account, symbol.asset) == (Decimal(5), Decimal(995))

    # when the take-profit alone is cancelled
    order_cancel_queue(order_id=take_profit.pk, acting_user=alice)
    match_now()

    # then the stop-loss holds exactly its own 3
    assert Order.objects.get(pk=take_profit.pk).status == "cancelled"
    stop = Order.objects.get(pk=stop.pk)
    assert (stop.status, stop.held_amount) == ("pending", Decimal(3))
    assert _held(alice_account, symbol.asset) == (Decimal(3), Decimal(997))
    assert_trading_consistent()


def test_an_amended_leg_keeps_the_pairs_hold_at_its_larger_need(
    symbol, alice, alice_account
):
    from oms.services import AmendSpec, order_amend

    # given a pair holding 5 (take-profit 5, stop-loss 5)
    take_profit, stop = _pair(alice, alice_account, take_profit="5", stop_loss="5")
    match_now()

    # when the take-profit grows to 8
    order_amend(user=alice, order_id=take_profit.pk, amend=AmendSpec(quantity=D(8)))
    match_now()
    # then the pair holds 8 ...
    assert _held(alice_account, symbol.asset) == (Decimal(8), Decimal(992))
    # ... and once it shrinks to 2, the stop-loss's 5
    order_amend(user=alice, order_id=take_profit.pk, amend=AmendSpec(quantity=D(2)))
    match_now()
    assert Order.objects.get(pk=take_profit.pk).quantity == Decimal(2)
    assert Order.objects.get(pk=stop.pk).status == "waiting"
    assert _held(alice_account, symbol.asset) == (Decimal(5), Decimal(995))
    assert_trading_consistent()


def test_legs_on_opposite_sides_keep_separate_holds(symbol, alice, alice_account):
    # when alice pairs a sell of 5 at 11.00 with a buy of 4 at 9.00
    sell = _sell(alice, alice_account, price="11.00", quantity="5")
    spec = OrderSpec(
        account_id=alice_account.pk,
        symbol="XSX:XS01",
        side="buy",
        type="limit",
        time_in_force="gtc",
        price=D("9.00"),
        quantity=D(4),
        oco_with=sell.pk,
    )
    order_place(user=alice, spec=spec)
    match_now()

    # then each holds its own: 5 shares and 36.00 cash
    assert _held(alice_account, symbol.asset) == (Decimal(5), Decimal(995))
    assert _held(alice_account, symbol.currency) == (
        Decimal("36.00"),
        Decimal("9964.00"),
    )
    assert_trading_consistent()


D = Decimal


def test_a_leg_amended_while_a_batch_fills_it_keeps_the_pairs_hold_exact(
    monkeypatch,
    matcher,
    symbol,
    alice,
    alice_client,
    alice_account,
    bob_client,
    bob_account,
):
    shares = symbol.asset
    # given a resting take-profit of 5 at 11.00 paired with a parked stop-loss of 5
    take_profit, stop = _pair(alice, alice_account, take_profit="5", stop_loss="5")
    wait_for(lambda: Order.objects.get(pk=stop.pk).status == "waiting")
    assert _held(alice_account, shares) == (Decimal(5), Decimal(995))

    # when bob's buy of 3 is matched by a batch that pauses before it locks the
    # pair, and alice grows the take-profit to 8 meanwhile (holding 3 more) ...
    pause = PauseBeforeMakers().install(monkeypatch)
    place(bob_client, bob_account, side="buy", price="11.00", quantity="3")
    assert pause.paused.wait(20)
    amend = alice_client.patch(
        f"/api/v1/orders/{take_profit.pk}", {"quantity": "8"}, format="json"
    )
    assert amend.status_code == 202, amend.json()
    assert _held(alice_account, shares) == (Decimal(8), Decimal(992))
    pause.resume.set()
    wait_for(_inbox_empty)

    # then the stop-loss is cancelled, and the take-profit holds its 5 left
    assert Order.objects.get(pk=stop.pk).status_reason == "oco"
    take_profit = Order.objects.get(pk=take_profit.pk)
    assert (take_profit.quantity, take_profit.filled_quantity) == (D(8), D(3))
    assert take_profit.held_amount == Decimal(5)
    assert _held(alice_account, shares) == (Decimal(5), Decimal(992))

    # and a fill of the rest succeeds
    place(bob_client, bob_account, side="buy", price="11.00", quantity="5")
    wait_for(lambda: Order.objects.get(pk=take_profit.pk).status == "filled")
    assert _held(alice_account, shares) == (Decimal(0), Decimal(992))
    assert_trading_consistent()
