"""Deposits, security issues and security transfers: staff and integrations, REST."""

from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from registry.models import Account, Transfer
from registry.services import RegistryError
from registry.transfers import cash_deposit, security_issue, security_transfer
from tests import factories
from tests.conftest import assert_ledger_balanced, balance_of, client_for
from tests.registry.helpers import postings_of, registry_state

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(db):
    return factories.user("ops", is_staff=True)


@pytest.fixture
def staff_client(staff):
    return client_for(staff)


def deposit(client, account, key="d-1", **body):
    body.setdefault("amount", "250.75")
    return client.post(
        f"/api/v1/accounts/{account.pk}/deposits",
        body,
        format="json",
        headers={"Idempotency-Key": key} if key else {},
    )


def move(client, key="s-1", **body):
    return client.post(
        "/api/v1/transfers/securities",
        body,
        format="json",
        headers={"Idempotency-Key": key} if key else {},
    )


def set_cost(account, asset, cost):
    """Give a position a cost base through the ledger (a cost-only line), as a
    purchase would."""
    from django.db import transaction

    from registry.ledger import LedgerBatch, Line
    from registry.models import Bucket, JournalEntry

    with transaction.atomic():
        batch = LedgerBatch([(account.pk, asset.pk)])
        delta = Decimal(cost) - batch.balance(account.pk, asset.pk).cost
        batch.post(
            kind=JournalEntry.Kind.TRADE,
            lines=[Line(account.pk, asset.pk, Bucket.AVAILABLE, Decimal(0), delta)],
            reference="test:cost",
        )
        batch.flush()


# Deposits ----------------------------------------------------------------------------


def test_staff_deposit_credits_the_account_against_the_omnibus_account(
    staff, staff_client, alice_account
):
    response = deposit(staff_client, alice_account, reason="Wire 42")

    assert response.status_code == 201, response.json()
    transfer = Transfer.objects.get(idempotency_key="d-1")
    assert transfer.decided_at is not None
    assert response.json() == {
        "id": transfer.pk,
        "kind": "deposit",
        "status": "completed",
        "account": alice_account.pk,
        "counterparty": None,
        "asset": "AUD",
        "amount": "250.75",
        "memo": "Wire 42",
        "decision_reason": "",
        "idempotency_key": "d-1",
        "created_at": transfer.created_at.isoformat(),
        "decided_at": transfer.decided_at.isoformat(),
        "requested_by": "ops",
        "decided_by": "ops",
    }
    assert balance_of(alice_account, alice_account.currency).available == Decimal(
        "10250.75"
    )
    assert postings_of(transfer) == [
        ("deposit", alice_account.number, "AUD", "available", Decimal("250.75")),
        ("deposit", "SYS-OMNIBUS", "AUD", "available", Decimal("-250.75")),
    ]
    (entry,) = transfer.journal_entries()
    assert (entry.reason, entry.acting_user) == ("Wire 42", staff)
    assert_ledger_balanced()


def test_a_deposit_replayed_returns_the_original_and_a_changed_one_is_refused(
    staff_client, alice_account
):
    first = deposit(staff_client, alice_account)
    state = registry_state()

    again = deposit(staff_client, alice_account)
    changed = deposit(staff_client, alice_account, amount="250.76")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert (changed.status_code, changed.json()["code"]) == (
        409,
        "idempotency_key_reused",
    )
    assert registry_state() == state


def test_clients_cannot_deposit(alice_client, alice_account):
    state = registry_state()

    response = deposit(alice_client, alice_account)

    assert (response.status_code, response.json()["code"]) == (403, "permission_denied")
    assert registry_state() == state


@pytest.mark.parametrize(
    ("body", "key", "status", "code", "field"),
    [
        ({"amount": "0"}, "k", 400, "invalid_amount", "amount"),
        ({"amount": "-1.00"}, "k", 400, "invalid_amount", "amount"),
        ({"amount": "0.001"}, "k", 400, "too_precise", "amount"),
        ({"amount": 10}, "k", 400, "not_a_string", "amount"),
        ({"amount": "1.00", "asset": "XSX:XS01"}, "k", 400, "not_a_currency", "asset"),
        ({"amount": "1.00", "asset": "EUR"}, "k", 400, "unknown_asset", "asset"),
        ({"amount": "1.00"}, "", 400, "idempotency_key_required", "idempotency_key"),
    ],
)
def test_bad_deposits_are_refused_and_change_nothing(
    staff_client, alice_account, symbol, body, key, status, code, field
):
    state = registry_state()

    response = deposit(staff_client, alice_account, key=key, **body)

    assert response.status_code == status, response.json()
    assert (response.json()["code"], response.json().get("field")) == (code, field)
    assert registry_state() == state


