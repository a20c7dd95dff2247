"""The exchange's staff console: market control, symbol issue, holidays, trades."""

import datetime
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from exchange.models import Holiday, Market, StreamSequence, Symbol, Trade
from registry.models import Asset, AuditRecord
from tests import factories
from tests.registry.test_admin import audit_trail, change_form_data, messages_of

pytestmark = pytest.mark.django_db

EXCHANGE_MODELS = ["market", "symbol", "holiday", "trade", "streamsequence"]
MARKETS_URL = "admin:exchange_market_changelist"


@pytest.fixture
def trade(symbol, alice_account, bob_account):
    return Trade.objects.create(
        symbol=symbol,
        seq=1,
        price=Decimal("10.05"),
        quantity=Decimal(60),
        value=Decimal("603.00"),
        aggressor_side="buy",
        buy_order_id=41,
        sell_order_id=42,
        buyer=bob_account,
        seller=alice_account,
        executed_at=timezone.now(),
        settlement_date=timezone.now().date(),
        settled_at=timezone.now(),
    )


@pytest.fixture
def exchange_rows(symbol, trade):
    Holiday.objects.create(
        market=symbol.market, date=datetime.date(2026, 12, 25), name="Christmas"
    )
    StreamSequence.objects.create(topic="market.XSX", seq=3)


def run_action(client, action, markets, **extra):
    """Choose ``action`` for ``markets`` on the market changelist."""
    return client.post(
        reverse(MARKETS_URL),
        {
            "action": action,
            "_selected_action": [m.pk for m in markets],
            "index": 0,
            **extra,
        },
    )


def confirm_halt(client, markets, reason):
    """The second step of the halt action: the confirmation page posts back."""
    return client.post(
        reverse(MARKETS_URL),
        {
            "action": "halt_markets",
            "_selected_action": [m.pk for m in markets],
            "confirm": "yes",
            "reason": reason,
        },
    )


# Pages render ---------------------------------------------------------------------


@pytest.mark.parametrize("model", EXCHANGE_MODELS)
def test_each_exchange_changelist_and_change_page_renders(
    admin_client, exchange_rows, model
):
    changelist = admin_client.get(reverse(f"admin:exchange_{model}_changelist"))
    assert changelist.status_code == 200
    first = changelist.context["cl"].result_list[0]

    change = admin_client.get(
        reverse(f"admin:exchange_{model}_change", args=[first.pk])
    )

    assert change.status_code == 200


@pytest.mark.parametrize("model", ["market", "symbol", "holiday"])
def test_the_add_pages_of_configuration_render(admin_client, market, model):
    response = admin_client.get(reverse(f"admin:exchange_{model}_add"))

    assert response.status_code == 200


# Markets -----------------------------------------------------------------------------


def test_adding_a_market_goes_through_market_create(admin_client, admin_user):
    aud = factories.currency()

    response = admin_client.post(
        reverse("admin:exchange_market_add"),
        {
            "code": "XNZ",
            "name": "New Zealand Exchange",
            "timezone": "Pacific/Auckland",
            "currency": aud.pk,
            "maker_fee_bps": "1.5",
            "taker_fee_bps": "3",
            "market_order_collar_percent": "10",
            "settlement_days": "2",
            "self_trade_prevention": "cancel_newest",
        },
    )

    assert response.status_code == 302
    market = Market.objects.get(code="XNZ")
    assert (
        market.state,
        market.timezone,
        market.taker_fee_bps,
        market.settlement_days,
    ) == ("open", "Pacific/Auckland", Decimal(3), 2)
    assert audit_trail(market) == [("market_create", admin_user.pk)]


def test_the_market_change_form_cannot_change_the_state(
    admin_client, admin_user, market
):
    url = reverse("admin:exchange_market_change", args=[market.pk])
    data = change_form_data(admin_client.get(url))
    data.update(state="halted", state_reason="sneaky", name="Renamed Exchange")

    response = admin_client.post(url, data)

    assert response.status_code == 302
    market.refresh_from_db()
    assert (market.state, market.state_reason, market.name) == (
        "open",
        "",
        "Renamed Exchange",
    )
    record = AuditRecord.objects.get(actor=admin_user)
    assert (record.action, record.changes) == (
        "market_change",
        {"name": ["XSX Exchange", "Renamed Exchange"]},
    )


def test_the_halt_action_first_asks_for_a_reason_and_changes_nothing(
    admin_client, market
):
    response = run_action(admin_client, "halt_markets", [market])

    assert response.status_code == 200
    assert response.templates[0].name == "admin/xchange/market_action_confirmation.html"
    assert response.context["form"].is_bound is False
    market.refresh_from_db()
    assert market.state == "open"
    assert not AuditRecord.objects.exists()


