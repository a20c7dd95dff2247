"""Withdrawals over REST: request, approve (maker-checker), reject, cancel, limits."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone
from oauth2_provider.models import AccessToken, Application
from rest_framework.test import APIClient

from registry.models import (
    Account,
    AccountAccess,
    AuditRecord,
    Transfer,
    WithdrawalLimit,
)
from registry.services import RegistryError
from registry.transfers import (
    cash_deposit,
    withdrawal_approve,
    withdrawal_cancel,
    withdrawal_request,
)
from tests import factories
from tests.conftest import (
    assert_trading_consistent,
    balance_of,
    client_for,
)
from tests.registry.helpers import postings_of, registry_state

pytestmark = pytest.mark.django_db


@pytest.fixture
def maker(db):
    return factories.user("maker", is_staff=True)


@pytest.fixture
def checker(db):
    return factories.user("checker", is_staff=True)


def withdraw(client, account, key="w-1", **body):
    body.setdefault("amount", "100.00")
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(
        f"/api/v1/accounts/{account.pk}/withdrawals",
        body,
        format="json",
        headers=headers,
    )


def decide(client, transfer_id, decision, reason=""):
    body = {"reason": reason} if reason else {}
    return client.post(
        f"/api/v1/transfers/{transfer_id}/{decision}", body, format="json"
    )


def cash(account):
    balance = balance_of(account, account.currency)
    return balance.available, balance.held


def audit_of(transfer):
    return list(
        AuditRecord.objects.filter(
            object_type="registry.transfer", object_id=str(transfer.pk)
        )
        .order_by("id")
        .values_list("action", "actor__username", "reason")
    )


def integration_client(owner, token="integration-token") -> APIClient:
    application = Application.objects.create(
        name=f"{owner.username} integration",
        user=owner,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
    )
    AccessToken.objects.create(
        token=token,
        application=application,
        user=None,
        expires=timezone.now() + timedelta(hours=1),
        scope="read write",
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


# The life cycle ---------------------------------------------------------------------


def test_a_withdrawal_holds_at_request_and_pays_out_to_the_omnibus_account_on_approval(
    alice, alice_client, alice_account, checker
):
    # when alice asks for 2500.50
    response = withdraw(alice_client, alice_account, amount="2500.50", memo="To bank")

    # then it is pending, and exactly that much is held
    assert response.status_code == 201, response.json()
    body = response.json()
    transfer = Transfer.objects.get(kind="withdrawal")
    assert body == {
        "id": transfer.pk,
        "kind": "withdrawal",
        "status": "pending",
        "account": alice_account.pk,
        "counterparty": None,
        "asset": "AUD",
        "amount": "2500.50",
        "memo": "To bank",
        "decision_reason": "",
        "idempotency_key": "w-1",
        "created_at": transfer.created_at.isoformat(),
        "decided_at": None,
    }
    assert cash(alice_account) == (Decimal("7499.50"), Decimal("2500.50"))
    balances = alice_client.get(f"/api/v1/accounts/{alice_account.pk}/balances")
    assert balances.json() == [
        {
            "asset": "AUD",
            "available": "7499.50",
            "held": "2500.50",
            "unsettled": "0.00",
            "total": "10000.00",
        }
    ]
    assert_trading_consistent()

    # when another staff user approves it
    checker_client = client_for(checker)
    approved = decide(checker_client, transfer.pk, "approve")

    # then the held cash leaves for the omnibus account
    assert approved.status_code == 200, approved.json()
    transfer.refresh_from_db()
    assert transfer.decided_at is not None
    assert approved.json() == {
        **body,
        "status": "completed",
        "decided_at": transfer.decided_at.isoformat(),
        "requested_by": "alice",
        "decided_by": "checker",
    }
    assert cash(alice_account) == (Decimal("7499.50"), Decimal(0))
    omnibus = Account.objects.get(number="SYS-OMNIBUS")
    assert balance_of(omnibus, alice_account.currency).available == Decimal("-7499.50")
    number = alice_account.number
    assert postings_of(transfer) == [
        ("hold", number, "AUD", "available", Decimal("-2500.50")),
        ("hold", number, "AUD", "held", Decimal("2500.50")),
        ("withdrawal", number, "AUD", "held", Decimal("-2500.50")),
        ("withdrawal", "SYS-OMNIBUS", "AUD", "available", Decimal("2500.50")),
    ]
    assert [
        e.acting_user and e.acting_user.username for e in transfer.journal_entries()
    ] == [
        "alice",
        "checker",
    ]
    assert audit_of(transfer) == [
        ("withdrawal_request", "alice", "To bank"),
        ("withdrawal_approve", "checker", ""),
    ]
    assert_trading_consistent()

    # and it cannot be decided again
    state = registry_state()
    for decision in ("approve", "reject"):
        again = decide(checker_client, transfer.pk, decision, reason="again")
        assert again.status_code == 409
        assert again.json() == {
            "code": "transfer_not_pending",
            "message": f"Transfer {transfer.pk} is completed, not pending.",
        }
    assert registry_state() == state


def test_a_rejected_withdrawal_releases_its_hold_and_records_the_reason(
    alice_client, alice_account, checker
):
    transfer_id = withdraw(alice_client, alice_account, amount="300.00").json()["id"]
    checker_client = client_for(checker)

    without_reason = decide(checker_client, transfer_id, "reject")
    assert without_reason.status_code == 400
    assert without_reason.json() == {
        "code": "reason_required",
        "message": "Give the reason for the rejection.",
        "field": "reason",
    }
    assert cash(alice_account) == (Decimal("9700.00"), Decimal("300.00"))

    response = decide(checker_client, transfer_id, "reject", "Bank details differ")

    assert response.status_code == 200
    assert (
        response.json()["status"],
        response.json()["decision_reason"],
        response.json()["decided_by"],
    ) == ("rejected", "Bank details differ", "checker")
    assert cash(alice_account) == (Decimal("10000.00"), Decimal(0))
    transfer = Transfer.objects.get(pk=transfer_id)
    number = alice_account.number
    assert postings_of(transfer) == [
        ("hold", number, "AUD", "available", Decimal("-300.00")),
        ("hold", number, "AUD", "held", Decimal("300.00")),
        ("release", number, "AUD", "available", Decimal("300.00")),
        ("release", number, "AUD", "held", Decimal("-300.00")),
    ]
    assert audit_of(transfer)[-1] == (
        "withdrawal_reject",
        "checker",
        "Bank details differ",
    )
    assert_trading_consistent()


def test_the_requester_may_reject_their_own_withdrawal(maker, alice_account):
    transfer = withdrawal_request(
        account=alice_account,
        asset=alice_account.currency,
        amount=Decimal("50.00"),
        acting_user=maker,
        idempotency_key="k",
        on_behalf=True,
    ).transfer

    response = decide(client_for(maker), transfer.pk, "reject", "Entered in error")

    assert (response.status_code, response.json()["status"]) == (200, "rejected")
    assert cash(alice_account) == (Decimal("10000.00"), Decimal(0))


def test_the_client_cancels_a_pending_withdrawal_and_gets_the_hold_back(
    alice_client, bob_client, alice_account, bob_account, checker
):
    transfer_id = withdraw(alice_client, alice_account, amount="40.00").json()["id"]
    state = registry_state()

    # bob cannot see it, and a client cannot approve
    by_bob = bob_client.post(f"/api/v1/transfers/{transfer_id}/cancel")
    assert (by_bob.status_code, by_bob.json()["code"]) == (404, "transfer_not_found")
    by_client = decide(alice_client, transfer_id, "approve")
    assert (by_client.status_code, by_client.json()["code"]) == (
        403,
        "permission_denied",
    )
    assert registry_state() == state

    response = alice_client.post(f"/api/v1/transfers/{transfer_id}/cancel")

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["decision_reason"]) == (
        "cancelled",
        "Cancelled by the client",
    )
    assert "decided_by" not in response.json()
    assert cash(alice_account) == (Decimal("10000.00"), Decimal(0))
    transfer = Transfer.objects.get(pk=transfer_id)
    assert [entry.kind for entry in transfer.journal_entries()] == ["hold", "release"]
    assert audit_of(transfer)[-1] == (
        "withdrawal_cancel",
        "alice",
        "Cancelled by the client",
    )

    # a finished withdrawal can be neither cancelled nor approved
    state = registry_state()
    again = alice_client.post(f"/api/v1/transfers/{transfer_id}/cancel")
    approve = decide(client_for(checker), transfer_id, "approve")
    assert (again.status_code, again.json()["code"]) == (409, "transfer_not_pending")
    assert (approve.status_code, approve.json()["code"]) == (
        409,
        "transfer_not_pending",
    )
    assert registry_state() == state
    assert_trading_consistent()


def test_a_viewer_may_neither_request_nor_cancel(alice_client, alice_account, bob):
    AccountAccess.objects.create(user=bob, account=alice_account, role="viewer")
    transfer_id = withdraw(alice_client, alice_account).json()["id"]
    state = registry_state()
    bob_client = client_for(bob)

    request = withdraw(bob_client, alice_account, key="bob-1")
    cancel = bob_client.post(f"/api/v1/transfers/{transfer_id}/cancel")

    for response in (request, cancel):
        assert response.status_code == 403
        assert response.json()["code"] == "account_forbidden"
    assert registry_state() == state


def test_approving_an_unknown_transfer_is_404(checker):
    response = decide(client_for(checker), 999999, "approve")

    assert (response.status_code, response.json()) == (
        404,
        {"code": "transfer_not_found", "message": "There is no transfer 999999."},
    )


def test_a_deposit_cannot_be_approved_or_rejected(checker, alice_account):
    deposit = Transfer.objects.get(kind="deposit", account=alice_account)

    response = decide(client_for(checker), deposit.pk, "approve")

    assert (response.status_code, response.json()["code"]) == (
        409,
        "transfer_not_pending",
    )


def test_publishes_the_changed_balance_on_commit(
    alice, alice_account, checker, monkeypatch, django_capture_on_commit_callbacks
):
    from exchange import streams

    sent: list[Any] = []
    monkeypatch.setattr(streams._sender, "submit", sent.extend)

    with django_capture_on_commit_callbacks(execute=True):
        transfer = withdrawal_request(
            account=alice_account,
            asset=alice_account.currency,
            amount=Decimal("25.00"),
            acting_user=alice,
            idempotency_key="pub",
        ).transfer
    with django_capture_on_commit_callbacks(execute=True):
        withdrawal_approve(transfer_id=transfer.pk, acting_user=checker)

    topic = f"balances.acct.{alice_account.pk}"
    assert [(t, m["data"]["available"], m["data"]["held"]) for t, m in sent] == [
        (topic, "9975.00", "25.00"),
        (topic, "9975.00", "0.00"),
    ]
    assert sent[1][1]["seq"] == sent[0][1]["seq"] + 1


# Maker-checker ----------------------------------------------------------------------


def test_staff_cannot_approve_a_withdrawal_they_requested_for_the_client(
    maker, checker, alice_account
):
    transfer = withdrawal_request(
        account=alice_account,
        asset=alice_account.currency,
        amount=Decimal("1000.00"),
        acting_user=maker,
        idempotency_key="phone-1",
        memo="Client phoned",
        on_behalf=True,
    ).transfer
    assert (transfer.status, transfer.requested_by) == ("pending", maker)
    assert cash(alice_account) == (Decimal("9000.00"), Decimal("1000.00"))
    state = registry_state()

    # when the maker approves their own request
    response = decide(client_for(maker), transfer.pk, "approve")

    # then it is refused and nothing changes
    assert response.status_code == 403
    assert response.json() == {
        "code": "maker_checker_violation",
        "message": "A withdrawal must be approved by someone other than its requester.",
    }
    assert registry_state() == state
    transfer.refresh_from_db()
    assert (transfer.status, transfer.decided_by) == ("pending", None)

    # and another staff user may approve it
    response = decide(client_for(checker), transfer.pk, "approve", "Call-back done")
    assert (response.status_code, response.json()["status"]) == (200, "completed")
    assert cash(alice_account) == (Decimal("9000.00"), Decimal(0))
    assert audit_of(transfer) == [
        ("withdrawal_request", "maker", "Client phoned"),
        ("withdrawal_approve", "checker", "Call-back done"),
    ]


def test_a_staff_user_cannot_approve_their_own_withdrawal_as_a_client(checker):
    staff_client_user = factories.user("staffer", is_staff=True)
    account = factories.account(staff_client_user, cash="500.00")
    client = client_for(staff_client_user)
    transfer_id = withdraw(client, account, amount="500.00").json()["id"]

    own = decide(client, transfer_id, "approve")
    other = decide(client_for(checker), transfer_id, "approve")

    assert (own.status_code, own.json()["code"]) == (403, "maker_checker_violation")
    assert (other.status_code, other.json()["status"]) == (200, "completed")


def test_an_integration_token_acts_as_its_owner_so_maker_checker_still_applies(
    maker, checker, alice_account
):
    transfer = withdrawal_request(
        account=alice_account,
        asset=alice_account.currency,
        amount=Decimal("10.00"),
        acting_user=maker,
        idempotency_key="k-1",
        on_behalf=True,
    ).transfer
    makers_integration = integration_client(maker, token="maker-token")
    checkers_integration = integration_client(checker, token="checker-token")

    own = decide(makers_integration, transfer.pk, "approve")
    other = decide(checkers_integration, transfer.pk, "approve")

    assert (own.status_code, own.json()["code"]) == (403, "maker_checker_violation")
    assert other.status_code == 200
    assert other.json()["decided_by"] == "checker"


# Idempotency ------------------------------------------------------------------------


def test_the_same_key_and_body_returns_the_same_withdrawal(
    alice_client, alice_account, checker
):
    first = withdraw(alice_client, alice_account, key="same", amount="70.00")
    state = registry_state()

    again = withdraw(alice_client, alice_account, key="same", amount="70.00")
    in_body = alice_client.post(
        f"/api/v1/accounts/{alice_account.pk}/withdrawals",
        {"amount": "70.00", "idempotency_key": "same"},
        format="json",
    )

    assert (first.status_code, again.status_code, in_body.status_code) == (
        201,
        200,
        200,
    )
    assert again.json() == first.json() == in_body.json()
    assert registry_state() == state

    # still the same transfer after it was approved
    decide(client_for(checker), first.json()["id"], "approve")
    later = withdraw(alice_client, alice_account, key="same", amount="70.00")
    assert (later.status_code, later.json()["id"], later.json()["status"]) == (
        200,
        first.json()["id"],
        "completed",
    )


@pytest.mark.parametrize(
    "changed",
    [{"amount": "70.01"}, {"memo": "other"}, {"asset": "USD"}],
)
def test_the_same_key_with_a_different_body_is_refused(
    alice_client, alice_account, changed
):
    factories.currency("USD")
    withdraw(alice_client, alice_account, key="same", amount="70.00")
    state = registry_state()

    response = withdraw(
        alice_client, alice_account, key="same", **{"amount": "70.00", **changed}
    )

    assert response.status_code == 409
    assert response.json() == {
        "code": "idempotency_key_reused",
        "message": "Idempotency key 'same' was used for a different request.",
        "field": "idempotency_key",
    }
    assert registry_state() == state


def test_keys_are_per_user(alice_client, bob_client, alice_account, bob_account):
    alice_first = withdraw(alice_client, alice_account, key="k")
    bob_first = withdraw(bob_client, bob_account, key="k")

    assert (alice_first.status_code, bob_first.status_code) == (201, 201)
    assert alice_first.json()["id"] != bob_first.json()["id"]


def test_a_key_reused_on_another_account_is_refused(alice, alice_account):
    second = factories.account(alice, cash="100.00")
    client = client_for(alice)
    withdraw(client, alice_account, key="k")

    response = withdraw(client, second, key="k")

    assert (response.status_code, response.json()["code"]) == (
        409,
        "idempotency_key_reused",
    )


@pytest.mark.parametrize(
    ("headers", "body", "code"),
    [
        ({}, {}, "idempotency_key_required"),
        (
            {"Idempotency-Key": "a"},
            {"idempotency_key": "b"},
            "idempotency_key_mismatch",
        ),
        ({"Idempotency-Key": "x" * 65}, {}, "invalid_idempotency_key"),
        ({"Idempotency-Key": "has space"}, {}, "invalid_idempotency_key"),
        ({}, {"idempotency_key": "x" * 65}, "max_length"),
        ({}, {"idempotency_key": ""}, "blank"),
    ],
)
def test_a_missing_or_bad_idempotency_key_is_refused_and_changes_nothing(
    alice_client, alice_account, headers, body, code
):
    state = registry_state()

    response = alice_client.post(
        f"/api/v1/accounts/{alice_account.pk}/withdrawals",
        {"amount": "10.00", **body},
        format="json",
        headers=headers,
    )

    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == (
        code,
        "idempotency_key",
    )
    assert registry_state() == state


# Bad input changes nothing ------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"amount": "-5.00"}, 400, "invalid_amount", "amount"),
        ({"amount": "0"}, 400, "invalid_amount", "amount"),
        ({"amount": "0.00"}, 400, "invalid_amount", "amount"),
        ({"amount": "1.001"}, 400, "too_precise", "amount"),
        ({"amount": 5}, 400, "not_a_string", "amount"),
        ({"amount": 5.5}, 400, "not_a_string", "amount"),
        ({"amount": "abc"}, 400, "invalid", "amount"),
        ({"amount": "NaN"}, 400, "invalid", "amount"),
        ({"amount": "1e3"}, 400, "invalid", "amount"),
        ({"amount": None}, 400, "null", "amount"),
        ({}, 400, "required", "amount"),
        ({"amount": "10.00", "asset": "XYZ"}, 400, "unknown_asset", "asset"),
        ({"amount": "10", "asset": "XSX:XS01"}, 400, "not_a_currency", "asset"),
        ({"amount": "10.00", "memo": "x" * 201}, 400, "max_length", "memo"),
        ({"amount": "10000.01"}, 422, "insufficient_funds", "amount"),
    ],
)
def test_bad_withdrawal_requests_are_refused_and_change_nothing(
    alice_client, alice_account, symbol, body, status, code, field
):
    state = registry_state()

    response = alice_client.post(
        f"/api/v1/accounts/{alice_account.pk}/withdrawals",
        body,
        format="json",
        headers={"Idempotency-Key": "bad-1"},
    )

    assert response.status_code == status, response.json()
    assert (response.json()["code"], response.json().get("field")) == (code, field)
    assert registry_state() == state


def test_insufficient_funds_says_what_is_available(alice_client, alice_account):
    withdraw(alice_client, alice_account, key="a", amount="9000.00")

    response = withdraw(alice_client, alice_account, key="b", amount="1000.01")

    assert response.json() == {
        "code": "insufficient_funds",
        "message": "1000.01 AUD needed, 1000.00 available.",
        "field": "amount",
    }
    # the refused key is free: nothing was stored under it
    retry = withdraw(alice_client, alice_account, key="b", amount="1000.00")
    assert retry.status_code == 201


def test_someone_elses_or_a_missing_account_is_not_found(alice_client, bob_account):
    state = registry_state()

    for account_id in (bob_account.pk, 999999):
        response = alice_client.post(
            f"/api/v1/accounts/{account_id}/withdrawals",
            {"amount": "1.00"},
            format="json",
            headers={"Idempotency-Key": "x"},
        )
        assert response.status_code == 404
        assert response.json() == {
            "code": "account_not_found",
            "message": f"There is no account {account_id}.",
            "field": "account",
        }
    assert registry_state() == state


def test_a_suspended_account_cannot_withdraw(alice_client, alice_account):
    Account.objects.filter(pk=alice_account.pk).update(status="suspended")
    state = registry_state()

    response = withdraw(alice_client, alice_account)

    assert (response.status_code, response.json()["code"]) == (422, "account_inactive")
    assert registry_state() == state


def test_an_anonymous_caller_is_refused(client, alice_account):
    response = APIClient().post(
        f"/api/v1/accounts/{alice_account.pk}/withdrawals",
        {"amount": "1.00"},
        format="json",
    )

    assert response.status_code in (401, 403)
    assert not Transfer.objects.filter(kind="withdrawal").exists()


# Daily limits -----------------------------------------------------------------------


def set_limit(account, limit, asset=None):
    asset = asset or account.currency
    if limit is None:
        WithdrawalLimit.objects.filter(account=account, asset=asset).delete()
    else:
        WithdrawalLimit.objects.update_or_create(
            account=account, asset=asset, defaults={"daily_limit": limit}
        )


def test_the_daily_limit_allows_exactly_up_to_the_limit(alice_client, alice_account):
    set_limit(alice_account, Decimal("1000.00"))
    assert (
        withdraw(alice_client, alice_account, "a", amount="600.00").status_code == 201
    )
    state = registry_state()

    over = withdraw(alice_client, alice_account, "b", amount="400.01")

    assert over.status_code == 422
    assert over.json() == {
        "code": "daily_limit_exceeded",
        "message": "The daily withdrawal limit of 1000.00 AUD leaves 400.00 AUD today.",
        "field": "amount",
    }
    assert registry_state() == state
    exact = withdraw(alice_client, alice_account, "c", amount="400.00")
    assert exact.status_code == 201
    nothing_left = withdraw(alice_client, alice_account, "d", amount="0.01")
    assert nothing_left.json()["message"] == (
        "The daily withdrawal limit of 1000.00 AUD leaves 0.00 AUD today."
    )


def test_cancelled_and_rejected_withdrawals_do_not_count_completed_ones_do(
    alice_client, alice_account, checker
):
    set_limit(alice_account, Decimal("100.00"))
    cancelled = withdraw(alice_client, alice_account, "a", amount="100.00").json()
    alice_client.post(f"/api/v1/transfers/{cancelled['id']}/cancel")
    rejected = withdraw(alice_client, alice_account, "b", amount="100.00").json()
    decide(client_for(checker), rejected["id"], "reject", "No")
    completed = withdraw(alice_client, alice_account, "c", amount="60.00").json()
    decide(client_for(checker), completed["id"], "approve")

    over = withdraw(alice_client, alice_account, "d", amount="40.01")
    exact = withdraw(alice_client, alice_account, "e", amount="40.00")

    assert (over.status_code, over.json()["code"]) == (422, "daily_limit_exceeded")
    assert exact.status_code == 201


def test_a_zero_limit_blocks_withdrawals_and_no_limit_allows_any(
    alice_client, alice_account
):
    set_limit(alice_account, Decimal(0))
    blocked = withdraw(alice_client, alice_account, "a", amount="0.01")
    set_limit(alice_account, None)
    allowed = withdraw(alice_client, alice_account, "b", amount="10000.00")

    assert (blocked.status_code, blocked.json()["code"]) == (
        422,
        "daily_limit_exceeded",
    )
    assert allowed.status_code == 201


def test_the_day_is_the_operators_calendar_day_across_midnight(
    settings, alice_client, alice_account
):
    # Sydney is UTC+11 in March: both moments fall on 10 March in UTC, but
    # the operator's day changes between them. Stored times stay UTC.
    settings.OPERATOR_TIMEZONE = "Australia/Sydney"
    assert settings.TIME_ZONE == "UTC"
    set_limit(alice_account, Decimal("1000.00"))
    before_midnight = datetime(2026, 3, 10, 12, 59, 59, tzinfo=UTC)  # 23:59:59
    after_midnight = datetime(2026, 3, 10, 13, 0, 0, tzinfo=UTC)  # 00:00:00

    with time_machine.travel(before_midnight, tick=False):
        first = withdraw(alice_client, alice_account, "a", amount="999.99")
        late = withdraw(alice_client, alice_account, "b", amount="0.02")
    with time_machine.travel(after_midnight, tick=False):
        next_day = withdraw(alice_client, alice_account, "c", amount="1000.00")
        over = withdraw(alice_client, alice_account, "d", amount="0.01")

    assert first.status_code == 201
    assert late.json() == {
        "code": "daily_limit_exceeded",
        "message": "The daily withdrawal limit of 1000.00 AUD leaves 0.01 AUD today.",
        "field": "amount",
    }
    assert next_day.status_code == 201, next_day.json()
    assert next_day.json()["created_at"] == "2026-03-10T13:00:00+00:00"
    assert over.json()["message"] == (
        "The daily withdrawal limit of 1000.00 AUD leaves 0.00 AUD today."
    )
    assert cash(alice_account) == (Decimal("8000.01"), Decimal("1999.99"))


def test_the_operator_day_is_25_hours_long_when_daylight_saving_ends(
    settings, alice_client, alice_account
):
    # Sydney leaves daylight saving on 5 April 2026 (03:00 AEDT -> 02:00 AEST):
    # that day runs from 4 April 13:00 UTC to 5 April 14:00 UTC.
    settings.OPERATOR_TIMEZONE = "Australia/Sydney"
    set_limit(alice_account, Decimal("100.00"))
    moments = {
        "a": datetime(2026, 4, 4, 12, 59, 59, tzinfo=UTC),  # 4 April, 23:59:59
        "b": datetime(2026, 4, 4, 13, 0, 0, tzinfo=UTC),  # 5 April, 00:00 AEDT
        "c": datetime(2026, 4, 5, 13, 59, 59, tzinfo=UTC),  # 5 April, 23:59:59 AEST
        "d": datetime(2026, 4, 5, 14, 0, 0, tzinfo=UTC),  # 6 April, 00:00
    }
    amounts = {"a": "100.00", "b": "60.00", "c": "40.01", "d": "100.00"}
    codes = {}
    for key, moment in moments.items():
        with time_machine.travel(moment, tick=False):
            response = withdraw(alice_client, alice_account, key, amount=amounts[key])
        codes[key] = response.status_code

    assert codes == {"a": 201, "b": 201, "c": 422, "d": 201}
    assert cash(alice_account) == (Decimal("9740.00"), Decimal("260.00"))


def test_with_utc_as_the_operator_zone_the_same_moments_are_one_day(
    settings, alice_client, alice_account
):
    settings.OPERATOR_TIMEZONE = "UTC"
    set_limit(alice_account, Decimal("1000.00"))

    with time_machine.travel(datetime(2026, 3, 10, 12, 59, 59, tzinfo=UTC), tick=False):
        withdraw(alice_client, alice_account, "a", amount="1000.00")
    with time_machine.travel(datetime(2026, 3, 10, 13, 0, 0, tzinfo=UTC), tick=False):
        response = withdraw(alice_client, alice_account, "b", amount="0.01")

    assert (response.status_code, response.json()["code"]) == (
        422,
        "daily_limit_exceeded",
    )


def test_limits_are_per_asset_and_other_assets_do_not_count(alice, alice_account):
    # given 500.00 USD besides the AUD, a 100.00 AUD and a 30.00 USD daily limit
    usd = factories.currency("USD")
    cash_deposit(
        account=alice_account, asset=usd, amount=Decimal("500.00"), acting_user=None
    )
    set_limit(alice_account, Decimal("100.00"))
    set_limit(alice_account, Decimal("30.00"), asset=usd)
    alice_client = client_for(alice)

    # when AUD 100.00 and USD 30.00 are withdrawn on one day
    aud_full = withdraw(alice_client, alice_account, "a", amount="100.00")
    usd_full = withdraw(alice_client, alice_account, "b", asset="USD", amount="30.00")
    state = registry_state()
    usd_over = withdraw(alice_client, alice_account, "c", asset="USD", amount="0.01")
    aud_over = withdraw(alice_client, alice_account, "d", amount="0.01")

    # then each limit counted only its own asset
    assert (aud_full.status_code, usd_full.status_code) == (201, 201)
    assert usd_over.json() == {
        "code": "daily_limit_exceeded",
        "message": "The daily withdrawal limit of 30.00 USD leaves 0.00 USD today.",
        "field": "amount",
    }
    assert aud_over.json()["message"] == (
        "The daily withdrawal limit of 100.00 AUD leaves 0.00 AUD today."
    )
    assert registry_state() == state
    usd_balance = balance_of(alice_account, usd)
    assert (usd_balance.available, usd_balance.held) == (
        Decimal("470.00"),
        Decimal("30.00"),
    )


def test_an_asset_without_a_limit_is_not_limited_by_another_assets_limit(
    alice, alice_account
):
    usd = factories.currency("USD")
    cash_deposit(
        account=alice_account, asset=usd, amount=Decimal("500.00"), acting_user=None
    )
    set_limit(alice_account, Decimal("10.00"))

    usd_withdrawal = withdraw(
        client_for(alice), alice_account, "a", asset="USD", amount="500.00"
    )
    aud_withdrawal = withdraw(client_for(alice), alice_account, "b", amount="10.00")

    assert (usd_withdrawal.status_code, aud_withdrawal.status_code) == (201, 201)


# Listing ----------------------------------------------------------------------------


def test_clients_list_their_accounts_transfers_and_staff_list_all(
    alice_client, bob_client, alice_account, bob_account, checker
):
    alice_w = withdraw(alice_client, alice_account, "a", amount="1.00").json()["id"]
    bob_w = withdraw(bob_client, bob_account, "b", amount="2.00").json()["id"]
    alice_deposit = Transfer.objects.get(kind="deposit", account=alice_account).pk

    mine = alice_client.get("/api/v1/transfers").json()["results"]
    staff = (
        client_for(checker)
        .get("/api/v1/transfers", {"kind": "withdrawal", "status": "pending"})
        .json()["results"]
    )
    by_account = alice_client.get(
        f"/api/v1/accounts/{alice_account.pk}/transfers", {"kind": "withdrawal"}
    ).json()["results"]
    not_bobs = bob_client.get(f"/api/v1/accounts/{alice_account.pk}/transfers")
    one = alice_client.get(f"/api/v1/transfers/{alice_w}")
    hidden = alice_client.get(f"/api/v1/transfers/{bob_w}")

    ids = [t["id"] for t in mine]
    assert alice_w in ids and alice_deposit in ids and bob_w not in ids
    assert [t["id"] for t in staff] == [bob_w, alice_w]
    assert staff[0]["requested_by"] == "bob"
    assert [t["id"] for t in by_account] == [alice_w]
    assert "requested_by" not in by_account[0]
    assert (not_bobs.status_code, not_bobs.json()["code"]) == (404, "account_not_found")
    assert (one.status_code, one.json()["amount"]) == (200, "1.00")
    assert hidden.status_code == 404


def test_an_anonymous_cancel_is_refused_even_for_an_account_nobody_may_access(
    alice_client, alice_account
):
    # given a pending withdrawal on an account whose access rows are gone
    transfer_id = withdraw(alice_client, alice_account).json()["id"]
    AccountAccess.objects.filter(account=alice_account).delete()
    state = registry_state()

    # when someone who is not signed in cancels it
    with pytest.raises(RegistryError) as refused:
        withdrawal_cancel(transfer_id=transfer_id, acting_user=AnonymousUser())

    # then it is refused as unauthenticated (no ``user_id IS NULL`` match) and
    # nothing changed
    assert (refused.value.code, refused.value.status) == ("not_authenticated", 401)
    assert Transfer.objects.get(pk=transfer_id).status == Transfer.Status.PENDING
    assert registry_state() == state


def test_an_unknown_operator_timezone_fails_the_system_check(settings):
    from registry.checks import check_operator_timezone

    settings.OPERATOR_TIMEZONE = "Australia/Sydney"
    assert check_operator_timezone() == []
    settings.OPERATOR_TIMEZONE = "Mars/Olympus"
    assert [(e.id, e.msg) for e in check_operator_timezone()] == [
        ("registry.E001", "OPERATOR_TIMEZONE 'Mars/Olympus' is not a time zone.")
    ]
