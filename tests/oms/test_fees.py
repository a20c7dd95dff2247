"""Fees on real trades: tiers, the minimum per order across partial fills, the
seller's cap, and reservations that stay exact and are released in full."""

from decimal import Decimal

import pytest

from exchange.fees import fee_group_save, fee_schedule_save
from exchange.models import FeeSchedule, Trade
from oms.models import Order
from registry.models import Account, FeeGroup, JournalEntry
from tests.conftest import assert_trading_consistent, balance_of, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def place(client, account, **body):
    body = {"account": account.pk, "symbol": "XSX:XS01", "time_in_force": "gtc", **body}
    response = client.post("/api/v1/orders", body, format="json")
    assert response.status_code == 201, response.json()
    return Order.objects.get(pk=response.json()["id"])


def settled_to(order, *statuses):
    wait_for(lambda: Order.objects.get(pk=order.pk).status in statuses)
    return Order.objects.get(pk=order.pk)


def default_schedule(market, maker, taker, min_fee):
    return fee_schedule_save(
        schedule=FeeSchedule(
            market=market,
            maker_fee_bps=Decimal(maker),
            taker_fee_bps=Decimal(taker),
            min_fee=Decimal(min_fee),
        ),
        acting_user=None,
    )


def releases(order):
    return [
        entry.postings.get(bucket="held").amount
        for entry in JournalEntry.objects.filter(
            kind="release", reference=f"order:{order.pk}"
        ).order_by("pk")
    ]


def test_an_account_in_a_fee_group_pays_its_tier_and_others_the_market_default(
    matcher, market, symbol, alice_client, bob_client, alice_account, bob_account
):
    # given the market default 5/10 bps and a "pro" tier at 1/2 bps for bob
    default_schedule(market, "5", "10", "0")
    pro = fee_group_save(fee_group=FeeGroup(name="pro"), acting_user=None)
    fee_schedule_save(
        schedule=FeeSchedule(
            market=market,
            fee_group=pro,
            maker_fee_bps=Decimal(1),
            taker_fee_bps=Decimal(2),
        ),
        acting_user=None,
    )
    bob_account.fee_group = pro
    bob_account.save(update_fields=["fee_group"])

    # when alice rests a sell and bob takes it (value 2000.00)
    sell = place(
        alice_client, alice_account, side="sell", price="20.00", quantity="100"
    )
    settled_to(sell, "working")
    buy = place(bob_client, bob_account, side="buy", price="20.00", quantity="100")
    # bob's reservation is at his tier's higher rate: 2000.00 + 0.40
    assert buy.held_amount == Decimal("2000.40")
    assert (buy.maker_fee_bps, buy.taker_fee_bps) == (Decimal(1), Decimal(2))
    settled_to(buy, "filled")

    # then bob pays 2 bps as taker (0.40), alice 5 bps as maker (1.00)
    trade = Trade.objects.get()
    assert (trade.buyer_fee, trade.seller_fee) == (Decimal("0.40"), Decimal("1.00"))
    aud = symbol.currency
    assert balance_of(bob_account, aud).available == Decimal("7999.60")
    assert balance_of(alice_account, aud).available == Decimal("11999.00")
    assert balance_of(Account.objects.get(kind="fees"), aud).available == Decimal(
        "1.40"
    )
    assert_trading_consistent()


def test_the_minimum_fee_applies_once_per_order_across_partial_fills_and_the_hold_follows(
    matcher, market, symbol, alice_client, bob_client, alice_account, bob_account
):
    # given maker 5 bps, taker 10 bps and a minimum of 2.00 per order
    default_schedule(market, "5", "10", "2.00")
    aud = symbol.currency
    # bob rests a buy of 1000 at 9.00: 9000.00 + max(2.00, 10 bps = 9.00)
    buy = place(bob_client, bob_account, side="buy", price="9.00", quantity="1000")
    assert buy.held_amount == Decimal("9009.00")
    settled_to(buy, "working")

    # fill 1: 100 (900.00); bob (maker) accrues 0.45, below the minimum: pays 2.00
    first = place(
        alice_client, alice_account, side="sell", price="9.00", quantity="100"
    )
    settled_to(first, "filled")
    buy = settled_to(buy, "partially_filled")
    assert (buy.fees, buy.fee_accrued) == (Decimal("2.00"), Decimal("0.45"))
    # the rest (900 at 9.00) can still need 8100.00 + max(2.00, 0.45 + 8.10) - 2.00
    assert buy.held_amount == Decimal("8106.55")
    assert balance_of(bob_account, aud).held == Decimal("8106.55")

    # fill 2: 300 (2700.00); accrued 1.80 is still below the minimum: no fee
    second = place(
        alice_client, alice_account, side="sell", price="9.00", quantity="300"
    )
    settled_to(second, "filled")
    wait_for(lambda: Order.objects.get(pk=buy.pk).filled_quantity == 400)
    buy = Order.objects.get(pk=buy.pk)
    assert (buy.fees, buy.fee_accrued) == (Decimal("2.00"), Decimal("1.80"))
    assert buy.held_amount == Decimal("5405.20")  # 5400.00 + 7.20 - 2.00

    # fill 3: 600 (5400.00); accrued 4.50 passes the minimum: pays the difference
    third = place(
        alice_client, alice_account, side="sell", price="9.00", quantity="600"
    )
    settled_to(third, "filled")
    buy = settled_to(buy, "filled")

    trades = list(Trade.objects.order_by("seq"))
    assert [(t.value, t.buyer_fee, t.seller_fee) for t in trades] == [
        (Decimal("900.00"), Decimal("2.00"), Decimal("2.00")),
        (Decimal("2700.00"), Decimal("0.00"), Decimal("2.70")),
        (Decimal("5400.00"), Decimal("2.50"), Decimal("5.40")),
    ]
    assert (buy.fees, buy.fee_accrued, buy.held_amount) == (
        Decimal("4.50"),
        Decimal("4.50"),
        Decimal(0),
    )
    # what was over-held for the maker rate came back fill by fill, the rest at the end
    assert releases(buy) == [Decimal("-0.45"), Decimal("-1.35"), Decimal("-2.70")]
    assert balance_of(bob_account, aud).available == Decimal("995.50")  # 9004.50 paid
    assert balance_of(bob_account, aud).held == 0
    assert balance_of(alice_account, aud).available == Decimal("18989.90")
    assert_trading_consistent()


