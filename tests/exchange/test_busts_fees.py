"""A trade correction charges the fee terms pinned on each order (its fee group's
rates and minimum), by the cumulative rule of fills - not the market's flat rates.

The scenario (market rates maker 5 / taker 10 bps, no minimum): bob's "pro" group
pays maker 1 / taker 20 bps with a 1.00 minimum per order, alice's "vip" group
maker 3 / taker 4 bps with 0.50. Alice rests two sells of 40 and 60 at 12.00; bob's
buy of 100 at 12.00 takes both (he is the taker):
t1: 40 x 12.00 = 480.00, bob accrues 0.96, pays the minimum 1.00; alice 0.50.
t2: 60 x 12.00 = 720.00, bob accrues 1.44 (2.40 in all): pays 2.40 - 1.00 = 1.40;
alice's second order 0.216, pays its own minimum 0.50.
"""

from decimal import Decimal
from typing import Any

import pytest

from exchange.busts import trade_correct
from exchange.fees import fee_group_save, fee_schedule_save
from exchange.models import FeeSchedule, Trade
from registry.models import Account, FeeGroup
from registry.selectors import ledger_differences
from tests import factories
from tests.conftest import assert_trading_consistent, balance_of
from tests.trading import match_now, place, set_fees

pytestmark = pytest.mark.django_db

D = Decimal


def fee_group(market: Any, account: Account, name: str, maker, taker, minimum):
    group = fee_group_save(fee_group=FeeGroup(name=name), acting_user=None)
    fee_schedule_save(
        schedule=FeeSchedule(
            market=market,
            fee_group=group,
            maker_fee_bps=D(maker),
            taker_fee_bps=D(taker),
            min_fee=D(minimum),
        ),
        acting_user=None,
    )
    account.fee_group = group
    account.save(update_fields=["fee_group"])


@pytest.fixture
def trades(market, symbol, alice_client, alice_account, bob_client, bob_account):
    set_fees(market, maker_bps=5, taker_bps=10)
    fee_group(market, bob_account, "pro", "1", "20", "1.00")
    fee_group(market, alice_account, "vip", "3", "4", "0.50")
    place(alice_client, alice_account, side="sell", price="12.00", quantity="40")
    place(alice_client, alice_account, side="sell", price="12.00", quantity="60")
    match_now()
    place(bob_client, bob_account, side="buy", price="12.00", quantity="100")
    match_now()
    first, second = Trade.objects.order_by("seq")
    assert (first.buyer_fee, first.seller_fee) == (D("1.00"), D("0.50"))
    assert (second.buyer_fee, second.seller_fee) == (D("1.40"), D("0.50"))
    return first, second


def fees_account() -> Account:
    return Account.objects.get(kind="fees")


@pytest.fixture
def staff(db):
    return factories.user("staffer", is_staff=True)


def test_correcting_the_second_fill_charges_the_orders_rates_cumulatively(
    trades, symbol, staff, alice_account, bob_account
):
    _, second = trades

    result = trade_correct(
        trade=second,
        price=D("11.00"),
        quantity=D(60),
        acting_user=staff,
        reason="Agreed price was 11.00",
    )

    # bob: 0.96 (t1) + 660.00 x 20 bps = 2.28 in all, minus the 1.00 t1 charged;
    # alice's second order: max(0.50, 660.00 x 3 bps = 0.198). The market's flat
    # rates would have made 0.66 and 0.33.
    correction = result.correction
    assert (correction.value, correction.buyer_fee, correction.seller_fee) == (
        D("660.00"),
        D("1.28"),
        D("0.50"),
    )
    aud = symbol.currency
    # bob: 10000.00 - 481.00 (t1) - 661.28; alice: 10000.00 + 479.50 + 659.50
    assert balance_of(bob_account, aud).available == D("8857.72")
    assert balance_of(alice_account, aud).available == D("11139.00")
    # 1.50 (t1) + 1.78
    assert balance_of(fees_account(), aud).available == D("3.28")
    assert ledger_differences() == []
    assert_trading_consistent()


def test_correcting_the_first_fill_counts_the_fees_the_other_fill_charged(
    trades, symbol, staff
):
    first, _ = trades

    result = trade_correct(
        trade=first,
        price=D("11.00"),
        quantity=D(40),
        acting_user=staff,
        reason="Agreed price was 11.00",
    )

    # bob: 440.00 x 20 bps = 0.88 + 1.44 (t2) = 2.32, minus the 1.40 t2 charged;
    # alice's first order: its minimum 0.50
    correction = result.correction
    assert (correction.value, correction.buyer_fee, correction.seller_fee) == (
        D("440.00"),
        D("0.92"),
        D("0.50"),
    )
    # 1.90 (t2) + 1.42
    assert balance_of(fees_account(), symbol.currency).available == D("3.32")
    assert ledger_differences() == []
    assert_trading_consistent()


def test_a_correction_of_a_correction_counts_only_the_trades_that_stand(
    trades, symbol, staff
):
    # correcting t2, then that correction: t2 is busted, t1 stands
    _, second = trades
    once = trade_correct(
        trade=second,
        price=D("11.00"),
        quantity=D(60),
        acting_user=staff,
        reason="Agreed price was 11.00",
    ).correction

    twice = trade_correct(
        trade=once,
        price=D("11.50"),
        quantity=D(10),
        acting_user=staff,
        reason="Agreed 10 at 11.50",
    ).correction

    # bob: 0.96 + 115.00 x 20 bps = 1.19, minus 1.00; alice: her minimum 0.50,
    # capped at nothing (115.00 of proceeds cover it)
    assert (twice.value, twice.buyer_fee, twice.seller_fee) == (
        D("115.00"),
        D("0.19"),
        D("0.50"),
    )
    assert ledger_differences() == []
    assert_trading_consistent()
