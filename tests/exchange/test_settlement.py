"""Settlement cycles on real trades: T+n dates, unsettled buckets, settlement_run
exactly once (also when run twice at the same time), trading unsettled proceeds."""

import threading
from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connections, transaction
from django.urls import reverse

from exchange.fees import fee_schedule_save
from exchange.models import FeeSchedule, Holiday, StreamSequence, Trade
from exchange.settlement import settlement_run
from exchange.tasks import settlement_run_task
from oms.models import Order
from registry.models import AuditRecord, JournalEntry
from tests import factories
from tests.conftest import (
    assert_ledger_balanced,
    assert_trading_consistent,
    balance_of,
    client_for,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)

#: Thursday 12 March 2026, 10:00 in Sydney (still Wednesday in UTC).
THURSDAY = datetime(2026, 3, 11, 23, 0, tzinfo=UTC)
HOLIDAY = date(2026, 3, 13)  # the Friday after it
TUESDAY = date(2026, 3, 17)  # T+2: Friday holiday, weekend, Monday (1), Tuesday (2)


@pytest.fixture
def t2_market(market):
    market.settlement_days = 2
    market.save(update_fields=["settlement_days"])
    Holiday.objects.create(market=market, date=HOLIDAY, name="Test holiday")
    return market


def place(client, account, **body):
    body = {"account": account.pk, "symbol": "XSX:XS01", "time_in_force": "gtc", **body}
    response = client.post("/api/v1/orders", body, format="json")
    assert response.status_code == 201, response.json()
    return Order.objects.get(pk=response.json()["id"])


def status_of(order, *statuses):
    wait_for(lambda: Order.objects.get(pk=order.pk).status in statuses)
    return Order.objects.get(pk=order.pk)


def cross(seller_client, seller, buyer_client, buyer, price, quantity):
    """A resting sell taken by a buy; returns the trade."""
    count = Trade.objects.count()
    sell = place(
        seller_client, seller, side="sell", price=price, quantity=str(quantity)
    )
    status_of(sell, "working")
    buy = place(buyer_client, buyer, side="buy", price=price, quantity=str(quantity))
    status_of(buy, "filled")
    wait_for(lambda: Trade.objects.count() == count + 1)
    return Trade.objects.order_by("-pk").first()


def buckets(account, asset):
    balance = balance_of(account, asset)
    return (balance.available, balance.held, balance.unsettled)


def settle_entries(trade):
    return [
        sorted(
            (p.account_id, p.asset.code, p.bucket, p.amount)
            for p in entry.postings.select_related("asset")
        )
        for entry in JournalEntry.objects.filter(
            kind="settle", reference=f"trade:{trade.pk}"
        )
    ]


