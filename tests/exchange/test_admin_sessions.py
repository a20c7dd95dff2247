"""The staff console for trading states, timetables, special days and tick tables:
every edit audited, bad edits shown as form errors and changing nothing."""

from datetime import time
from decimal import Decimal
from typing import Any

import pytest
from django.urls import reverse
from django.utils.html import escape

from exchange.models import (
    MarketSession,
    SpecialDay,
    Symbol,
    TickBand,
    TickTable,
    TradingState,
)
from exchange.services import market_timetable_set, tick_table_create
from registry.models import AuditRecord
from tests import factories
from tests.registry.test_admin import change_form_data

pytestmark = pytest.mark.django_db


def market_url(market) -> str:
    return reverse("admin:exchange_market_change", args=[market.pk])


def inline_prefix(data: dict[str, Any], model: str) -> str:
    """The formset prefix of an inline on a change page (from its management form)."""
    for key in data:
        if key.endswith("-TOTAL_FORMS") and model in key:
            return key.removesuffix("-TOTAL_FORMS")
    raise AssertionError(f"no {model} inline in {sorted(data)}")


def add_row(data: dict[str, Any], prefix: str, **fields: Any) -> None:
    index = int(data[f"{prefix}-TOTAL_FORMS"])
    for name, value in fields.items():
        data[f"{prefix}-{index}-{name}"] = value
    data[f"{prefix}-TOTAL_FORMS"] = index + 1


def states_of(market) -> list[tuple]:
    return list(
        TradingState.objects.filter(market=market)
        .order_by("code")
        .values_list("code", "name", "allows_place", "allows_match")
    )


@pytest.mark.parametrize("model", ["ticktable", "specialday"])
def test_the_new_changelists_and_change_pages_render(admin_client, market, model):
    tick_table_create(name="T", bands=[(Decimal(0), Decimal("0.01"))], acting_user=None)
    SpecialDay.objects.create(market=market, date="2026-12-24", name="Eve")
    changelist = admin_client.get(reverse(f"admin:exchange_{model}_changelist"))
    first = changelist.context["cl"].result_list[0]
    change = admin_client.get(
        reverse(f"admin:exchange_{model}_change", args=[first.pk])
    )
    add = admin_client.get(reverse(f"admin:exchange_{model}_add"))
    assert (changelist.status_code, change.status_code, add.status_code) == (
        200,
        200,
        200,
    )


def test_the_market_page_shows_the_timetable_now(admin_client, market):
    response = admin_client.get(market_url(market))
    assert response.status_code == 200
    assert b"closed, no change ahead" in response.content


# -- trading states ----------------------------------------------------------------------


def test_staff_add_a_state_and_edit_flags_inline_with_audit(
    admin_client, admin_user, market
):
    data = change_form_data(admin_client.get(market_url(market)))
    prefix = inline_prefix(data, "trading_states")
    add_row(data, prefix, code="lunch", name="Lunch break", allows_cancel="on")
    closed = next(
        i
        for i in range(int(data[f"{prefix}-TOTAL_FORMS"]))
        if data.get(f"{prefix}-{i}-code") == "closed"
    )
    data[f"{prefix}-{closed}-allows_place"] = "on"

    response = admin_client.post(market_url(market), data)

    assert response.status_code == 302, response.context and response.context["errors"]
    assert ("lunch", "Lunch break", False, False) in states_of(market)
    assert ("closed", "Closed", True, False) in states_of(market)
    records = AuditRecord.objects.filter(object_type="exchange.tradingstate")
    assert sorted(records.values_list("actor", "action")) == [
        (admin_user.pk, "tradingstate_change"),
        (admin_user.pk, "tradingstate_create"),
    ]
    change = records.get(action="tradingstate_change")
    assert change.changes == {"allows_place": ["False", "True"]}


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        ("delete_standard", "Cannot delete halted: it is a standard state."),
        ("rename", "A state's code cannot change."),
    ],
)
def test_standard_states_cannot_be_deleted_or_renamed(
    admin_client, market, edit, error
):
    before = states_of(market)
    data = change_form_data(admin_client.get(market_url(market)))
    prefix = inline_prefix(data, "trading_states")
    halted = next(
        i
        for i in range(int(data[f"{prefix}-TOTAL_FORMS"]))
        if data.get(f"{prefix}-{i}-code") == "halted"
    )
    if edit == "delete_standard":
        data[f"{prefix}-{halted}-DELETE"] = "on"
    else:
        data[f"{prefix}-{halted}-code"] = "stopped"

    response = admin_client.post(market_url(market), data)

    assert response.status_code == 200
    assert escape(error) in response.content.decode()
    assert states_of(market) == before
    assert not AuditRecord.objects.exists()


