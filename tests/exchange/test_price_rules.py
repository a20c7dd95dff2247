"""Tick tables, per-symbol order limits and price bands, at order entry and for
the matcher (dynamic band)."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from exchange.models import Market, Symbol, TickBand, TickTable, Trade
from exchange.services import tick_table_create
from exchange.trading import TradingError, dynamic_band, price_check, static_band
from oms.models import Order
from registry.models import AuditRecord
from registry.services import RegistryError
from tests import factories
from tests.oms.test_order_rejections import (
    MISSING,
    ORDERS,
    assert_rejected_without_change,
    body_for,
)

pytestmark = pytest.mark.django_db

D = Decimal


@pytest.fixture
def table(db):
    # 1c below 1.00, 5c from 1.00, 10c from 10.00.
    return tick_table_create(
        name="Test bands",
        bands=[(D("10.00"), D("0.10")), (D(0), D("0.01")), (D("1.00"), D("0.05"))],
        acting_user=None,
    )


@pytest.fixture
def banded(symbol, table):
    Symbol.objects.filter(pk=symbol.pk).update(tick_table=table)
    return Symbol.objects.select_related("market", "currency", "asset").get(
        pk=symbol.pk
    )


def last_trade(symbol: Symbol, price: str, seq: int = 1) -> Trade:
    account = factories.account()
    now = timezone.now()
    return Trade.objects.create(
        symbol=symbol,
        seq=seq,
        price=D(price),
        quantity=D(1),
        value=D(price),
        aggressor_side="buy",
        buy_order_id=1,
        sell_order_id=2,
        buyer=account,
        seller=account,
        executed_at=now,
        settlement_date=now.date(),
        settled_at=now,
    )


# -- tick tables -----------------------------------------------------------------------


def test_tick_table_create_stores_the_bands_in_order_and_audits(table):
    assert list(table.bands.values_list("from_price", "tick_size")) == [
        (D(0), D("0.01")),
        (D("1.00"), D("0.05")),
        (D("10.00"), D("0.10")),
    ]
    record = AuditRecord.objects.get(action="ticktable_create")
    assert record.changes == {
        "name": "Test bands",
        "bands": [["0", "0.01"], ["1", "0.05"], ["10", "0.1"]],
    }


@pytest.mark.parametrize(
    ("bands", "field"),
    [
        ([], "bands"),
        ([(D(0), D("0.01")), (D(0), D("0.05"))], "bands"),
        ([(D(0), D(0))], "tick_size"),
        ([(D("1.02"), D("0.05"))], "from_price"),  # not on its own grid
        ([(D(-1), D("0.01"))], "from_price"),
    ],
)
def test_a_bad_tick_table_is_refused_and_creates_nothing(bands, field):
    with pytest.raises(RegistryError) as error:
        tick_table_create(name="Bad", bands=bands, acting_user=None)
    assert error.value.field == ("" if field == "__all__" else field)
    assert not TickTable.objects.exists()
    assert not TickBand.objects.exists()


@pytest.mark.parametrize(
    ("price", "tick"),
    [
        ("0.01", "0.01"),
        ("0.99", "0.01"),
        ("0.999", "0.01"),
        ("1.00", "0.05"),
        ("9.99", "0.05"),
        ("10.00", "0.10"),
        ("1000.00", "0.10"),
    ],
)
def test_the_tick_at_a_price_is_its_bands(banded, price, tick):
    assert banded.tick_at(D(price)) == D(tick)


@pytest.mark.parametrize(
    ("price", "floor", "ceiling"),
    [
        ("0.994", "0.99", "1.00"),
        ("1.00", "1.00", "1.00"),
        ("1.02", "1.00", "1.05"),
        ("9.97", "9.95", "10.00"),
        ("10.01", "10.00", "10.10"),
        ("10.10", "10.10", "10.10"),
        ("0.004", "0.00", "0.01"),
    ],
)
def test_prices_round_to_the_band_grid(banded, price, floor, ceiling):
    assert (banded.price_floor(D(price)), banded.price_ceiling(D(price))) == (
        D(floor),
        D(ceiling),
    )


def test_rounding_up_stops_at_a_finer_band_above(symbol):
    # 5c up to 0.98, then 1c: the least price at or above 0.96 is 0.98, not 1.00.
    coarse_then_fine = tick_table_create(
        name="Coarse then fine",
        bands=[(D(0), D("0.05")), (D("0.98"), D("0.01"))],
        acting_user=None,
    )
    symbol.tick_table = coarse_then_fine
    assert symbol.price_ceiling(D("0.96")) == D("0.98")
    assert symbol.price_floor(D("0.97")) == D("0.95")


def test_without_a_table_the_flat_tick_applies(symbol):
    assert (symbol.tick_at(D("123.45")), symbol.price_ceiling(D("1.001"))) == (
        D("0.01"),
        D("1.01"),
    )


def test_every_band_tick_must_be_a_multiple_of_the_symbols_tick(market, table):
    coarse = factories.symbol(market, "XS02", tick_size=D("0.02"))
    coarse.tick_table = table
    with pytest.raises(ValidationError) as error:
        coarse.full_clean()
    assert error.value.message_dict == {
        "tick_table": [
            "The band from 0 has tick 0.01, not a multiple of the tick size 0.02."
        ]
    }


def test_symbol_issue_refuses_an_incompatible_table(market, table):
    with pytest.raises(RegistryError) as error:
        factories.symbol(market, "XS02", tick_size=D("0.02"), tick_table=table)
    assert error.value.field == "tick_table"
    assert not Symbol.objects.filter(code="XS02").exists()


@pytest.mark.parametrize(
    ("price", "accepted"),
    [
        ("0.99", True),
        ("1.00", True),
        ("1.02", False),
        ("1.05", True),
        ("9.95", True),
        ("9.99", False),
        ("10.00", True),
        ("10.05", False),
        ("10.10", True),
    ],
)
def test_order_entry_checks_the_band_grid(
    alice_client, alice_account, banded, price, accepted
):
    body = body_for(alice_account, price=price, quantity="10")
    if accepted:
        response = alice_client.post(ORDERS, body, format="json")
        assert response.status_code == 201, response.json()
    else:
        assert_rejected_without_change(
            alice_client, body, 400, "price_off_tick", "price"
        )


def test_the_off_tick_error_names_the_band_tick(alice_client, alice_account, banded):
    body = assert_rejected_without_change(
        alice_client, body_for(alice_account, price="1.02"), 400, "price_off_tick"
    )
    assert body["message"] == (
        "At 1.02 the price must be a multiple of the tick size 0.05 "
        "(tick table Test bands)."
    )


def test_a_market_orders_protection_price_is_on_the_band_grid(
    alice_client, alice_account, banded
):
    # Reference 9.60, collar 10%: a buy may pay up to 10.56 -> 10.60 (10c band),
    # a sell may get down to 8.64 -> 8.60 (5c band).
    last_trade(banded, "9.60")
    for side, protection in (("buy", "10.60"), ("sell", "8.60")):
        response = alice_client.post(
            ORDERS,
            body_for(
                alice_account,
                side=side,
                type="market",
                time_in_force="ioc",
                price=MISSING,
                quantity="1",
            ),
            format="json",
        )
        assert response.status_code == 201, response.json()
        order = Order.objects.get(pk=response.json()["id"])
        assert order.price == D(protection)


# -- order limits ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "changes", "code", "status", "message"),
    [
        (
            {"max_quantity": D(500)},
            {"quantity": "501"},
            "quantity_above_maximum",
            400,
            "The maximum quantity is 500.",
        ),
        (
            {"min_value": D("100.00")},
            {"quantity": "9"},
            "value_below_minimum",
            422,
            "The order's value 90.00 is below the minimum 100.00 AUD.",
        ),
        (
            {"max_value": D("5000.00")},
            {"quantity": "501"},
            "value_above_maximum",
            422,
            "The order's value 5010.00 is above the maximum 5000.00 AUD.",
        ),
    ],
)
def test_orders_outside_the_symbols_limits_are_refused(
    alice_client, alice_account, symbol, limits, changes, code, status, message
):
    Symbol.objects.filter(pk=symbol.pk).update(**limits)
    body = assert_rejected_without_change(
        alice_client, body_for(alice_account, **changes), status, code, "quantity"
    )
    assert body["message"] == message


@pytest.mark.parametrize("quantity", ["10", "500"])
def test_orders_at_the_limits_are_accepted(
    alice_client, alice_account, symbol, quantity
):
    Symbol.objects.filter(pk=symbol.pk).update(
        max_quantity=D(500), min_value=D("100.00"), max_value=D("5000.00")
    )
    response = alice_client.post(
        ORDERS, body_for(alice_account, quantity=quantity), format="json"
    )
    assert response.status_code == 201, response.json()


def test_a_market_orders_value_is_taken_at_its_protection_price(
    alice_client, alice_account, symbol
):
    # Reference 10.00, collar 10%: a market buy of 46 may cost up to 46 x 11.00.
    Symbol.objects.filter(pk=symbol.pk).update(max_value=D("500.00"))
    last_trade(symbol, "10.00")
    body = assert_rejected_without_change(
        alice_client,
        body_for(
            alice_account,
            type="market",
            time_in_force="ioc",
            price=MISSING,
            quantity="46",
        ),
        422,
        "value_above_maximum",
    )
    assert (
        body["message"] == "The order's value 506.00 is above the maximum 500.00 AUD."
    )


def test_inconsistent_limits_are_refused(symbol):
    symbol.max_quantity = D("0.5")
    symbol.min_value = D(10)
    symbol.max_value = D(5)
    with pytest.raises(ValidationError) as error:
        symbol.full_clean()
    assert error.value.message_dict == {
        "max_quantity": ["The maximum quantity must be a whole number of lots."],
        "max_value": ["The maximum value is below the minimum value."],
    }


# -- static price band ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "accepted"),
    [
        ("8.99", False),
        ("9.00", True),
        ("10.00", True),
        ("11.00", True),
        ("11.01", False),
    ],
)
def test_limit_prices_outside_the_markets_band_are_refused(
    alice_client, alice_account, market, symbol, price, accepted
):
    Market.objects.filter(pk=market.pk).update(price_band_percent=D(10))
    last_trade(symbol, "10.00")
    body = body_for(alice_account, price=price, quantity="10")
    if accepted:
        assert alice_client.post(ORDERS, body, format="json").status_code == 201
        return
    error = assert_rejected_without_change(
        alice_client, body, 422, "price_outside_band", "price"
    )
    assert error["message"] == (
        "The price must be from 9.00 to 11.00 (10% around the reference price 10.00)."
    )


def test_the_symbols_band_overrides_the_markets(market, symbol):
    Market.objects.filter(pk=market.pk).update(price_band_percent=D(10))
    Symbol.objects.filter(pk=symbol.pk).update(price_band_percent=D("2.5"))
    symbol = Symbol.objects.select_related("market").get(pk=symbol.pk)
    last_trade(symbol, "10.00")
    price_check(symbol, D("10.25"))
    with pytest.raises(TradingError) as error:
        price_check(symbol, D("10.26"))
    assert error.value.message == (
        "The price must be from 9.75 to 10.25 (2.5% around the reference price 10.00)."
    )


def test_the_band_is_measured_from_the_last_trade(market, symbol):
    Market.objects.filter(pk=market.pk).update(price_band_percent=D(10))
    symbol.market.refresh_from_db()
    last_trade(symbol, "10.00", seq=1)
    last_trade(symbol, "20.00", seq=2)
    price_check(symbol, D("21.50"))
    with pytest.raises(TradingError):
        price_check(symbol, D("11.00"))


def test_no_reference_price_or_no_band_means_no_band_check(
    alice_client, alice_account, market, symbol
):
    Market.objects.filter(pk=market.pk).update(price_band_percent=D(10))
    response = alice_client.post(
        ORDERS, body_for(alice_account, price="99.00", quantity="1"), format="json"
    )
    assert response.status_code == 201
    assert static_band(symbol, None) is None
    Market.objects.filter(pk=market.pk).update(price_band_percent=None)
    symbol.market.refresh_from_db()
    assert static_band(symbol, D("10.00")) is None


def test_a_band_rounds_inward_to_the_band_grid(banded):
    Market.objects.filter(pk=banded.market_id).update(price_band_percent=D(5))
    banded.market.refresh_from_db()
    # 9.98 +- 5%: 9.481 up to 9.50 (5c band), 10.479 down to 10.40 (10c band).
    assert static_band(banded, D("9.98")) == (D("9.50"), D("10.40"))


# -- dynamic band (circuit breaker) ---------------------------------------------------------


def test_the_dynamic_band_follows_the_circuit_breaker_setting(market, symbol, banded):
    assert dynamic_band(symbol, D("10.00")) is None  # no circuit breaker
    Market.objects.filter(pk=market.pk).update(circuit_breaker_percent=D(5))
    symbol.market.refresh_from_db()
    banded.market.refresh_from_db()
    assert dynamic_band(symbol, None) is None
    assert dynamic_band(symbol, D("10.00")) == (D("9.50"), D("10.50"))
    assert dynamic_band(banded, D("9.98")) == (D("9.50"), D("10.40"))
    band = dynamic_band(banded, D("9.98"))
    assert band is not None
    low, high = band
    assert (banded.to_ticks(low), banded.to_ticks(high)) == (950, 1040)


def test_a_tiny_reference_keeps_the_band_positive(symbol):
    Market.objects.filter(pk=symbol.market_id).update(circuit_breaker_percent=D(99))
    symbol.market.refresh_from_db()
    assert dynamic_band(symbol, D("0.01")) == (D("0.01"), D("0.01"))