def test_a_t2_trade_on_the_thursday_before_a_friday_holiday_settles_on_tuesday(
    matcher, t2_market, symbol, alice_client, bob_client, alice_account, bob_account
):
    fee_schedule_save(
        schedule=FeeSchedule(
            market=t2_market, maker_fee_bps=Decimal(5), taker_fee_bps=Decimal(10)
        ),
        acting_user=None,
    )
    aud, xs01 = symbol.currency, symbol.asset
    with time_machine.travel(THURSDAY, tick=True):
        trade = cross(
            alice_client, alice_account, bob_client, bob_account, "10.00", 100
        )

    # the trade's date is Thursday in Sydney; two business days on is Tuesday
    assert trade.settlement_date == TUESDAY
    assert trade.settled_at is None
    # the seller's proceeds (1000.00 - 0.50 maker fee) and the bought shares wait
    assert buckets(alice_account, aud) == (
        Decimal("10000.00"),
        Decimal(0),
        Decimal("999.50"),
    )
    assert buckets(alice_account, xs01) == (Decimal(900), Decimal(0), Decimal(0))
    assert buckets(bob_account, aud) == (Decimal("8999.00"), Decimal(0), Decimal(0))
    assert buckets(bob_account, xs01) == (Decimal(1000), Decimal(0), Decimal(100))
    assert_trading_consistent()

    # nothing is due on the Monday, in Sydney, even late in the evening
    with time_machine.travel(datetime(2026, 3, 16, 12, 59, tzinfo=UTC), tick=True):
        assert settlement_run().settled == []
    topics = [f"balances.acct.{alice_account.pk}", f"holdings.acct.{bob_account.pk}"]
    sequences = dict(
        StreamSequence.objects.filter(topic__in=topics).values_list("topic", "seq")
    )
    # from midnight on Tuesday in Sydney it settles, once
    with time_machine.travel(datetime(2026, 3, 16, 13, 0, tzinfo=UTC), tick=True):
        assert settlement_run().settled == [trade.pk]
        assert settlement_run().settled == []

    assert settle_entries(trade) == [
        sorted(
            [
                (alice_account.pk, "AUD", "unsettled", Decimal("-999.50")),
                (alice_account.pk, "AUD", "available", Decimal("999.50")),
                (bob_account.pk, "XSX:XS01", "unsettled", Decimal(-100)),
                (bob_account.pk, "XSX:XS01", "available", Decimal(100)),
            ]
        )
    ]
    trade.refresh_from_db()
    assert trade.settled_at is not None
    assert buckets(alice_account, aud) == (Decimal("10999.50"), 0, 0)
    assert buckets(bob_account, xs01) == (Decimal(1100), 0, 0)
    # the new balances were published on the owners' private streams
    assert {
        topic: seq
        for topic, seq in StreamSequence.objects.filter(topic__in=topics).values_list(
            "topic", "seq"
        )
    } == {topic: sequences[topic] + 1 for topic in topics}
    assert_trading_consistent()


def test_a_t0_market_settles_at_the_trade(
    matcher, market, symbol, alice_client, bob_client, alice_account, bob_account
):
    with time_machine.travel(THURSDAY, tick=True):
        trade = cross(alice_client, alice_account, bob_client, bob_account, "10.00", 5)

    assert (trade.settlement_date, trade.settled_at) == (
        date(2026, 3, 12),
        trade.executed_at,
    )
    assert buckets(alice_account, symbol.currency) == (Decimal("10050.00"), 0, 0)
    assert buckets(bob_account, symbol.asset) == (Decimal(1005), 0, 0)
    assert settlement_run(as_of=date(2030, 1, 1)).settled == []


def test_unsettled_holdings_cannot_be_sold_until_they_settle(
    matcher, t2_market, symbol, alice_client, alice_account, alice, bob
):
    carol = factories.account(bob, cash="1000.00")
    carol_client = client_for(bob)
    trade = cross(alice_client, alice_account, carol_client, carol, "10.00", 10)

    response = carol_client.post(
        "/api/v1/orders",
        {
            "account": carol.pk,
            "symbol": "XSX:XS01",
            "side": "sell",
            "price": "10.00",
            "quantity": "10",
        },
        format="json",
    )
    assert (response.status_code, response.json()["code"]) == (
        422,
        "insufficient_holdings",
    )

    settlement_run(as_of=trade.settlement_date)
    sell = place(carol_client, carol, side="sell", price="10.00", quantity="10")
    assert status_of(sell, "working").held_amount == Decimal(10)
    assert_trading_consistent()