def test_halting_with_a_reason_halts_the_market_and_audits_the_admin(
    admin_client, admin_user, market
):
    response = confirm_halt(admin_client, [market], "Announcement pending")

    assert response.status_code == 302
    market.refresh_from_db()
    assert (market.state, market.state_reason) == ("halted", "Announcement pending")
    record = AuditRecord.objects.get()
    assert (record.actor, record.action, record.reason, record.changes) == (
        admin_user,
        "market_halt",
        "Announcement pending",
        {"state": ["open", "halted"]},
    )
    assert messages_of(response) == ["Halted XSX."]


def test_halting_without_a_reason_shows_the_form_error_and_changes_nothing(
    admin_client, market
):
    response = confirm_halt(admin_client, [market], "")

    assert response.status_code == 200
    assert response.context["form"].errors == {"reason": ["This field is required."]}
    market.refresh_from_db()
    assert market.state == "open"
    assert not AuditRecord.objects.exists()


def test_resuming_a_market_that_is_not_halted_shows_an_error_and_changes_nothing(
    admin_client, market
):
    response = run_action(admin_client, "resume_markets", [market])

    assert response.status_code == 302
    assert messages_of(response) == ["Cannot resume market XSX: it is open."]
    market.refresh_from_db()
    assert (market.state, market.state_reason) == ("open", "")
    assert not AuditRecord.objects.exists()


def test_resuming_a_halted_market_opens_it(admin_client, admin_user, market):
    confirm_halt(admin_client, [market], "Announcement pending")

    response = run_action(admin_client, "resume_markets", [market])

    assert messages_of(response) == ["Halted XSX.", "Resumed XSX."]
    market.refresh_from_db()
    assert (market.state, market.state_reason) == ("open", "")
    assert audit_trail(market) == [
        ("market_halt", admin_user.pk),
        ("market_resume", admin_user.pk),
    ]


def test_an_action_on_several_markets_changes_only_those_that_allow_it(
    admin_client, admin_user, market
):
    other = factories.market("XNZ", state=Market.State.CLOSED)

    response = run_action(admin_client, "close_markets", [market, other])

    assert messages_of(response) == [
        "Cannot close market XNZ: it is closed.",
        "Closed XSX.",
    ]
    assert dict(Market.objects.values_list("code", "state")) == {
        "XNZ": "closed",
        "XSX": "closed",
    }
    assert audit_trail(other) == []


def test_opening_a_closed_market(admin_client, admin_user):
    market = factories.market("XSX", state=Market.State.CLOSED)

    run_action(admin_client, "open_markets", [market])

    market.refresh_from_db()
    assert market.state == "open"
    assert audit_trail(market) == [("market_open", admin_user.pk)]


def test_markets_cannot_be_deleted(admin_client, market):
    response = admin_client.post(
        reverse("admin:exchange_market_delete", args=[market.pk]), {"post": "yes"}
    )

    assert response.status_code == 403
    assert Market.objects.filter(pk=market.pk).exists()


# Symbols -----------------------------------------------------------------------------


def issue_symbol(client, market, **fields):
    body = {
        "market": market.pk,
        "code": "XS02",
        "name": "XS02 Holdings",
        "tick_size": "0.005",
        "lot_size": "100",
        "min_quantity": "",
        "scale": "0",
        **fields,
    }
    return client.post(reverse("admin:exchange_symbol_add"), body)


def test_issuing_a_symbol_through_the_add_form_creates_the_asset_and_the_symbol(
    admin_client, admin_user, market
):
    response = issue_symbol(admin_client, market)

    symbol = Symbol.objects.get(market=market, code="XS02")
    assert response.status_code == 302
    assert response["Location"] == reverse(
        "admin:exchange_symbol_change", args=[symbol.pk]
    )
    assert (symbol.asset.code, symbol.asset.kind, symbol.asset.scale) == (
        "XSX:XS02",
        "security",
        0,
    )
    assert (
        symbol.name,
        symbol.currency.code,
        symbol.tick_size,
        symbol.lot_size,
        symbol.min_quantity,
        symbol.status,
    ) == (
        "XS02 Holdings",
        "AUD",
        Decimal("0.005"),
        Decimal(100),
        Decimal(100),
        "active",
    )
    assert audit_trail(symbol) == [("symbol_issue", admin_user.pk)]
    assert messages_of(response) == ["Issued XSX:XS02."]


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        (
            {"tick_size": "0.001", "lot_size": "1"},
            {
                "tick_size": [
                    "tick size x lot size (0.001) is finer than AUD's "
                    "smallest unit 0.01."
                ]
            },
        ),
        ({"code": "XS01"}, {"code": ["XSX:XS01 already exists."]}),
        (
            {"code": "xs-1"},
            {"code": ["Use 1 to 16 upper-case letters and digits."]},
        ),
        ({"lot_size": "0"}, {"lot_size": ["Must be positive."]}),
        (
            {"scale": "11"},
            {"scale": ["Ensure this value is less than or equal to 10."]},
        ),
    ],
)
def test_a_symbol_the_service_refuses_shows_the_form_error_and_creates_nothing(
    admin_client, symbol, fields, errors
):
    response = issue_symbol(admin_client, symbol.market, **fields)

    assert response.status_code == 200
    assert response.context["form"].errors == errors
    assert list(Symbol.objects.values_list("code", flat=True)) == ["XS01"]
    assert list(Asset.objects.values_list("code", flat=True)) == ["AUD", "XSX:XS01"]
    assert AuditRecord.objects.filter(action="symbol_issue").count() == 1


