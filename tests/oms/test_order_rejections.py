"""The bad-input matrix of REST order entry.

Every bad request gets the right 4xx status and a JSON ``{"code", "message"}``
(``field`` where there is one), and changes nothing: no order, no order event, no
matching request, no journal entry or posting, no stream sequence, and every
balance row exactly as it was. No matching worker runs here: orders stay pending.
"""

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone
from rest_framework.test import APIClient

from exchange.models import Holiday, Market, StreamSequence, Symbol
from exchange.services import market_set_state
from oms.errors import OrderError
from oms.models import Order, OrderEvent, OrderRequest
from oms.services import order_cancel
from registry.models import AccountAccess, Balance, JournalEntry, Posting
from registry.services import account_access_grant
from tests import factories

pytestmark = pytest.mark.django_db

ORDERS = "/api/v1/orders"
MISSING = object()


def snapshot() -> dict[str, Any]:
    """Everything order entry may write, in full."""
    return {
        "orders": list(
            Order.objects.order_by("pk").values_list(
                "pk", "status", "quantity", "price", "held_amount", "client_order_id"
            )
        ),
        "events": list(
            OrderEvent.objects.order_by("pk").values_list("pk", "to_status")
        ),
        "requests": list(
            OrderRequest.objects.order_by("pk").values_list(
                "pk", "order_id", "kind", "processed_at"
            )
        ),
        "entries": list(
            JournalEntry.objects.order_by("pk").values_list("pk", "kind", "reference")
        ),
        "postings": Posting.objects.count(),
        "balances": list(
            Balance.objects.order_by("account_id", "asset_id").values_list(
                "account_id", "asset_id", "available", "held", "unsettled", "cost"
            )
        ),
        "streams": list(
            StreamSequence.objects.order_by("topic").values_list("topic", "seq")
        ),
    }


def body_for(account, /, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "account": account.pk,
        "symbol": "XSX:XS01",
        "side": "buy",
        "type": "limit",
        "time_in_force": "gtc",
        "price": "10.00",
        "quantity": "100",
    }
    for key, value in changes.items():
        if value is MISSING:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def assert_error(
    response, status: int, code: str, field: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.content)
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    if field is not None:
        assert body.get("field") == field, body
    return body


def assert_rejected_without_change(
    client, payload: Any, status: int, code: str, field: str | None = None
) -> dict[str, Any]:
    before = snapshot()
    response = client.post(ORDERS, payload, format="json")
    body = assert_error(response, status, code, field)
    assert snapshot() == before
    return body