def test_two_settlement_runs_at_once_settle_each_trade_exactly_once(
    matcher, t2_market, symbol, alice_client, bob_client, alice_account, bob_account
):
    # given six unsettled trades: alice sells 10, 20 .. 60 at 10.00
    trades = [
        cross(alice_client, alice_account, bob_client, bob_account, "10.00", n * 10)
        for n in range(1, 7)
    ]
    matcher.stop()
    due = max(t.settlement_date for t in trades)
    barrier = threading.Barrier(2)
    results, errors = {}, []

    def run(name):
        try:
            barrier.wait(10)
            results[name] = settlement_run(as_of=due)
        except Exception as error:  # reported by the main thread
            errors.append(error)
        finally:
            connections.close_all()

    # when two runs start together on two connections
    threads = [threading.Thread(target=run, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    # then every trade was settled by exactly one of them
    assert errors == []
    settled = results["a"].settled + results["b"].settled
    assert sorted(settled) == sorted(t.pk for t in trades)
    assert results["a"].failed == results["b"].failed == []
    references = Counter(
        JournalEntry.objects.filter(kind="settle").values_list("reference", flat=True)
    )
    assert references == Counter({f"trade:{t.pk}": 1 for t in trades})
    aud, xs01 = symbol.currency, symbol.asset
    # 210 shares at 10.00: 2100.00 to alice, 210 shares to bob, all settled
    assert buckets(alice_account, aud) == (Decimal("12100.00"), 0, 0)
    assert buckets(bob_account, xs01) == (Decimal(1210), 0, 0)
    assert not Trade.objects.filter(settled_at__isnull=True).exists()
    assert settlement_run(as_of=due).settled == []
    assert_trading_consistent()


def test_a_run_skips_a_trade_another_run_is_settling(
    matcher, t2_market, symbol, alice_client, bob_client, alice_account, bob_account
):
    first = cross(alice_client, alice_account, bob_client, bob_account, "10.00", 1)
    second = cross(alice_client, alice_account, bob_client, bob_account, "10.00", 2)
    locked, release = threading.Event(), threading.Event()

    def hold_first_trade():
        # another settlement transaction holding the first trade's row lock
        try:
            with transaction.atomic():
                Trade.objects.select_for_update().get(pk=first.pk)
                locked.set()
                release.wait(20)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_first_trade)
    holder.start()
    assert locked.wait(10)
    try:
        assert settlement_run(as_of=first.settlement_date).settled == [second.pk]
    finally:
        release.set()
        holder.join(20)
    assert settlement_run(as_of=first.settlement_date).settled == [first.pk]
    assert JournalEntry.objects.filter(kind="settle").count() == 2
    assert_ledger_balanced()


def test_without_the_setting_unsettled_proceeds_do_not_buy(
    matcher, t2_market, symbol, alice, bob, bob_account, bob_client
):
    dave = factories.account(alice, holdings={symbol: "100"})
    dave_client = client_for(alice)
    cross(dave_client, dave, bob_client, bob_account, "10.00", 100)
    assert buckets(dave, symbol.currency) == (0, 0, Decimal("1000.00"))

    response = dave_client.post(
        "/api/v1/orders",
        {
            "account": dave.pk,
            "symbol": "XSX:XS01",
            "side": "buy",
            "price": "10.00",
            "quantity": "50",
        },
        format="json",
    )
    assert response.json() == {
        "code": "insufficient_funds",
        "message": "500 AUD needed, 0 available.",
    }


def test_with_the_setting_a_buy_draws_on_unsettled_cash_and_settlement_stays_exact(
    matcher, t2_market, symbol, alice, bob, alice_client, alice_account, bob_account
):
    aud = symbol.currency
    dave = factories.account(bob, cash="100.00", holdings={symbol: "100"})
    dave.trade_unsettled_proceeds = True
    dave.save(update_fields=["trade_unsettled_proceeds"])
    dave_client = client_for(bob)
    sale = cross(dave_client, dave, alice_client, alice_account, "10.00", 100)
    assert buckets(dave, aud) == (Decimal("100.00"), 0, Decimal("1000.00"))

    # a buy of 450.00 holds the 100.00 available first, then 350.00 unsettled
    buy = place(dave_client, dave, side="buy", price="9.00", quantity="50")
    buy = status_of(buy, "working")
    assert (buy.held_amount, buy.held_unsettled) == (Decimal("450.00"), Decimal(350))
    assert buckets(dave, aud) == (0, Decimal("450.00"), Decimal("650.00"))

    # cancelled: the unsettled part goes back to unsettled, not to available
    dave_client.delete(f"/api/v1/orders/{buy.pk}")
    status_of(buy, "cancelled")
    assert buckets(dave, aud) == (Decimal("100.00"), 0, Decimal("1000.00"))

    # a buy of 600.00 that fills spends 100.00 available and 500.00 unsettled
    bought = place(dave_client, dave, side="buy", price="10.00", quantity="60")
    status_of(bought, "working")
    place(alice_client, alice_account, side="sell", price="10.00", quantity="60")
    status_of(bought, "filled")
    assert buckets(dave, aud) == (0, 0, Decimal("500.00"))

    # settling the sale moves only what was not spent: 500.00
    result = settlement_run(as_of=sale.settlement_date)
    assert len(result.settled) == 2
    assert [line for line in settle_entries(sale)[0] if line[0] == dave.pk] == sorted(
        [
            (dave.pk, "AUD", "available", Decimal("500.00")),
            (dave.pk, "AUD", "unsettled", Decimal("-500.00")),
        ]
    )
    assert buckets(dave, aud) == (Decimal("500.00"), 0, 0)
    assert buckets(dave, symbol.asset) == (Decimal(60), 0, 0)
    assert_trading_consistent()


def test_a_hold_released_after_its_proceeds_settled_returns_to_available(
    matcher, t2_market, symbol, bob, alice_client, alice_account
):
    aud = symbol.currency
    dave = factories.account(bob, holdings={symbol: "100"})
    dave.trade_unsettled_proceeds = True
    dave.save(update_fields=["trade_unsettled_proceeds"])
    dave_client = client_for(bob)
    sale = cross(dave_client, dave, alice_client, alice_account, "10.00", 100)
    buy = place(dave_client, dave, side="buy", price="5.00", quantity="100")
    status_of(buy, "working")
    assert buckets(dave, aud) == (0, Decimal("500.00"), Decimal("500.00"))

    # the sale settles while the buy still holds half its proceeds
    settlement_run(as_of=sale.settlement_date)
    assert buckets(dave, aud) == (Decimal("500.00"), Decimal("500.00"), 0)

    # the money has settled: the cancelled hold goes to available
    dave_client.delete(f"/api/v1/orders/{buy.pk}")
    status_of(buy, "cancelled")
    assert buckets(dave, aud) == (Decimal("1000.00"), 0, 0)
    assert_trading_consistent()


def test_spending_unsettled_cash_consumes_the_proceeds_that_settle_first(
    matcher, t2_market, symbol, bob, alice_client, alice_account
):
    aud = symbol.currency
    dave = factories.account(bob, holdings={symbol: "150"})
    dave.trade_unsettled_proceeds = True
    dave.save(update_fields=["trade_unsettled_proceeds"])
    dave_client = client_for(bob)
    # 1000.00 from a sale on Monday 2 March (due Wed 4), 500.00 on Tuesday (due Thu 5)
    with time_machine.travel(datetime(2026, 3, 1, 23, 0, tzinfo=UTC), tick=True):
        first = cross(dave_client, dave, alice_client, alice_account, "10.00", 100)
    with time_machine.travel(datetime(2026, 3, 2, 23, 0, tzinfo=UTC), tick=True):
        second = cross(dave_client, dave, alice_client, alice_account, "10.00", 50)
        # dave spends 1200.00 of the 1500.00
        cross(alice_client, alice_account, dave_client, dave, "12.00", 100)
    assert (first.settlement_date, second.settlement_date) == (
        date(2026, 3, 4),
        date(2026, 3, 5),
    )
    assert buckets(dave, aud) == (0, 0, Decimal("300.00"))

    # the first 1000.00 went on the purchase: nothing to move on the 4th
    assert settlement_run(as_of=date(2026, 3, 4)).settled == [first.pk]
    assert buckets(dave, aud) == (0, 0, Decimal("300.00"))
    # what is left of the second sale becomes available on the 5th
    assert second.pk in settlement_run(as_of=date(2026, 3, 5)).settled
    assert buckets(dave, aud) == (Decimal("300.00"), 0, 0)
    assert_trading_consistent()


def test_the_task_and_the_command_settle_what_is_due(
    matcher, t2_market, symbol, alice_client, bob_client, alice_account, bob_account
):
    with time_machine.travel(THURSDAY, tick=True):
        first = cross(alice_client, alice_account, bob_client, bob_account, "10.00", 1)
        second = cross(alice_client, alice_account, bob_client, bob_account, "10.00", 2)

    with time_machine.travel(datetime(2026, 3, 16, 13, 0, tzinfo=UTC), tick=True):
        call_command("settle", "--as-of", "2026-03-16")
        assert Trade.objects.filter(settled_at__isnull=True).count() == 2
        assert settlement_run_task() == 2
    assert set(
        Trade.objects.filter(settled_at__isnull=False).values_list("pk", flat=True)
    ) == {first.pk, second.pk}

    with pytest.raises(CommandError, match="Unknown market NOPE"):
        call_command("settle", "--market", "NOPE")


def test_the_settle_command_reports_what_it_settled(
    matcher,
    t2_market,
    symbol,
    alice_client,
    bob_client,
    alice_account,
    bob_account,
    capsys,
):
    trade = cross(alice_client, alice_account, bob_client, bob_account, "10.00", 1)
    call_command("settle", "--market", "XSX", "--as-of", str(trade.settlement_date))
    assert capsys.readouterr().out == "Settled 1 trades.\n"
    call_command("settle", "--as-of", str(trade.settlement_date))
    assert capsys.readouterr().out == "Settled 0 trades.\n"


def test_staff_settle_due_trades_from_the_market_and_trade_pages_audited(
    matcher,
    t2_market,
    symbol,
    alice_client,
    bob_client,
    alice_account,
    bob_account,
    admin_client,
    admin_user,
):
    with time_machine.travel(THURSDAY, tick=True):
        due = cross(alice_client, alice_account, bob_client, bob_account, "10.00", 1)
    later = cross(alice_client, alice_account, bob_client, bob_account, "10.00", 2)

    # the trade action settles only the selected trades that are due
    response = admin_client.post(
        reverse("admin:exchange_trade_changelist"),
        {"action": "settle_due_trades", "_selected_action": [due.pk, later.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert "Settled 1 due trades." in response.content.decode()
    assert list(
        Trade.objects.filter(settled_at__isnull=False).values_list("pk", flat=True)
    ) == [due.pk]
    entry = JournalEntry.objects.get(kind="settle")
    assert (entry.reference, entry.acting_user_id) == (f"trade:{due.pk}", admin_user.pk)

    # the market action settles whatever is due on the market (nothing more here)
    admin_client.post(
        reverse("admin:exchange_market_changelist"),
        {"action": "settle_due_trades", "_selected_action": [t2_market.pk]},
    )
    records = list(
        AuditRecord.objects.filter(action="settlement_run")
        .order_by("pk")
        .values_list("actor_id", "object_id", "changes")
    )
    assert records == [
        (
            admin_user.pk,
            str(t2_market.pk),
            {"as_of": None, "settled": 1, "trades": [due.pk]},
        ),
        (admin_user.pk, str(t2_market.pk), {"as_of": None, "settled": 0, "trades": []}),
    ]


def unsettled_within_pending_proceeds() -> None:
    """Every client's unsettled cash is at most its sale proceeds pending
    settlement (what keeps settlement exact and never negative)."""
    from exchange.settlement import unsettled_proceeds_pending
    from registry.models import Asset, Balance

    for balance in Balance.objects.filter(
        allow_negative=False, asset__kind=Asset.Kind.CURRENCY
    ):
        pending = unsettled_proceeds_pending(
            account_id=balance.account_id, asset_id=balance.asset_id
        )
        assert 0 <= balance.unsettled <= pending, (balance, pending)


def test_random_batches_with_unsettled_proceeds_settle_exactly_to_zero(
    t2_market, symbol
):
    import random

    from oms.models import OPEN_STATUSES, OrderRequest
    from oms.services import OrderError, OrderSpec, order_cancel_queue, order_place
    from tests.conftest import MatcherThread

    fee_schedule_save(
        schedule=FeeSchedule(
            market=t2_market,
            maker_fee_bps=Decimal(5),
            taker_fee_bps=Decimal(10),
            min_fee=Decimal("1.00"),
        ),
        acting_user=None,
    )
    traders = []
    for index in range(6):
        user = factories.user()
        account = factories.account(user, cash="2000.00", holdings={symbol: "200"})
        account.trade_unsettled_proceeds = index < 4
        account.save(update_fields=["trade_unsettled_proceeds"])
        traders.append((user, account))
    rng = random.Random(7)

    def random_orders(count):
        for _ in range(count):
            user, account = rng.choice(traders)
            try:
                order_place(
                    user=user,
                    spec=OrderSpec(
                        account_id=account.pk,
                        symbol="XSX:XS01",
                        side=rng.choice(["buy", "sell"]),
                        type="limit",
                        time_in_force=rng.choice(["gtc", "gtc", "ioc", "fok"]),
                        price=Decimal(rng.randint(990, 1010)) / 100,
                        quantity=Decimal(rng.randint(1, 60)),
                        # Self-trades allowed: more trades between few accounts.
                        self_trade_prevention="none",
                    ),
                )
            except OrderError:
                pass

    def match():
        runner = MatcherThread("XSX").start()
        try:
            wait_for(
                lambda: (
                    not OrderRequest.objects.filter(processed_at__isnull=True).exists()
                ),
                timeout=60,
            )
        finally:
            runner.stop()
        assert_trading_consistent()
        unsettled_within_pending_proceeds()

    random_orders(150)
    match()
    trades = list(Trade.objects.order_by("pk").values_list("pk", flat=True))
    assert len(trades) > 40
    # half of the trades settle while orders still hold unsettled cash
    far = date(2100, 1, 1)
    assert settlement_run(as_of=far, trade_ids=trades[::2]).failed == []
    unsettled_within_pending_proceeds()
    random_orders(100)
    match()
    owners = {account.pk: user for user, account in traders}
    for order in Order.objects.filter(status__in=OPEN_STATUSES):
        order_cancel_queue(order_id=order.pk, acting_user=owners[order.account_id])
    match()
    assert not Order.objects.filter(status__in=OPEN_STATUSES).exists()

    result = settlement_run(as_of=far)
    assert result.failed == []
    from registry.models import Balance, Posting

    # the paths under test were taken: holds drawn on unsettled cash, releases
    # returning to it, and settlements moving less than the proceeds
    unsettled = Posting.objects.filter(bucket="unsettled")
    assert unsettled.filter(entry__kind="hold").exists()
    assert unsettled.filter(entry__kind="release", amount__gt=0).exists()
    moved = dict(
        Posting.objects.filter(
            entry__kind="settle", bucket="available", asset=symbol.currency
        ).values_list("entry__reference", "amount")
    )
    assert any(
        moved.get(f"trade:{trade.pk}", 0) < trade.value - trade.seller_fee
        for trade in Trade.objects.all()
    )
    assert not Balance.objects.filter(allow_negative=False, unsettled__gt=0).exists()
    assert not Balance.objects.filter(allow_negative=False, held__gt=0).exists()
    references = Counter(
        JournalEntry.objects.filter(kind="settle").values_list("reference", flat=True)
    )
    assert references == Counter(
        {f"trade:{pk}": 1 for pk in Trade.objects.values_list("pk", flat=True)}
    )
    assert_trading_consistent()