def test_price_improvement_is_released_exactly_and_the_rest_at_the_end(
    matcher, market, symbol, alice_client, bob_client, alice_account, bob_account
):
    default_schedule(market, "5", "10", "2.00")
    aud = symbol.currency
    sell = place(alice_client, alice_account, side="sell", price="8.50", quantity="100")
    settled_to(sell, "working")

    # bob's buy of 300 at 9.00 takes 100 at 8.50 (850.00, taker fee 2.00 minimum)
    buy = place(bob_client, bob_account, side="buy", price="9.00", quantity="300")
    assert buy.held_amount == Decimal("2702.70")
    buy = settled_to(buy, "partially_filled")
    # kept: 1800.00 + max(2.00, 0.85 + 1.80) - 2.00 = 1800.65; released 50.05
    assert buy.held_amount == Decimal("1800.65")
    assert releases(buy) == [Decimal("-50.05")]

    # alice fills the rest at 9.00: bob is the maker now, accrued 1.75 < 2.00
    rest = place(alice_client, alice_account, side="sell", price="9.00", quantity="200")
    settled_to(rest, "filled")
    buy = settled_to(buy, "filled")
    assert (buy.fees, buy.held_amount) == (Decimal("2.00"), Decimal(0))
    assert releases(buy) == [Decimal("-50.05"), Decimal("-0.65")]
    assert balance_of(bob_account, aud).available == Decimal("7348.00")  # 2652.00
    assert_trading_consistent()


def test_a_sellers_fee_is_capped_at_the_proceeds_and_the_rest_comes_from_later_fills(
    matcher, market, symbol, alice_client, bob_client, alice_account, bob_account
):
    default_schedule(market, "5", "10", "2.00")
    aud = symbol.currency
    sell = place(alice_client, alice_account, side="sell", price="1.00", quantity="10")
    settled_to(sell, "working")

    first = place(bob_client, bob_account, side="buy", price="1.00", quantity="1")
    assert first.held_amount == Decimal("3.00")  # 1.00 + the 2.00 minimum
    settled_to(first, "filled")
    sell = settled_to(sell, "partially_filled")
    assert sell.fees == Decimal("1.00")  # the 2.00 minimum, capped at the proceeds

    second = place(bob_client, bob_account, side="buy", price="1.00", quantity="9")
    settled_to(second, "filled")
    sell = settled_to(sell, "filled")
    assert [(t.buyer_fee, t.seller_fee) for t in Trade.objects.order_by("seq")] == [
        (Decimal("2.00"), Decimal("1.00")),
        (Decimal("2.00"), Decimal("1.00")),
    ]
    assert sell.fees == Decimal("2.00")
    # alice: +10.00 proceeds - 2.00 fees; bob: -10.00 - 4.00 (two orders)
    assert balance_of(alice_account, aud).available == Decimal("10008.00")
    assert balance_of(bob_account, aud).available == Decimal("9986.00")
    assert_trading_consistent()


def test_an_open_order_keeps_the_rates_it_was_placed_under(
    matcher, market, symbol, alice_client, bob_client, alice_account, bob_account
):
    schedule = default_schedule(market, "5", "10", "0")
    buy = place(bob_client, bob_account, side="buy", price="10.00", quantity="100")
    settled_to(buy, "working")
    assert buy.held_amount == Decimal("1001.00")

    # the schedule triples while the buy rests
    schedule.maker_fee_bps, schedule.taker_fee_bps = Decimal(15), Decimal(30)
    fee_schedule_save(schedule=schedule, acting_user=None)
    sell = place(
        alice_client, alice_account, side="sell", price="10.00", quantity="100"
    )
    settled_to(sell, "filled")

    # bob (maker) pays his order's 5 bps; alice's new order pays the new 30 bps
    trade = Trade.objects.get()
    assert (trade.buyer_fee, trade.seller_fee) == (Decimal("0.50"), Decimal("3.00"))
    assert_trading_consistent()