def test_deposits_to_missing_suspended_or_system_accounts_are_refused(
    staff_client, alice_account
):
    Account.objects.filter(pk=alice_account.pk).update(status="suspended")
    omnibus = Account.objects.get(number="SYS-OMNIBUS")
    state = registry_state()

    missing = staff_client.post(
        "/api/v1/accounts/999999/deposits",
        {"amount": "1.00"},
        format="json",
        headers={"Idempotency-Key": "a"},
    )
    suspended = deposit(staff_client, alice_account, key="b")
    system = deposit(staff_client, omnibus, key="c")

    assert (missing.status_code, missing.json()["code"]) == (404, "account_not_found")
    assert (suspended.status_code, suspended.json()["code"]) == (
        422,
        "account_inactive",
    )
    assert (system.status_code, system.json()["code"]) == (400, "not_a_client_account")
    assert registry_state() == state


def test_the_service_records_a_transfer_for_internal_callers_without_a_key(
    alice_account,
):
    result = cash_deposit(
        account=alice_account,
        asset=alice_account.currency,
        amount=Decimal("5.00"),
        acting_user=None,
    )

    assert result.created
    assert (result.transfer.requested_by, len(result.transfer.idempotency_key)) == (
        None,
        32,
    )


def test_keys_of_requests_without_a_user_are_unique_too(alice_account):
    def credit():
        return cash_deposit(
            account=alice_account,
            asset=alice_account.currency,
            amount=Decimal("5.00"),
            acting_user=None,
            idempotency_key="batch-2026-03-10",
        )

    first, again = credit(), credit()

    assert (first.created, again.created) == (True, False)
    assert again.transfer.pk == first.transfer.pk
    with pytest.raises(IntegrityError), transaction.atomic():
        Transfer.objects.create(
            kind="deposit",
            status="completed",
            account=alice_account,
            asset=alice_account.currency,
            amount=Decimal(1),
            idempotency_key="batch-2026-03-10",
        )


# Security issues and transfers ---------------------------------------------------------


def test_a_security_transfer_moves_available_units_with_their_share_of_cost(
    staff, staff_client, symbol, alice_account, bob_account
):
    xs01 = symbol.asset
    set_cost(alice_account, xs01, "10250.00")  # 1000 units at 10.25

    response = move(
        staff_client,
        from_account=alice_account.pk,
        to_account=bob_account.pk,
        asset="XSX:XS01",
        quantity="300",
        reason="Family transfer",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (
        body["kind"],
        body["status"],
        body["account"],
        body["counterparty"],
        body["amount"],
        body["memo"],
    ) == (
        "security_transfer",
        "completed",
        alice_account.pk,
        bob_account.pk,
        "300",
        "Family transfer",
    )
    alice_units, bob_units = (
        balance_of(alice_account, xs01),
        balance_of(bob_account, xs01),
    )
    assert (alice_units.available, alice_units.cost) == (
        Decimal(700),
        Decimal("7175.00"),
    )
    assert alice_units.average_cost == Decimal("10.25")
    assert (bob_units.available, bob_units.cost) == (Decimal(1300), Decimal("3075.00"))
    transfer = Transfer.objects.get(pk=body["id"])
    assert postings_of(transfer) == [
        ("transfer", alice_account.number, "XSX:XS01", "available", Decimal(-300)),
        ("transfer", bob_account.number, "XSX:XS01", "available", Decimal(300)),
    ]
    holdings = client_for(bob_account.users.get()).get(
        f"/api/v1/accounts/{bob_account.pk}/holdings"
    )
    assert holdings.json()[0]["cost"] == "3075.0000"
    assert_ledger_balanced()


def test_a_cost_share_that_does_not_divide_exactly_loses_nothing(
    alice, bob, symbol, alice_account
):
    xs01 = symbol.asset
    sender = factories.account(alice, holdings={symbol: "3"})
    receiver = factories.account(bob)
    set_cost(sender, xs01, "100.00")

    security_transfer(
        from_account=sender,
        to_account=receiver,
        asset=xs01,
        amount=Decimal(1),
        acting_user=None,
    )

    moved = balance_of(receiver, xs01).cost
    assert moved == Decimal("33.3333333333")
    assert balance_of(sender, xs01).cost == Decimal("66.6666666667")
    assert moved + balance_of(sender, xs01).cost == Decimal("100.00")


def test_moving_a_whole_position_moves_all_its_cost(alice, bob, symbol):
    xs01 = symbol.asset
    sender = factories.account(alice, holdings={symbol: "3"})
    receiver = factories.account(bob)
    set_cost(sender, xs01, "100.00")

    security_transfer(
        from_account=sender,
        to_account=receiver,
        asset=xs01,
        amount=Decimal(3),
        acting_user=None,
    )

    assert (balance_of(sender, xs01).total, balance_of(sender, xs01).cost) == (0, 0)
    assert balance_of(receiver, xs01).cost == Decimal("100.00")


def test_without_a_from_account_it_is_an_issue(staff_client, symbol, bob_account):
    response = move(
        staff_client, to_account=bob_account.pk, asset="XSX:XS01", quantity="25"
    )

    assert response.status_code == 201, response.json()
    assert (response.json()["kind"], response.json()["account"]) == (
        "security_issue",
        bob_account.pk,
    )
    assert balance_of(bob_account, symbol.asset).available == Decimal(1025)
    transfer = Transfer.objects.get(pk=response.json()["id"])
    assert postings_of(transfer) == [
        ("issue", bob_account.number, "XSX:XS01", "available", Decimal(25)),
        ("issue", "SYS-ISSUANCE", "XSX:XS01", "available", Decimal(-25)),
    ]


def test_a_security_transfer_replays_and_refuses_a_changed_body(
    staff_client, symbol, alice_account, bob_account
):
    body = {
        "from_account": alice_account.pk,
        "to_account": bob_account.pk,
        "asset": "XSX:XS01",
        "quantity": "10",
    }
    first = move(staff_client, **body)
    state = registry_state()

    again = move(staff_client, **body)
    changed = move(staff_client, **{**body, "to_account": alice_account.pk})
    swapped = move(
        staff_client,
        **{**body, "from_account": bob_account.pk, "to_account": alice_account.pk},
    )

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert (changed.status_code, changed.json()["code"]) == (400, "same_account")
    assert (swapped.status_code, swapped.json()["code"]) == (
        409,
        "idempotency_key_reused",
    )
    assert registry_state() == state


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"quantity": "1001"}, 422, "insufficient_holdings", "quantity"),
        ({"quantity": "0"}, 400, "invalid_amount", "quantity"),
        ({"quantity": "1.5"}, 400, "too_precise", "quantity"),
        ({"quantity": 5}, 400, "not_a_string", "quantity"),
        ({"asset": "AUD", "quantity": "1.00"}, 400, "not_a_security", "asset"),
        ({"asset": "XSX:NOPE"}, 400, "unknown_asset", "asset"),
        ({"to_account": 999999}, 400, "unknown_account", "to_account"),
        ({"from_account": 999999}, 400, "unknown_account", "from_account"),
        ({"to_account": "same"}, 400, "same_account", "to_account"),
    ],
)
def test_bad_security_transfers_are_refused_and_change_nothing(
    staff_client, symbol, alice_account, bob_account, body, status, code, field
):
    request = {
        "from_account": alice_account.pk,
        "to_account": bob_account.pk,
        "asset": "XSX:XS01",
        "quantity": "10",
        **body,
    }
    if request["to_account"] == "same":
        request["to_account"] = alice_account.pk
    state = registry_state()

    response = move(staff_client, **request)

    assert response.status_code == status, response.json()
    assert (response.json()["code"], response.json().get("field")) == (code, field)
    assert registry_state() == state