def test_a_symbols_name_and_status_change_by_a_normal_save_but_its_grid_does_not(
    admin_client, admin_user, symbol
):
    url = reverse("admin:exchange_symbol_change", args=[symbol.pk])
    data = change_form_data(admin_client.get(url))
    data.update(name="XS01 Group", status="suspended", tick_size="0.5")

    response = admin_client.post(url, data)

    assert response.status_code == 302
    symbol.refresh_from_db()
    assert (symbol.name, symbol.status, symbol.tick_size) == (
        "XS01 Group",
        "suspended",
        Decimal("0.01"),
    )
    record = AuditRecord.objects.get(actor=admin_user)
    assert (record.action, record.changes) == (
        "symbol_change",
        {"name": ["XS01 Ltd", "XS01 Group"], "status": ["active", "suspended"]},
    )


# Holidays ----------------------------------------------------------------------------


def test_holidays_are_added_and_deleted_with_an_audit_record(
    admin_client, admin_user, market
):
    added = admin_client.post(
        reverse("admin:exchange_holiday_add"),
        {"market": market.pk, "date": "2026-12-25", "name": "Christmas Day"},
    )
    holiday = Holiday.objects.get()

    deleted = admin_client.post(
        reverse("admin:exchange_holiday_delete", args=[holiday.pk]), {"post": "yes"}
    )

    assert (added.status_code, deleted.status_code) == (302, 302)
    assert not Holiday.objects.exists()
    assert audit_trail(holiday) == [
        ("holiday_create", admin_user.pk),
        ("holiday_delete", admin_user.pk),
    ]


def test_the_holiday_list_filters_by_market(admin_client, market):
    other = factories.market("XNZ")
    Holiday.objects.create(
        market=market, date=datetime.date(2026, 1, 26), name="Australia Day"
    )
    Holiday.objects.create(
        market=other, date=datetime.date(2026, 2, 6), name="Waitangi Day"
    )

    response = admin_client.get(
        reverse("admin:exchange_holiday_changelist"), {"market__id__exact": other.pk}
    )

    assert [h.name for h in response.context["cl"].result_list] == ["Waitangi Day"]


# Read-only records ------------------------------------------------------------------


@pytest.mark.parametrize("model", ["trade", "streamsequence"])
def test_trades_and_stream_sequences_cannot_be_added(admin_client, model):
    response = admin_client.get(reverse(f"admin:exchange_{model}_add"))

    assert response.status_code == 403


def test_trades_cannot_be_changed_or_deleted(admin_client, trade):
    change = admin_client.post(
        reverse("admin:exchange_trade_change", args=[trade.pk]), {"price": "1.00"}
    )
    delete = admin_client.post(
        reverse("admin:exchange_trade_delete", args=[trade.pk]), {"post": "yes"}
    )

    assert (change.status_code, delete.status_code) == (403, 403)
    trade.refresh_from_db()
    assert trade.price == Decimal("10.05")


@pytest.mark.parametrize(("term", "found"), [("41", True), ("42", True), ("43", False)])
def test_trades_are_found_by_either_order_id(admin_client, trade, term, found):
    response = admin_client.get(reverse("admin:exchange_trade_changelist"), {"q": term})

    assert list(response.context["cl"].result_list) == ([trade] if found else [])


def test_trades_are_found_by_symbol_code(admin_client, trade):
    response = admin_client.get(
        reverse("admin:exchange_trade_changelist"), {"q": "XS01"}
    )

    assert list(response.context["cl"].result_list) == [trade]
