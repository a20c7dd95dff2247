"""Trading states as data: the standard set, what each allows at order entry, the
symbol override (suspend/resume, circuit breaker), market control by state code,
and the transition hook."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import transaction
from django.urls import reverse

from exchange import services
from exchange.models import Market, Symbol, TradingState
from exchange.services import (
    market_create,
    market_set_state,
    market_state_set,
    market_transition_hook_register,
    market_transition_hook_unregister,
    symbol_circuit_break,
    symbol_suspend,
    symbols_circuit_break,
)
from exchange.trading import (
    TradingError,
    market_trading_states,
    symbol_trading_state,
    trading_check,
    trading_state_of,
    uncross_due,
)
from registry.models import AuditRecord
from tests import factories
from tests.conftest import client_for
from tests.oms.test_order_rejections import (
    ORDERS,
    assert_rejected_without_change,
    body_for,
)
from tests.registry.test_admin import messages_of

pytestmark = pytest.mark.django_db

S = Market.State
NOW = datetime(2026, 3, 10, 1, 0, tzinfo=UTC)  # Tuesday 12:00 in Sydney


@pytest.fixture
def published(monkeypatch) -> list:
    messages: list = []
    monkeypatch.setattr(services, "publish_on_commit", messages.extend)
    return messages


@pytest.fixture
def staff(db):
    return factories.user("operator", is_staff=True)


@pytest.fixture
def staff_client(staff):
    return client_for(staff)


def set_state(market: Market, code: str) -> None:
    Market.objects.filter(pk=market.pk).update(state=code)


def flags(state: TradingState) -> tuple:
    return (
        state.code,
        state.name,
        state.allows_place,
        state.allows_amend,
        state.allows_cancel,
        state.allows_match,
        state.is_auction,
        state.uncross_on_entry,
    )


# -- the standard states ---------------------------------------------------------------


def test_market_create_gives_the_market_the_standard_states(admin_user):
    market = market_create(
        code="XNZ",
        name="NZ",
        currency=factories.currency(),
        timezone_name="Pacific/Auckland",
        acting_user=admin_user,
    )
    states = [flags(s) for s in market.trading_states.order_by("code")]
    assert states == [
        ("closed", "Closed", False, False, True, False, False, True),
        ("closing_auction", "Closing auction", True, True, True, False, True, False),
        ("halted", "Halted", False, False, True, False, False, False),
        ("open", "Open", True, True, True, True, False, True),
        ("opening_auction", "Opening auction", False, False, False, False, True, False),
        ("pre_open", "Pre-open", True, True, True, False, True, False),
    ]


def test_a_market_cannot_be_put_in_a_state_it_does_not_have(market):
    from django.core.exceptions import ValidationError

    market.state = "lunch"
    with pytest.raises(ValidationError) as error:
        market.full_clean()
    assert error.value.message_dict == {
        "state": ["'lunch' is not a trading state of this market."]
    }


@pytest.mark.parametrize(
    ("previous", "new", "due"),
    [
        (S.PRE_OPEN, S.OPEN, True),
        (S.OPENING_AUCTION, S.OPEN, True),
        (S.CLOSING_AUCTION, S.CLOSED, True),
        (S.PRE_OPEN, S.OPENING_AUCTION, False),
        (S.OPEN, S.CLOSING_AUCTION, False),
        (S.OPEN, S.CLOSED, False),
        (S.HALTED, S.OPEN, False),
    ],
)
def test_an_uncross_is_due_entering_an_uncross_state_from_an_auction(
    market, previous, new, due
):
    states = {s.code: s for s in market.trading_states.all()}
    assert uncross_due(states[previous], states[new]) is due


# -- order entry by state --------------------------------------------------------------


@pytest.mark.parametrize("state", [S.PRE_OPEN, S.OPEN, S.CLOSING_AUCTION])
def test_orders_are_placed_in_states_that_allow_it(
    alice_client, alice_account, market, state
):
    set_state(market, state)
    response = alice_client.post(ORDERS, body_for(alice_account), format="json")
    assert response.status_code == 201, response.json()


@pytest.mark.parametrize(
    ("state", "code", "message"),
    [
        (
            S.OPENING_AUCTION,
            "action_not_allowed",
            "Cannot place an order while market XSX is in Opening auction "
            "(opening_auction).",
        ),
        (S.HALTED, "market_halted", "Market XSX is halted."),
        (S.CLOSED, "market_closed", "Market XSX is closed."),
    ],
)
def test_orders_are_refused_in_states_that_do_not_allow_placing(
    alice_client, alice_account, market, state, code, message
):
    set_state(market, state)
    body = assert_rejected_without_change(
        alice_client, body_for(alice_account), 422, code
    )
    assert body["message"] == message


def test_a_halt_names_its_reason(alice_client, alice_account, market):
    market_set_state(market=market, action="halt", acting_user=None, reason="News")
    body = assert_rejected_without_change(
        alice_client, body_for(alice_account), 422, "market_halted"
    )
    assert body["message"] == "Market XSX is halted: News."


def test_a_state_staff_defined_is_enforced_by_its_flags(
    alice_client, alice_account, market, staff
):
    TradingState.objects.create(
        market=market, code="lunch", name="Lunch break", allows_cancel=True
    )
    market_state_set(market=market, state="lunch", acting_user=staff, reason="Lunch")
    body = assert_rejected_without_change(
        alice_client, body_for(alice_account), 422, "action_not_allowed"
    )
    assert body["message"] == (
        "Cannot place an order while market XSX is in Lunch break (lunch)."
    )
    # Staff allow placing at lunch: the next order goes through.
    TradingState.objects.filter(market=market, code="lunch").update(allows_place=True)
    response = alice_client.post(ORDERS, body_for(alice_account), format="json")
    assert response.status_code == 201


def test_cancels_follow_the_state_too(market, symbol):
    set_state(market, S.HALTED)
    symbol.market.refresh_from_db()
    assert trading_check(symbol, "cancel").code == "halted"
    set_state(market, S.OPENING_AUCTION)
    symbol.market.refresh_from_db()
    with pytest.raises(TradingError) as error:
        trading_check(symbol, "cancel")
    assert (error.value.code, error.value.status) == ("action_not_allowed", 422)


def test_a_delisted_symbol_still_takes_cancels(market, symbol):
    Symbol.objects.filter(pk=symbol.pk).update(status=Symbol.Status.DELISTED)
    symbol.refresh_from_db()
    assert trading_check(symbol, "cancel").code == "open"
    with pytest.raises(TradingError) as error:
        trading_check(symbol, "amend")
    assert error.value.code == "symbol_not_active"


# -- the symbol override -------------------------------------------------------------


def test_a_suspended_symbol_refuses_orders_while_others_trade(
    alice_client, alice_account, market, symbol, staff
):
    other = factories.symbol(market, "XS02")
    factories.account(alice_account.access.first().user, holdings={other: "10"})
    symbol_suspend(symbol=symbol, acting_user=staff, reason="Pending announcement")

    body = assert_rejected_without_change(
        alice_client, body_for(alice_account), 422, "symbol_suspended", "symbol"
    )
    assert body["message"] == "XSX:XS01 is suspended: Pending announcement."
    response = alice_client.post(
        ORDERS, body_for(alice_account, symbol="XSX:XS02"), format="json"
    )
    assert response.status_code == 201
    symbol.refresh_from_db()
    assert symbol_trading_state(symbol).code == "halted"
    assert trading_state_of(market).code == "open"


def test_a_circuit_breaker_halt_refuses_orders_until_it_runs_out(
    alice_client, alice_account, symbol
):
    until = NOW + timedelta(minutes=5)
    with transaction.atomic():
        symbol_circuit_break(symbol=symbol, until=until, reason="Price band")
    with time_machine.travel(NOW, tick=False):
        body = assert_rejected_without_change(
            alice_client, body_for(alice_account), 422, "symbol_halted", "symbol"
        )
    assert body["message"] == (
        "XSX:XS01 is halted until 2026-03-10T01:05:00+00:00: Price band."
    )
    # Order entry ignores a halt that has run out, before the schedule clears it.
    with time_machine.travel(until, tick=False):
        response = alice_client.post(ORDERS, body_for(alice_account), format="json")
    assert response.status_code == 201


def test_a_circuit_break_is_audited_published_and_extends_but_never_shortens(
    symbol, published
):
    first = NOW + timedelta(minutes=5)
    with transaction.atomic():
        returned = symbol_circuit_break(symbol=symbol, until=first, reason="Band")
        symbol_circuit_break(
            symbol=symbol, until=first - timedelta(minutes=1), reason="x"
        )
        symbol_circuit_break(
            symbol=symbol, until=first + timedelta(minutes=1), reason="Band again"
        )

    assert (returned.trading_state, returned.halted_until) == ("halted", first)
    symbol.refresh_from_db()
    assert (symbol.trading_state, symbol.state_reason, symbol.halted_until) == (
        "halted",
        "Band again",
        first + timedelta(minutes=1),
    )
    records = AuditRecord.objects.filter(object_type="exchange.symbol").exclude(
        action="symbol_issue"
    )
    assert list(records.order_by("id").values_list("actor", "action", "reason")) == [
        (None, "symbol_circuit_break", "Band"),
        (None, "symbol_circuit_break", "Band again"),
    ]
    assert [(topic, m["seq"]) for topic, m in published] == [
        ("market.XSX", 1),
        ("market.XSX", 2),
    ]


def test_several_circuit_breaks_in_one_batch_publish_the_market_once(
    market, symbol, published
):
    other = factories.symbol(market, "XS02")
    until = NOW + timedelta(minutes=5)
    with transaction.atomic():
        second, first = symbols_circuit_break(
            breaks=[(other, until, "Band XS02"), (symbol, until, "Band XS01")]
        )
    assert (first.pk, second.pk) == (symbol.pk, other.pk)
    assert (first.trading_state, second.trading_state) == ("halted", "halted")
    ((topic, message),) = published
    assert (topic, message["seq"]) == ("market.XSX", 1)
    assert [row["reason"] for row in message["data"]["symbol_states"]] == [
        "Band XS01",
        "Band XS02",
    ]


def test_a_circuit_break_leaves_a_staff_suspension_open_ended(symbol, staff):
    symbol_suspend(symbol=symbol, acting_user=staff, reason="Staff")
    with transaction.atomic():
        symbol_circuit_break(symbol=symbol, until=NOW, reason="Band")
    symbol.refresh_from_db()
    assert (symbol.state_reason, symbol.halted_until) == ("Staff", None)


def test_suspending_a_circuit_broken_symbol_makes_the_halt_open_ended(symbol, staff):
    with transaction.atomic():
        symbol_circuit_break(symbol=symbol, until=NOW, reason="Band")
    symbol_suspend(symbol=symbol, acting_user=staff, reason="Investigating")
    symbol.refresh_from_db()
    assert (symbol.trading_state, symbol.state_reason, symbol.halted_until) == (
        "halted",
        "Investigating",
        None,
    )


def test_a_batch_reads_every_symbols_state_in_two_queries(
    market, symbol, staff, django_assert_num_queries
):
    halted = factories.symbol(market, "XS02")
    expired = factories.symbol(market, "XS03")
    plain = factories.symbol(market, "XS04")
    symbol_suspend(symbol=halted, acting_user=staff, reason="News")
    with transaction.atomic():
        symbol_circuit_break(symbol=expired, until=NOW, reason="Band")
    set_state(market, S.PRE_OPEN)
    market.refresh_from_db()

    with django_assert_num_queries(2):
        states = market_trading_states(market, NOW)

    assert [
        (states.of(s.pk).code, states.of(s.pk).allows_match, states.of(s.pk).is_auction)
        for s in (symbol, halted, expired, plain)
    ] == [
        ("pre_open", False, True),
        ("halted", False, False),
        ("pre_open", False, True),
        ("pre_open", False, True),
    ]
    assert (
        market_trading_states(market, NOW - timedelta(seconds=1)).of(expired.pk).code
        == "halted"
    )


# -- symbol suspend/resume over REST -------------------------------------------------------


def symbol_row(symbol: Symbol) -> tuple:
    return tuple(
        Symbol.objects.filter(pk=symbol.pk).values_list(
            "trading_state", "state_reason", "halted_until"
        )[0]
    )


def test_staff_suspend_and_resume_a_symbol_over_rest(
    staff_client, staff, symbol, published
):
    suspended = staff_client.post(
        "/api/v1/symbols/XSX:XS01/suspend",
        {"reason": "Pending announcement"},
        format="json",
    )

    assert suspended.status_code == 200, suspended.json()
    body = suspended.json()
    assert (body["id"], body["trading_state"], body["state_reason"]) == (
        "XSX:XS01",
        "halted",
        "Pending announcement",
    )
    assert body["halted_until"] is None
    record = AuditRecord.objects.get(action="symbol_suspend")
    assert (record.actor, record.reason, record.changes) == (
        staff,
        "Pending announcement",
        {"trading_state": ["", "halted"]},
    )
    ((topic, message),) = published
    assert (topic, message["seq"], message["data"]["symbol_states"]) == (
        "market.XSX",
        1,
        [
            {
                "symbol": "XSX:XS01",
                "state": "halted",
                "reason": "Pending announcement",
                "halted_until": None,
            }
        ],
    )

    resumed = staff_client.post(
        "/api/v1/symbols/XSX:XS01/resume", {"reason": "Announced"}, format="json"
    )

    assert resumed.status_code == 200
    assert resumed.json()["trading_state"] is None
    assert symbol_row(symbol) == ("", "", None)
    record = AuditRecord.objects.get(action="symbol_resume")
    assert (record.actor, record.reason, record.changes) == (
        staff,
        "Announced",
        {"trading_state": ["halted", ""]},
    )
    assert published[-1][1]["data"]["symbol_states"] == []


def assert_refused(response, status: int, code: str, symbol: Symbol, before) -> None:
    assert response.status_code == status, response.content
    assert response.json()["code"] == code
    assert symbol_row(symbol) == before
    assert not AuditRecord.objects.filter(
        action__in=["symbol_suspend", "symbol_resume"]
    ).exists()


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("XSX:XS01/suspend", {}, 400, "reason_required"),
        ("XSX:XS01/suspend", {"reason": ""}, 400, "reason_required"),
        ("XSX:XS01/suspend", {"reason": "x" * 201}, 400, "max_length"),
        ("XSX:NOPE/suspend", {"reason": "x"}, 404, "not_found"),
        ("XSX:XS01/resume", {}, 400, "invalid_symbol_action"),
    ],
)
def test_bad_symbol_control_requests_change_nothing(
    staff_client, symbol, published, path, body, status, code
):
    before = symbol_row(symbol)
    response = staff_client.post(f"/api/v1/symbols/{path}", body, format="json")
    assert_refused(response, status, code, symbol, before)
    assert published == []


def test_suspending_twice_is_refused(staff_client, staff, symbol):
    symbol_suspend(symbol=symbol, acting_user=staff, reason="First")
    response = staff_client.post(
        "/api/v1/symbols/XSX:XS01/suspend", {"reason": "Again"}, format="json"
    )
    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid_symbol_action",
        "message": "XSX:XS01 is already suspended (halted).",
    }
    assert AuditRecord.objects.filter(action="symbol_suspend").count() == 1


@pytest.mark.parametrize("action", ["suspend", "resume"])
def test_clients_may_not_control_symbols(alice_client, symbol, action):
    before = symbol_row(symbol)
    response = alice_client.post(
        f"/api/v1/symbols/XSX:XS01/{action}", {"reason": "x"}, format="json"
    )
    assert_refused(response, 403, "permission_denied", symbol, before)


def test_anonymous_callers_may_not_control_symbols(symbol):
    from rest_framework.test import APIClient

    response = APIClient().post(
        "/api/v1/symbols/XSX:XS01/suspend", {"reason": "x"}, format="json"
    )
    assert response.status_code in (401, 403)
    assert symbol_row(symbol) == ("", "", None)


# -- symbol suspend/resume in the admin -------------------------------------------------


SYMBOLS_URL = "admin:exchange_symbol_changelist"


def symbol_action(client, action, symbols, **extra):
    return client.post(
        reverse(SYMBOLS_URL),
        {"action": action, "_selected_action": [s.pk for s in symbols], **extra},
    )


def test_the_suspend_action_asks_for_a_reason_first(admin_client, symbol):
    response = symbol_action(admin_client, "suspend_symbols", [symbol], index=0)
    assert response.status_code == 200
    assert response.templates[0].name == "admin/xchange/symbol_action_confirmation.html"
    assert symbol_row(symbol) == ("", "", None)


def test_suspending_without_a_reason_shows_the_form_error(admin_client, symbol):
    response = symbol_action(
        admin_client, "suspend_symbols", [symbol], confirm="yes", reason=""
    )
    assert response.status_code == 200
    assert response.context["form"].errors == {"reason": ["This field is required."]}
    assert symbol_row(symbol) == ("", "", None)
    assert not AuditRecord.objects.filter(action="symbol_suspend").exists()


def test_staff_suspend_and_resume_symbols_in_the_admin(
    admin_client, admin_user, market, symbol
):
    other = factories.symbol(market, "XS02")

    suspended = symbol_action(
        admin_client, "suspend_symbols", [symbol, other], confirm="yes", reason="Audit"
    )
    again = symbol_action(
        admin_client, "suspend_symbols", [symbol], confirm="yes", reason="Again"
    )
    resumed = symbol_action(admin_client, "resume_symbols", [other], index=0)

    assert (suspended.status_code, again.status_code) == (302, 302)
    assert messages_of(resumed) == [
        "Suspended XSX:XS01, XSX:XS02.",
        "XSX:XS01 is already suspended (halted).",
        "Resumed XSX:XS02.",
    ]
    assert symbol_row(symbol) == ("halted", "Audit", None)
    assert symbol_row(other) == ("", "", None)
    assert list(
        AuditRecord.objects.filter(action__startswith="symbol_s")
        .exclude(action="symbol_issue")
        .order_by("id")
        .values_list("actor", "action", "object_id", "reason")
    ) == [
        (admin_user.pk, "symbol_suspend", str(symbol.pk), "Audit"),
        (admin_user.pk, "symbol_suspend", str(other.pk), "Audit"),
    ]


# -- market state by code ------------------------------------------------------------


def test_staff_set_any_state_over_rest(staff_client, staff, market, published):
    response = staff_client.post(
        "/api/v1/markets/XSX/state",
        {"state": "pre_open", "reason": "Late start"},
        format="json",
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    assert (
        body["state"],
        body["state_name"],
        body["state_reason"],
        body["allows_place"],
        body["is_auction"],
    ) == ("pre_open", "Pre-open", "Late start", True, True)
    market.refresh_from_db()
    assert (market.state, market.state_reason) == ("pre_open", "Late start")
    record = AuditRecord.objects.get(action="market_state_set")
    assert (record.actor, record.reason, record.changes) == (
        staff,
        "Late start",
        {"state": ["open", "pre_open"]},
    )
    assert [(t, m["seq"], m["data"]["state"]) for t, m in published] == [
        ("market.XSX", 1, "pre_open")
    ]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"state": "lunch", "reason": "x"}, 400, "unknown_state"),
        ({"state": "open", "reason": "x"}, 400, "invalid_market_action"),
        ({"state": "closed"}, 400, "reason_required"),
        ({"reason": "x"}, 400, "required"),
        ({"state": "", "reason": "x"}, 400, "blank"),
    ],
)
def test_bad_state_requests_change_nothing(
    staff_client, market, published, body, status, code
):
    response = staff_client.post("/api/v1/markets/XSX/state", body, format="json")
    assert response.status_code == status
    assert response.json()["code"] == code
    market.refresh_from_db()
    assert (market.state, market.state_reason) == ("open", "")
    assert not AuditRecord.objects.filter(object_type="exchange.market").exists()
    assert published == []


def test_clients_may_not_set_market_states(alice_client, market):
    response = alice_client.post(
        "/api/v1/markets/XSX/state", {"state": "closed", "reason": "x"}, format="json"
    )
    assert response.status_code == 403
    market.refresh_from_db()
    assert market.state == "open"


def test_unknown_markets_are_not_found(staff_client, market):
    response = staff_client.post(
        "/api/v1/markets/NOPE/state", {"state": "closed", "reason": "x"}, format="json"
    )
    assert response.status_code == 404


def test_the_old_actions_work_from_the_new_states(staff_client, market):
    set_state(market, S.CLOSING_AUCTION)
    halted = staff_client.post(
        "/api/v1/markets/XSX/halt", {"reason": "Glitch"}, format="json"
    )
    resumed = staff_client.post("/api/v1/markets/XSX/resume", {}, format="json")
    closed = staff_client.post("/api/v1/markets/XSX/close", {}, format="json")
    reopened = staff_client.post("/api/v1/markets/XSX/open", {}, format="json")
    assert [r.json()["state"] for r in (halted, resumed, closed, reopened)] == [
        "halted",
        "open",
        "closed",
        "open",
    ]
    refused = staff_client.post("/api/v1/markets/XSX/open", {}, format="json")
    assert (refused.status_code, refused.json()["message"]) == (
        400,
        "Cannot open market XSX: it is open.",
    )


def test_the_set_state_admin_action(admin_client, admin_user, market):
    other = factories.market("XNZ")
    asked = admin_client.post(
        reverse("admin:exchange_market_changelist"),
        {"action": "set_state_markets", "_selected_action": [market.pk], "index": 0},
    )
    assert asked.status_code == 200
    choices = asked.context["form"].fields["state"].choices
    assert [code for code, _ in choices] == [
        "closed",
        "closing_auction",
        "halted",
        "open",
        "opening_auction",
        "pre_open",
    ]

    done = admin_client.post(
        reverse("admin:exchange_market_changelist"),
        {
            "action": "set_state_markets",
            "_selected_action": [market.pk, other.pk],
            "confirm": "yes",
            "state": "closing_auction",
            "reason": "Early close",
        },
    )

    assert messages_of(done) == ["Set the state of XNZ, XSX."]
    assert dict(Market.objects.values_list("code", "state")) == {
        "XNZ": "closing_auction",
        "XSX": "closing_auction",
    }
    assert list(
        AuditRecord.objects.filter(action="market_state_set").values_list(
            "actor", "reason"
        )
    ) == [(admin_user.pk, "Early close"), (admin_user.pk, "Early close")]


# -- the transition hook ---------------------------------------------------------------


@pytest.fixture
def hook_calls():
    calls: list[Any] = []

    def hook(market, previous, new, now):
        # Inside the transaction, with the market row saved.
        assert transaction.get_connection().in_atomic_block
        assert Market.objects.get(pk=market.pk).state == new.code
        calls.append((market.code, flags(previous)[0], flags(new)[0], now))

    market_transition_hook_register(hook)
    market_transition_hook_register(hook)  # once only
    yield calls
    market_transition_hook_unregister(hook)


def test_every_kind_of_state_change_calls_the_hook(
    hook_calls, staff_client, staff, market
):
    with time_machine.travel(NOW, tick=False):
        market_set_state(market=market, action="close", acting_user=staff)
        staff_client.post(
            "/api/v1/markets/XSX/state",
            {"state": "pre_open", "reason": "Auction"},
            format="json",
        )
        staff_client.post("/api/v1/markets/XSX/open", {}, format="json")
    assert hook_calls == [
        ("XSX", "open", "closed", NOW),
        ("XSX", "closed", "pre_open", NOW),
        ("XSX", "pre_open", "open", NOW),
    ]


def test_a_failing_hook_rolls_the_change_back(market, staff, published):
    def hook(market, previous, new, now):
        raise RuntimeError("refused")

    market_transition_hook_register(hook)
    try:
        with pytest.raises(RuntimeError):
            market_set_state(market=market, action="close", acting_user=staff)
    finally:
        market_transition_hook_unregister(hook)
    market.refresh_from_db()
    assert market.state == "open"
    assert not AuditRecord.objects.filter(action="market_close").exists()