def test_held_units_cannot_be_transferred(alice, symbol, alice_account, bob_account):
    from oms.services import OrderSpec, order_place

    order_place(
        user=alice,
        spec=OrderSpec(
            account_id=alice_account.pk,
            symbol="XSX:XS01",
            side="sell",
            type="limit",
            time_in_force="gtc",
            price=Decimal("10.00"),
            quantity=Decimal(950),
        ),
    )
    state = registry_state()

    with pytest.raises(RegistryError) as refused:
        security_transfer(
            from_account=alice_account,
            to_account=bob_account,
            asset=symbol.asset,
            amount=Decimal(51),
            acting_user=None,
        )

    assert (refused.value.code, refused.value.message) == (
        "insufficient_holdings",
        "51 XSX:XS01 needed, 50 available.",
    )
    assert registry_state() == state


def test_clients_cannot_move_securities(
    alice_client, symbol, alice_account, bob_account
):
    response = move(
        alice_client,
        from_account=alice_account.pk,
        to_account=bob_account.pk,
        asset="XSX:XS01",
        quantity="1",
    )

    assert (response.status_code, response.json()["code"]) == (403, "permission_denied")


def test_the_receiver_sees_an_incoming_transfer(
    staff_client, bob_client, symbol, alice_account, bob_account
):
    transfer_id = move(
        staff_client,
        from_account=alice_account.pk,
        to_account=bob_account.pk,
        asset="XSX:XS01",
        quantity="1",
    ).json()["id"]

    listed = bob_client.get(f"/api/v1/accounts/{bob_account.pk}/transfers").json()
    mine = bob_client.get("/api/v1/transfers", {"kind": "security_transfer"}).json()

    assert listed["results"][0]["id"] == transfer_id
    assert [t["id"] for t in mine["results"]] == [transfer_id]


def test_security_issue_via_the_service_is_a_completed_transfer(
    staff, symbol, alice_account
):
    result = security_issue(
        account=alice_account,
        asset=symbol.asset,
        amount=Decimal(5),
        acting_user=staff,
        idempotency_key="iss-1",
        reason="Rights issue",
    )

    transfer = result.transfer
    assert (transfer.kind, transfer.status, transfer.decided_by, transfer.memo) == (
        "security_issue",
        "completed",
        staff,
        "Rights issue",
    )
    assert [e.reason for e in transfer.journal_entries()] == ["Rights issue"]