def test_the_base_body_is_accepted(alice_client, alice_account):
    """The matrix below changes one thing in this body; unchanged, it is a good order."""
    response = alice_client.post(ORDERS, body_for(alice_account), format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["status"] == "pending"


# -- malformed and off-grid requests (400) ----------------------------------------------

BAD_REQUESTS = [
    # symbol
    ("unknown symbol", {"symbol": "XSX:NOPE"}, "unknown_symbol", "symbol"),
    ("unknown market", {"symbol": "ASX:XS01"}, "unknown_symbol", "symbol"),
    ("symbol without market", {"symbol": "XS01"}, "unknown_symbol", "symbol"),
    ("symbol without code", {"symbol": "XSX:"}, "unknown_symbol", "symbol"),
    ("symbol without market code", {"symbol": ":XS01"}, "unknown_symbol", "symbol"),
    ("symbol with two colons", {"symbol": "XSX:XS01:X"}, "unknown_symbol", "symbol"),
    ("blank symbol", {"symbol": ""}, "blank", "symbol"),
    ("symbol too long", {"symbol": "XSX:" + "X" * 40}, "max_length", "symbol"),
    ("missing symbol", {"symbol": MISSING}, "required", "symbol"),
    # price
    ("price off tick", {"price": "10.005"}, "price_off_tick", "price"),
    (
        "price off tick, tenth decimal",
        {"price": "10.0000000001"},
        "price_off_tick",
        "price",
    ),
    ("price zero", {"price": "0"}, "invalid_price", "price"),
    ("price negative", {"price": "-10.00"}, "invalid_price", "price"),
    ("price not a number", {"price": "abc"}, "invalid", "price"),
    ("price empty string", {"price": ""}, "invalid", "price"),
    ("price with exponent", {"price": "1e1"}, "invalid", "price"),
    ("price NaN", {"price": "NaN"}, "invalid", "price"),
    ("price Infinity", {"price": "Infinity"}, "invalid", "price"),
    ("price too precise", {"price": "10.00000000001"}, "too_precise", "price"),
    ("price as JSON float", {"price": 10.05}, "not_a_string", "price"),
    ("price as JSON integer", {"price": 10}, "not_a_string", "price"),
    ("price missing on limit", {"price": MISSING}, "price_required", "price"),
    ("price null on limit", {"price": None}, "price_required", "price"),
    # quantity
    ("quantity zero", {"quantity": "0"}, "invalid_quantity", "quantity"),
    ("quantity negative", {"quantity": "-5"}, "invalid_quantity", "quantity"),
    ("quantity not a number", {"quantity": "abc"}, "invalid", "quantity"),
    ("quantity empty string", {"quantity": ""}, "invalid", "quantity"),
    ("quantity as JSON number", {"quantity": 100}, "not_a_string", "quantity"),
    ("quantity as JSON float", {"quantity": 100.0}, "not_a_string", "quantity"),
    ("quantity off the lot grid", {"quantity": "1.5"}, "quantity_off_lot", "quantity"),
    ("quantity missing", {"quantity": MISSING}, "required", "quantity"),
    ("quantity null", {"quantity": None}, "null", "quantity"),
    # type, side, time in force
    (
        "price on a market order",
        {"type": "market", "time_in_force": "ioc"},
        "price_not_allowed",
        "price",
    ),
    (
        "market order good till cancelled",
        {"type": "market", "time_in_force": "gtc", "price": MISSING},
        "invalid_time_in_force",
        "time_in_force",
    ),
    ("side hold", {"side": "hold"}, "invalid_choice", "side"),
    ("side missing", {"side": MISSING}, "required", "side"),
    ("side upper case", {"side": "BUY"}, "invalid_choice", "side"),
    ("unknown type", {"type": "stop_market"}, "invalid_choice", "type"),
    (
        "unsupported time in force",
        {"time_in_force": "gtx"},
        "invalid_choice",
        "time_in_force",
    ),
    # stops and trailing stops
    (
        "stop-limit without stop price",
        {"type": "stop_limit"},
        "stop_price_required",
        "stop_price",
    ),
    (
        "stop without stop price",
        {"type": "stop", "price": MISSING, "time_in_force": "ioc"},
        "stop_price_required",
        "stop_price",
    ),
    (
        "stop with a price",
        {"type": "stop", "stop_price": "9.00", "time_in_force": "ioc"},
        "price_not_allowed",
        "price",
    ),
    (
        "stop price on a limit",
        {"stop_price": "9.00"},
        "stop_price_not_allowed",
        "stop_price",
    ),
    (
        "stop price off tick",
        {"type": "stop_limit", "stop_price": "9.001"},
        "price_off_tick",
        "stop_price",
    ),
    (
        "stop price zero",
        {"type": "stop_limit", "stop_price": "0"},
        "invalid_price",
        "stop_price",
    ),
    (
        "market good till cancelled",
        {"type": "market", "price": MISSING},
        "invalid_time_in_force",
        "time_in_force",
    ),
    (
        "trailing stop without trail",
        {"type": "trailing_stop", "price": MISSING, "time_in_force": "ioc"},
        "trail_required",
        "trail_amount",
    ),
    (
        "trailing stop with both trails",
        {
            "type": "trailing_stop",
            "price": MISSING,
            "time_in_force": "ioc",
            "trail_amount": "0.10",
            "trail_bps": 50,
        },
        "trail_required",
        "trail_amount",
    ),
    (
        "trail bps out of range",
        {
            "type": "trailing_stop",
            "price": MISSING,
            "time_in_force": "ioc",
            "trail_bps": 10000,
        },
        "invalid_trail",
        "trail_bps",
    ),
    (
        "trail amount off tick",
        {
            "type": "trailing_stop",
            "price": MISSING,
            "time_in_force": "ioc",
            "trail_amount": "0.105",
        },
        "price_off_tick",
        "trail_amount",
    ),
    ("trail on a limit", {"trail_bps": 10}, "trail_not_allowed", "trail_bps"),
    ("trigger on a limit", {"trigger": "bid"}, "trigger_not_allowed", "trigger"),
    ("unknown trigger", {"trigger": "mid"}, "invalid_choice", "trigger"),
    (
        "market-to-limit IOC",
        {"type": "market_to_limit", "price": MISSING, "time_in_force": "ioc"},
        "invalid_time_in_force",
        "time_in_force",
    ),
    # expiry
    (
        "GTD without expire_at",
        {"time_in_force": "gtd"},
        "expire_at_required",
        "expire_at",
    ),
    (
        "GTD in the past",
        {"time_in_force": "gtd", "expire_at": "2020-01-01T00:00:00Z"},
        "expire_at_in_past",
        "expire_at",
    ),
    (
        "expire_at on GTC",
        {"expire_at": "2099-01-01T00:00:00Z"},
        "expire_at_not_allowed",
        "expire_at",
    ),
    (
        "expire_at not a date",
        {"time_in_force": "gtd", "expire_at": "soon"},
        "invalid",
        "expire_at",
    ),
    # iceberg, post-only, minimum quantity, self-trade prevention, OCO
    (
        "iceberg IOC",
        {"time_in_force": "ioc", "display_quantity": "10"},
        "display_not_allowed",
        "display_quantity",
    ),
    (
        "iceberg display not below quantity",
        {"display_quantity": "100"},
        "invalid_display_quantity",
        "display_quantity",
    ),
    (
        "iceberg display zero",
        {"display_quantity": "0"},
        "invalid_quantity",
        "display_quantity",
    ),
    (
        "iceberg display as a JSON number",
        {"display_quantity": 10},
        "not_a_string",
        "display_quantity",
    ),
    (
        "post-only IOC",
        {"time_in_force": "ioc", "post_only": "reject"},
        "post_only_not_allowed",
        "post_only",
    ),
    ("unknown post-only", {"post_only": "maybe"}, "invalid_choice", "post_only"),
    (
        "minimum above quantity",
        {"min_quantity": "101"},
        "invalid_min_quantity",
        "min_quantity",
    ),
    (
        "unknown self-trade prevention",
        {"self_trade_prevention": "cancel_all"},
        "invalid_choice",
        "self_trade_prevention",
    ),
    ("oco_with zero", {"oco_with": 0}, "min_value", "oco_with"),
    # account and client order id
    ("account not a number", {"account": "abc"}, "invalid", "account"),
    ("account zero", {"account": 0}, "min_value", "account"),
    ("account missing", {"account": MISSING}, "required", "account"),
    ("blank client_order_id", {"client_order_id": ""}, "blank", "client_order_id"),
    (
        "client_order_id too long",
        {"client_order_id": "x" * 65},
        "max_length",
        "client_order_id",
    ),
]


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_request_is_400_and_changes_nothing(
    alice_client, alice_account, changes, code, field
):
    assert_rejected_without_change(
        alice_client, body_for(alice_account, **changes), 400, code, field
    )


def test_a_body_that_is_not_an_object_is_400(alice_client, alice_account):
    assert_rejected_without_change(
        alice_client, [body_for(alice_account)], 400, "invalid"
    )


@pytest.fixture
def board_lot_symbol(market):
    """Traded in lots of 10 with a minimum of 100."""
    return factories.symbol(
        market, "XS02", lot_size=Decimal(10), min_quantity=Decimal(100)
    )


@pytest.mark.parametrize(
    ("quantity", "code"),
    [
        ("15", "quantity_off_lot"),
        ("105", "quantity_off_lot"),
        ("50", "quantity_below_minimum"),
        ("90", "quantity_below_minimum"),
    ],
)
def test_quantity_must_be_on_the_lot_grid_and_at_least_the_minimum(
    alice_client, alice_account, board_lot_symbol, quantity, code
):
    body = body_for(alice_account, symbol="XSX:XS02", quantity=quantity)
    assert_rejected_without_change(alice_client, body, 400, code, "quantity")
    # and the smallest good quantity is accepted
    good = alice_client.post(
        ORDERS,
        body_for(alice_account, symbol="XSX:XS02", quantity="100"),
        format="json",
    )
    assert good.status_code == 201, good.json()


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_an_oversized_price_is_a_client_error(alice_client, alice_account, side):
    body = body_for(alice_account, side=side, price="1000000000000.00", quantity="1")
    assert_rejected_without_change(alice_client, body, 400, "too_large", "price")


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_an_oversized_quantity_is_a_client_error(alice_client, alice_account, side):
    body = body_for(alice_account, side=side, quantity="1" + "0" * 21)
    assert_rejected_without_change(alice_client, body, 400, "too_large", "quantity")


@pytest.mark.parametrize(
    ("price", "quantity"),
    [("100000000000.00", "1" + "0" * 10), ("100000000000.00", "1" + "0" * 19)],
    ids=["held_amount overflow", "decimal context overflow"],
)
def test_a_reservation_too_large_to_store_is_a_client_error(
    alice_client, alice_account, price, quantity
):
    body = body_for(alice_account, price=price, quantity=quantity)
    assert_rejected_without_change(
        alice_client, body, 422, "order_too_large", "quantity"
    )


# -- who may trade the account (401/403) ------------------------------------------------


def test_unauthenticated_request_is_refused(alice_account):
    before = snapshot()
    response = APIClient().post(ORDERS, body_for(alice_account), format="json")
    assert response.status_code in (401, 403)
    assert response.json()["code"] == "not_authenticated"
    assert response.json()["message"]
    assert snapshot() == before


def test_an_account_of_someone_else_is_forbidden(alice_client, bob_account):
    assert_rejected_without_change(
        alice_client, body_for(bob_account), 403, "account_forbidden", "account"
    )


@pytest.mark.parametrize(
    "account_id", [999_999, 2**63], ids=["no such account", "beyond bigint"]
)
def test_an_account_that_does_not_exist_is_forbidden(
    alice_client, alice_account, account_id
):
    body = body_for(alice_account, account=account_id)
    assert_rejected_without_change(
        alice_client, body, 403, "account_forbidden", "account"
    )


def test_a_viewer_may_not_trade(alice, alice_client, symbol):
    viewed = factories.account(
        alice, cash="10000.00", holdings={symbol: "100"}, role="viewer"
    )
    for side in ("buy", "sell"):
        body = body_for(viewed, side=side, quantity="10")
        assert_rejected_without_change(
            alice_client, body, 403, "account_forbidden", "account"
        )


def test_a_viewer_role_on_someone_elses_account_does_not_let_you_trade_it(
    alice, alice_client, bob_account
):
    account_access_grant(
        account=bob_account,
        user=alice,
        role=AccountAccess.Role.VIEWER,
        acting_user=None,
    )
    assert_rejected_without_change(
        alice_client, body_for(bob_account), 403, "account_forbidden", "account"
    )


def test_a_suspended_account_may_not_trade(alice_client, alice_account):
    alice_account.status = "suspended"
    alice_account.save(update_fields=["status"])
    assert_rejected_without_change(
        alice_client, body_for(alice_account), 422, "account_inactive", "account"
    )


# -- vetting (422) --------------------------------------------------------------------


def test_insufficient_funds(alice_client, alice_account):
    # 10 000.00 cash: 1000 at 10.00 fits exactly (no fees on this market), 1001 does not
    body = body_for(alice_account, price="10.00", quantity="1001")
    assert_rejected_without_change(alice_client, body, 422, "insufficient_funds")


def test_insufficient_funds_counts_what_open_orders_hold(alice_client, alice_account):
    first = alice_client.post(
        ORDERS, body_for(alice_account, quantity="600"), format="json"
    )
    assert first.status_code == 201
    body = body_for(alice_account, quantity="401")
    assert_rejected_without_change(alice_client, body, 422, "insufficient_funds")


def test_insufficient_holdings(alice_client, alice_account):
    body = body_for(alice_account, side="sell", quantity="1001")
    assert_rejected_without_change(alice_client, body, 422, "insufficient_holdings")


def test_selling_a_security_never_held(alice_client, alice_account, market):
    factories.symbol(market, "XS03")
    body = body_for(alice_account, symbol="XSX:XS03", side="sell", quantity="1")
    assert_rejected_without_change(alice_client, body, 422, "insufficient_holdings")


def test_a_market_order_with_no_reference_price(alice_client, alice_account):
    body = body_for(alice_account, type="market", time_in_force="ioc", price=MISSING)
    assert_rejected_without_change(alice_client, body, 422, "no_reference_price")


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_halted_market(alice_client, alice_account, market, side):
    market_set_state(
        market=market, action="halt", acting_user=None, reason="volatility"
    )
    body = body_for(alice_account, side=side)
    assert_rejected_without_change(alice_client, body, 422, "market_halted")


def test_closed_market(alice_client, alice_account, market):
    market_set_state(market=market, action="close", acting_user=None)
    assert_rejected_without_change(
        alice_client, body_for(alice_account), 422, "market_closed"
    )


def test_pre_open_market_accepts_orders(alice_client, alice_account, market):
    # Pre-open is the auction's call phase: orders are placed, not matched.
    Market.objects.filter(pk=market.pk).update(state=Market.State.PRE_OPEN)
    response = alice_client.post(ORDERS, body_for(alice_account), format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["status"] == "pending"


def test_opening_auction_freeze(alice_client, alice_account, market):
    Market.objects.filter(pk=market.pk).update(state=Market.State.OPENING_AUCTION)
    assert_rejected_without_change(
        alice_client, body_for(alice_account), 422, "action_not_allowed"
    )


def test_holiday_today_in_the_market_timezone(alice_client, alice_account, market):
    today = timezone.now().astimezone(market.tzinfo).date()
    Holiday.objects.create(market=market, date=today, name="Test holiday")
    assert_rejected_without_change(
        alice_client, body_for(alice_account), 422, "market_holiday"
    )


def test_the_holiday_is_the_market_date_not_the_utc_date(
    alice_client, alice_account, market
):
    # 14:00 UTC on 2 March 2026 is 01:00 on 3 March in Sydney (AEDT, UTC+11)
    with time_machine.travel(datetime(2026, 3, 2, 14, 0, tzinfo=UTC), tick=False):
        holiday = Holiday.objects.create(
            market=market, date="2026-03-03", name="Sydney date"
        )
        assert_rejected_without_change(
            alice_client, body_for(alice_account), 422, "market_holiday"
        )
        holiday.delete()
        Holiday.objects.create(market=market, date="2026-03-02", name="UTC date")
        accepted = alice_client.post(ORDERS, body_for(alice_account), format="json")
        assert accepted.status_code == 201, accepted.json()


@pytest.mark.parametrize("status", [Symbol.Status.SUSPENDED, Symbol.Status.DELISTED])
def test_symbol_not_active(alice_client, alice_account, symbol, status):
    Symbol.objects.filter(pk=symbol.pk).update(status=status)
    assert_rejected_without_change(
        alice_client, body_for(alice_account), 422, "symbol_not_active", "symbol"
    )


# -- idempotency (client_order_id) ----------------------------------------------------


def test_resubmitting_the_same_body_returns_the_original_order(
    alice_client, alice_account
):
    body = body_for(alice_account, client_order_id="abc-1")
    first = alice_client.post(ORDERS, body, format="json")
    assert first.status_code == 201, first.json()
    after_first = snapshot()

    for resubmission in (
        body,
        {**body, "price": "10.0", "quantity": "100.0"},
        {k: v for k, v in body.items() if k not in ("type", "time_in_force")},
    ):
        again = alice_client.post(ORDERS, resubmission, format="json")
        assert again.status_code == 200, again.json()
        assert again.json()["id"] == first.json()["id"]
        assert again.json() == first.json()
    assert snapshot() == after_first
    assert Order.objects.filter(account=alice_account).count() == 1
    assert JournalEntry.objects.filter(kind="hold").count() == 1
    assert OrderRequest.objects.count() == 1
    assert Balance.objects.get(
        account=alice_account, asset__code="AUD"
    ).held == Decimal("1000.00")


@pytest.mark.parametrize(
    "changes",
    [
        {"price": "10.01"},
        {"quantity": "101"},
        {"side": "sell"},
        {"time_in_force": "ioc"},
        {"type": "market", "time_in_force": "ioc", "price": MISSING},
        {"price": "10.005"},
    ],
    ids=["price", "quantity", "side", "time_in_force", "type", "invalid price"],
)
def test_the_same_client_order_id_with_a_different_body_is_409(
    alice_client, alice_account, changes
):
    first = alice_client.post(
        ORDERS, body_for(alice_account, client_order_id="abc-1"), format="json"
    )
    assert first.status_code == 201
    body = body_for(alice_account, client_order_id="abc-1", **changes)
    assert_rejected_without_change(
        alice_client, body, 409, "duplicate_client_order_id", "client_order_id"
    )


def test_a_client_order_id_is_unique_per_account_only(
    alice, alice_client, alice_account
):
    other = factories.account(alice, cash="10000.00")
    first = alice_client.post(
        ORDERS, body_for(alice_account, client_order_id="abc-1"), format="json"
    )
    second = alice_client.post(
        ORDERS, body_for(other, client_order_id="abc-1"), format="json"
    )
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]


def test_a_client_order_id_of_another_users_account_is_not_revealed(
    alice_client, bob_client, bob_account
):
    placed = bob_client.post(
        ORDERS, body_for(bob_account, client_order_id="abc-1"), format="json"
    )
    assert placed.status_code == 201
    body = body_for(bob_account, client_order_id="abc-1")
    assert_rejected_without_change(
        alice_client, body, 403, "account_forbidden", "account"
    )


# -- cancel (DELETE) ------------------------------------------------------------------


@pytest.fixture
def bobs_order(bob_client, bob_account) -> int:
    response = bob_client.post(
        ORDERS, body_for(bob_account, side="sell"), format="json"
    )
    assert response.status_code == 201
    return response.json()["id"]


@pytest.fixture
def alices_order(alice_client, alice_account) -> int:
    response = alice_client.post(ORDERS, body_for(alice_account), format="json")
    assert response.status_code == 201
    return response.json()["id"]


def assert_delete_refused(client, path: str, status: int, code: str) -> None:
    before = snapshot()
    assert_error(client.delete(path), status, code)
    assert snapshot() == before


def test_cancelling_someone_elses_order_is_404(alice_client, bobs_order):
    assert_delete_refused(
        alice_client, f"{ORDERS}/{bobs_order}", 404, "order_not_found"
    )


@pytest.mark.parametrize("pk", ["999999", "abc", "99999999999999999999"])
def test_cancelling_an_order_that_does_not_exist_is_404(alice_client, alices_order, pk):
    assert_delete_refused(alice_client, f"{ORDERS}/{pk}", 404, "order_not_found")


def test_a_viewer_may_not_cancel(alice, alice_client, bob_account, bobs_order):
    account_access_grant(
        account=bob_account,
        user=alice,
        role=AccountAccess.Role.VIEWER,
        acting_user=None,
    )
    assert_delete_refused(
        alice_client, f"{ORDERS}/{bobs_order}", 403, "account_forbidden"
    )


def test_cancelling_unauthenticated_is_refused(alices_order):
    before = snapshot()
    response = APIClient().delete(f"{ORDERS}/{alices_order}")
    assert response.status_code in (401, 403)
    assert response.json()["code"] == "not_authenticated"
    assert snapshot() == before


@pytest.mark.parametrize("status", ["filled", "cancelled", "rejected", "expired"])
def test_cancelling_a_terminal_order_is_409(alice_client, alices_order, status):
    Order.objects.filter(pk=alices_order).update(status=status, held_amount=0)
    assert_delete_refused(
        alice_client, f"{ORDERS}/{alices_order}", 409, "order_not_open"
    )


def test_a_repeated_cancel_queues_one_cancel_request(alice_client, alices_order):
    first = alice_client.delete(f"{ORDERS}/{alices_order}")
    assert first.status_code == 202
    after_first = snapshot()
    second = alice_client.delete(f"{ORDERS}/{alices_order}")
    assert second.status_code == 202
    assert snapshot() == after_first
    assert (
        OrderRequest.objects.filter(order_id=alices_order, kind="cancel").count() == 1
    )


def test_an_anonymous_cancel_is_refused_even_for_an_account_nobody_may_access(
    alices_order,
):
    # given an open order on an account whose access rows are gone
    AccountAccess.objects.filter(account__orders__pk=alices_order).delete()
    before = snapshot()

    # when the service is asked by someone who is not signed in
    with pytest.raises(OrderError) as refused:
        order_cancel(user=AnonymousUser(), order_id=alices_order)

    # then it is refused as unauthenticated (no ``user_id IS NULL`` match) and
    # nothing changed
    assert (refused.value.code, refused.value.status) == ("not_authenticated", 401)
    assert snapshot() == before