def test_a_custom_state_in_use_cannot_be_deleted(admin_client, market):
    TradingState.objects.create(market=market, code="lunch", name="Lunch")
    market_timetable_set(market=market, entries=[(time(12), "lunch")], acting_user=None)
    data = change_form_data(admin_client.get(market_url(market)))
    prefix = inline_prefix(data, "trading_states")
    lunch = next(
        i
        for i in range(int(data[f"{prefix}-TOTAL_FORMS"]))
        if data.get(f"{prefix}-{i}-code") == "lunch"
    )
    data[f"{prefix}-{lunch}-DELETE"] = "on"

    response = admin_client.post(market_url(market), data)

    assert response.status_code == 200
    assert "Cannot delete lunch: a timetable uses it." in response.content.decode()
    assert TradingState.objects.filter(market=market, code="lunch").exists()


# -- the regular timetable ----------------------------------------------------------------


def test_staff_edit_the_regular_timetable_inline(admin_client, admin_user, market):
    data = change_form_data(admin_client.get(market_url(market)))
    prefix = inline_prefix(data, "sessions")
    add_row(data, prefix, start="10:00", state="open")
    add_row(data, prefix, start="16:00", state="closed")
    data["schedule_enabled"] = "on"

    response = admin_client.post(market_url(market), data)

    assert response.status_code == 302
    assert list(MarketSession.objects.values_list("start", "state", "special_day")) == [
        (time(10), "open", None),
        (time(16), "closed", None),
    ]
    market.refresh_from_db()
    assert market.schedule_enabled is True
    assert sorted(
        AuditRecord.objects.filter(actor=admin_user).values_list("action", flat=True)
    ) == ["market_change", "marketsession_create", "marketsession_create"]


@pytest.mark.parametrize(
    ("state", "error"),
    [
        ("halted", "A timetable cannot halt the market"),
        ("lunch", "&#x27;lunch&#x27; is not a trading state of XSX."),
    ],
)
def test_a_timetable_entry_needs_a_state_of_the_market_other_than_halted(
    admin_client, market, state, error
):
    data = change_form_data(admin_client.get(market_url(market)))
    add_row(data, inline_prefix(data, "sessions"), start="10:00", state=state)

    response = admin_client.post(market_url(market), data)

    assert response.status_code == 200
    assert error in response.content.decode()
    assert not MarketSession.objects.exists()
    assert not AuditRecord.objects.exists()


# -- special days -------------------------------------------------------------------------


def test_staff_add_a_special_day_with_its_own_timetable(
    admin_client, admin_user, market
):
    url = reverse("admin:exchange_specialday_add")
    data = change_form_data(admin_client.get(url))
    data.update(market=market.pk, date="2026-12-24", name="Christmas Eve")
    prefix = inline_prefix(data, "sessions")
    add_row(data, prefix, start="09:30", state="open")
    add_row(data, prefix, start="12:00", state="closed")

    response = admin_client.post(url, data)

    assert response.status_code == 302, response.context["errors"]
    day = SpecialDay.objects.get()
    assert list(
        day.sessions.order_by("start").values_list("market", "start", "state")
    ) == [(market.pk, time(9, 30), "open"), (market.pk, time(12), "closed")]
    assert sorted(
        AuditRecord.objects.filter(actor=admin_user).values_list("action", flat=True)
    ) == ["marketsession_create", "marketsession_create", "specialday_create"]


def test_staff_add_an_early_close(admin_client, market):
    response = admin_client.post(
        reverse("admin:exchange_specialday_add"),
        {
            "market": market.pk,
            "date": "2026-11-27",
            "name": "Day after Thanksgiving",
            "close_time": "13:00",
            "sessions-TOTAL_FORMS": "0",
            "sessions-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302
    assert SpecialDay.objects.get().close_time == time(13)


# -- tick tables --------------------------------------------------------------------------


def test_staff_create_a_tick_table_with_bands(admin_client, admin_user):
    url = reverse("admin:exchange_ticktable_add")
    data = change_form_data(admin_client.get(url))
    data.update(name="Equities", description="Banded")
    prefix = inline_prefix(data, "bands")
    add_row(data, prefix, from_price="0", tick_size="0.01")
    add_row(data, prefix, from_price="1.00", tick_size="0.05")

    response = admin_client.post(url, data)

    assert response.status_code == 302
    table = TickTable.objects.get()
    assert list(table.bands.values_list("from_price", "tick_size")) == [
        (Decimal(0), Decimal("0.01")),
        (Decimal(1), Decimal("0.05")),
    ]
    assert sorted(
        AuditRecord.objects.filter(actor=admin_user).values_list("action", flat=True)
    ) == ["tickband_create", "tickband_create", "ticktable_create"]


def test_a_band_too_fine_for_a_symbol_using_the_table_is_refused(admin_client, symbol):
    table = tick_table_create(
        name="Equities", bands=[(Decimal(0), Decimal("0.02"))], acting_user=None
    )
    coarse = factories.symbol(symbol.market, "XS02", tick_size=Decimal("0.02"))
    Symbol.objects.filter(pk=coarse.pk).update(tick_table=table)
    url = reverse("admin:exchange_ticktable_change", args=[table.pk])
    data = change_form_data(admin_client.get(url))
    add_row(data, inline_prefix(data, "bands"), from_price="1.00", tick_size="0.05")

    response = admin_client.post(url, data)

    assert response.status_code == 200
    assert (
        "XSX:XS02: The band from 1 has tick 0.05, not a multiple of the tick size 0.02."
        in response.content.decode()
    )
    assert TickBand.objects.count() == 1


def test_a_symbol_takes_a_table_only_if_its_ticks_fit(admin_client, admin_user, symbol):
    fits = tick_table_create(
        name="Fits", bands=[(Decimal(0), Decimal("0.05"))], acting_user=None
    )
    too_fine = tick_table_create(
        name="Too fine", bands=[(Decimal(0), Decimal("0.005"))], acting_user=None
    )
    url = reverse("admin:exchange_symbol_change", args=[symbol.pk])
    data = change_form_data(admin_client.get(url))

    refused = admin_client.post(url, {**data, "tick_table": too_fine.pk})
    accepted = admin_client.post(
        url, {**data, "tick_table": fits.pk, "max_quantity": "1000"}
    )

    assert refused.status_code == 200
    assert refused.context["adminform"].form.errors == {
        "tick_table": [
            "The band from 0 has tick 0.005, not a multiple of the tick size 0.01."
        ]
    }
    assert accepted.status_code == 302
    symbol.refresh_from_db()
    assert (symbol.tick_table, symbol.max_quantity) == (fits, Decimal(1000))
    record = AuditRecord.objects.get(action="symbol_change")
    assert (record.actor, record.changes) == (
        admin_user,
        {"tick_table": [None, str(fits.pk)], "max_quantity": [None, "1000"]},
    )
