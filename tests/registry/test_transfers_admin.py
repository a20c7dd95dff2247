"""The transfers' staff console: requesting, approving (maker-checker) and rejecting
withdrawals, moving holdings, and the read-only transfer records."""

from decimal import Decimal

import pytest
from django.contrib.admin import helpers
from django.test import Client
from django.urls import reverse

from registry.models import Account, AuditRecord, Transfer, WithdrawalLimit
from registry.transfers import withdrawal_request
from tests import factories
from tests.conftest import assert_trading_consistent, balance_of
from tests.registry.helpers import registry_state
from tests.registry.test_admin import change_form_data, messages_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def checker(db):
    return factories.user("checker", is_staff=True)


@pytest.fixture
def checker_client(checker):
    client = Client()
    client.force_login(checker)
    return client


def url(name, *args):
    return reverse(f"admin:registry_{name}", args=args)


def request_on_behalf(user, account, amount="100.00", key="k-1"):
    return withdrawal_request(
        account=account,
        asset=account.currency,
        amount=Decimal(amount),
        acting_user=user,
        idempotency_key=key,
        on_behalf=True,
    ).transfer


def cash(account):
    balance = balance_of(account, account.currency)
    return balance.available, balance.held


# Requesting a withdrawal for a client -----------------------------------------------


def test_the_account_page_links_to_the_withdrawal_and_transfer_views(
    admin_client, alice_account
):
    response = admin_client.get(url("account_change", alice_account.pk))

    content = response.content.decode()
    assert f'href="{url("account_withdraw", alice_account.pk)}"' in content
    assert f'href="{url("account_transfer", alice_account.pk)}"' in content
    transfers = f"{url('transfer_changelist')}?account__id__exact={alice_account.pk}"
    assert f'href="{transfers}"' in content
    listed = admin_client.get(transfers)
    assert listed.status_code == 200
    assert {t.account for t in listed.context["cl"].result_list} == {alice_account}


def test_staff_request_a_withdrawal_for_a_client_and_it_is_held(
    admin_client, admin_user, alice_account
):
    page = admin_client.get(url("account_withdraw", alice_account.pk))
    key = page.context["form"].initial["idempotency_key"]
    assert len(key) == 32
    data = {
        "asset": alice_account.currency.pk,
        "amount": "1500.00",
        "reason": "Client phoned",
        "idempotency_key": key,
    }

    response = admin_client.post(url("account_withdraw", alice_account.pk), data)

    assert response.status_code == 302
    transfer = Transfer.objects.get(kind="withdrawal")
    assert (
        transfer.status,
        transfer.amount,
        transfer.memo,
        transfer.requested_by,
        transfer.idempotency_key,
    ) == ("pending", Decimal("1500.00"), "Client phoned", admin_user, key)
    assert cash(alice_account) == (Decimal("8500.00"), Decimal("1500.00"))
    assert messages_of(response) == [
        f"Requested a withdrawal of 1500.00 AUD from {alice_account.number} "
        f"(transfer #{transfer.pk}, held until approved); another staff user must "
        "approve it."
    ]
    record = AuditRecord.objects.get(action="withdrawal_request")
    assert (record.actor, record.reason, record.changes["on_behalf"]) == (
        admin_user,
        "Client phoned",
        True,
    )

    # submitting the same page again records nothing more
    state = registry_state()
    again = admin_client.post(url("account_withdraw", alice_account.pk), data)
    assert again.status_code == 302
    assert registry_state() == state
    assert messages_of(again)[-1:] == [
        f"This form was already submitted: transfer #{transfer.pk} "
        "(Pending approval). Nothing more was done."
    ]


@pytest.mark.parametrize(
    ("amount", "errors"),
    [
        ("10000.01", {"amount": ["10000.01 AUD needed, 10000.00 available."]}),
        ("0", {"amount": ["The amount must be positive."]}),
        ("1.001", {"amount": ["1.001 has more than 2 decimal places."]}),
    ],
)
def test_a_refused_staff_withdrawal_shows_the_error_and_changes_nothing(
    admin_client, alice_account, amount, errors
):
    state = registry_state()

    response = admin_client.post(
        url("account_withdraw", alice_account.pk),
        {"asset": alice_account.currency.pk, "amount": amount, "idempotency_key": "x"},
    )

    assert response.status_code == 200
    assert response.context["form"].errors == errors
    assert registry_state() == state


def with_limit_row(data, asset, daily_limit):
    """The change form's body with one more withdrawal-limit row."""
    index = int(data["withdrawal_limits-TOTAL_FORMS"])
    data[f"withdrawal_limits-{index}-asset"] = str(asset.pk)
    data[f"withdrawal_limits-{index}-daily_limit"] = daily_limit
    data["withdrawal_limits-TOTAL_FORMS"] = str(index + 1)
    return data


def test_a_daily_limit_per_asset_is_set_on_the_account_page_and_audited(
    admin_client, admin_user, alice_account
):
    aud = alice_account.currency
    change = url("account_change", alice_account.pk)
    data = with_limit_row(change_form_data(admin_client.get(change)), aud, "500.00")

    response = admin_client.post(change, data)

    assert response.status_code == 302
    assert list(
        WithdrawalLimit.objects.filter(account=alice_account).values_list(
            "asset__code", "daily_limit"
        )
    ) == [("AUD", Decimal("500.00"))]
    record = AuditRecord.objects.filter(actor=admin_user).get()
    assert (record.action, record.object_id, record.changes) == (
        "withdrawal_limit_change",
        str(alice_account.pk),
        {"AUD": [None, "500.00"]},
    )
    over = admin_client.post(
        url("account_withdraw", alice_account.pk),
        {"asset": aud.pk, "amount": "500.01"},
    )
    assert over.context["form"].errors == {
        "amount": ["The daily withdrawal limit of 500.00 AUD leaves 500.00 AUD today."]
    }


def test_a_negative_or_too_precise_daily_limit_is_a_form_error(
    admin_client, alice_account
):
    change = url("account_change", alice_account.pk)
    aud = alice_account.currency
    negative = with_limit_row(change_form_data(admin_client.get(change)), aud, "-1")
    precise = with_limit_row(change_form_data(admin_client.get(change)), aud, "1.001")

    responses = [admin_client.post(change, data) for data in (negative, precise)]

    errors = [
        [form.errors for form in inline.formset.forms]
        for response in responses
        for inline in response.context["inline_admin_formsets"]
        if inline.formset.model is WithdrawalLimit
    ]
    assert errors == [
        [{"daily_limit": ["The daily limit must be zero or more."]}],
        [{"daily_limit": ["1.001 has more than 2 decimal places."]}],
    ]
    assert not WithdrawalLimit.objects.exists()
    assert not AuditRecord.objects.filter(action="withdrawal_limit_change").exists()


# Deciding: maker-checker ------------------------------------------------------------


def test_staff_cannot_approve_their_own_request_in_the_admin(
    admin_client, admin_user, alice_account
):
    transfer = request_on_behalf(admin_user, alice_account)
    state = registry_state()

    response = admin_client.post(url("transfer_approve", transfer.pk), {"reason": ""})

    assert response.status_code == 200
    assert response.context["form"].errors == {
        "__all__": [
            "A withdrawal must be approved by someone other than its requester."
        ]
    }
    assert registry_state() == state
    transfer.refresh_from_db()
    assert transfer.status == "pending"


def test_another_staff_user_approves_in_the_admin(
    admin_user, checker, checker_client, alice_account
):
    transfer = request_on_behalf(admin_user, alice_account, amount="250.00")
    page = checker_client.get(url("transfer_change", transfer.pk))
    assert f'href="{url("transfer_approve", transfer.pk)}"' in page.content.decode()

    response = checker_client.post(
        url("transfer_approve", transfer.pk), {"reason": "Verified"}
    )

    assert response.status_code == 302
    assert response["Location"] == url("transfer_change", transfer.pk)
    transfer.refresh_from_db()
    assert (transfer.status, transfer.decided_by, transfer.decision_reason) == (
        "completed",
        checker,
        "Verified",
    )
    assert cash(alice_account) == (Decimal("9750.00"), Decimal(0))
    assert messages_of(response) == [
        f"Approved withdrawal #{transfer.pk} of 250.00 AUD from {alice_account.number}."
    ]
    # a decided transfer has no decision links, and cannot be decided again
    page = checker_client.get(url("transfer_change", transfer.pk))
    assert url("transfer_approve", transfer.pk) not in page.content.decode()
    again = checker_client.post(url("transfer_reject", transfer.pk), {"reason": "x"})
    assert again.context["form"].errors == {
        "__all__": [f"Transfer {transfer.pk} is completed, not pending."]
    }
    assert_trading_consistent()


def test_rejecting_in_the_admin_needs_a_reason_and_releases_the_hold(
    admin_client, alice, alice_account
):
    transfer = withdrawal_request(
        account=alice_account,
        asset=alice_account.currency,
        amount=Decimal("80.00"),
        acting_user=alice,
        idempotency_key="w",
    ).transfer

    empty = admin_client.post(url("transfer_reject", transfer.pk), {"reason": ""})
    assert empty.context["form"].errors == {"reason": ["This field is required."]}
    assert cash(alice_account) == (Decimal("9920.00"), Decimal("80.00"))

    response = admin_client.post(
        url("transfer_reject", transfer.pk), {"reason": "Name mismatch"}
    )

    assert response.status_code == 302
    transfer.refresh_from_db()
    assert (transfer.status, transfer.decision_reason) == ("rejected", "Name mismatch")
    assert cash(alice_account) == (Decimal("10000.00"), Decimal(0))


def test_the_approve_action_decides_each_selected_withdrawal_under_maker_checker(
    admin_client, admin_user, alice, alice_account
):
    own = request_on_behalf(admin_user, alice_account, amount="10.00", key="a")
    clients = withdrawal_request(
        account=alice_account,
        asset=alice_account.currency,
        amount=Decimal("20.00"),
        acting_user=alice,
        idempotency_key="b",
    ).transfer
    selection = {
        "action": "approve_withdrawals",
        helpers.ACTION_CHECKBOX_NAME: [own.pk, clients.pk],
    }

    reason_page = admin_client.post(url("transfer_changelist"), selection)
    assert reason_page.status_code == 200
    assert (
        reason_page.template_name == "admin/xchange/transfer_action_confirmation.html"
    )
    assert Transfer.objects.filter(status="pending").count() == 2

    response = admin_client.post(
        url("transfer_changelist"), {**selection, "confirm": "yes", "reason": "Batch"}
    )

    assert response.status_code == 302
    own.refresh_from_db()
    clients.refresh_from_db()
    assert (own.status, clients.status) == ("pending", "completed")
    assert messages_of(response) == [
        f"#{own.pk}: A withdrawal must be approved by someone other than its "
        "requester.",
        f"Approved withdrawals #{clients.pk}.",
    ]
    assert cash(alice_account) == (Decimal("9970.00"), Decimal("10.00"))
    assert_trading_consistent()


def test_the_reject_action_asks_for_a_reason_first(admin_client, alice, alice_account):
    transfer = withdrawal_request(
        account=alice_account,
        asset=alice_account.currency,
        amount=Decimal("20.00"),
        acting_user=alice,
        idempotency_key="b",
    ).transfer
    selection = {
        "action": "reject_withdrawals",
        helpers.ACTION_CHECKBOX_NAME: [transfer.pk],
    }

    no_reason = admin_client.post(
        url("transfer_changelist"), {**selection, "confirm": "yes", "reason": ""}
    )
    assert no_reason.status_code == 200
    assert no_reason.context["form"].errors == {"reason": ["This field is required."]}
    transfer.refresh_from_db()
    assert transfer.status == "pending"

    response = admin_client.post(
        url("transfer_changelist"),
        {**selection, "confirm": "yes", "reason": "Closed bank account"},
    )

    transfer.refresh_from_db()
    assert (transfer.status, transfer.decision_reason) == (
        "rejected",
        "Closed bank account",
    )
    assert messages_of(response) == [f"Rejected withdrawals #{transfer.pk}."]


def test_staff_without_the_transfer_permission_cannot_decide(alice, alice_account):
    viewer = factories.user("viewer-staff")
    viewer.is_staff = True
    viewer.save()
    from django.contrib.auth.models import Permission

    viewer.user_permissions.add(Permission.objects.get(codename="view_transfer"))
    client = Client()
    client.force_login(viewer)
    transfer = withdrawal_request(
        account=alice_account,
        asset=alice_account.currency,
        amount=Decimal("20.00"),
        acting_user=alice,
        idempotency_key="b",
    ).transfer

    page = client.get(url("transfer_change", transfer.pk))
    response = client.post(url("transfer_approve", transfer.pk), {"reason": ""})

    assert page.status_code == 200
    assert url("transfer_approve", transfer.pk) not in page.content.decode()
    assert response.status_code == 403
    transfer.refresh_from_db()
    assert transfer.status == "pending"


# Transferring holdings --------------------------------------------------------------


def test_staff_transfer_holdings_between_accounts(
    admin_client, admin_user, symbol, alice_account, bob_account
):
    response = admin_client.post(
        url("account_transfer", alice_account.pk),
        {
            "to_account": bob_account.number,
            "asset": symbol.asset.pk,
            "amount": "40",
            "reason": "Estate",
            "idempotency_key": "t-1",
        },
    )

    assert response.status_code == 302
    transfer = Transfer.objects.get(kind="security_transfer")
    (entry,) = transfer.journal_entries()
    assert messages_of(response) == [
        f"Transferred 40 XSX:XS01 from {alice_account.number} to "
        f"{bob_account.number} (transfer #{transfer.pk}, journal entry #{entry.pk})."
    ]
    assert balance_of(alice_account, symbol.asset).available == Decimal(960)
    assert balance_of(bob_account, symbol.asset).available == Decimal(1040)
    assert (transfer.requested_by, transfer.memo) == (admin_user, "Estate")


@pytest.mark.parametrize(
    ("to_account", "amount", "errors"),
    [
        ("NOPE", "1", {"to_account": ["There is no account NOPE."]}),
        ("bob", "1001", {"amount": ["1001 XSX:XS01 needed, 1000 available."]}),
        (
            "alice",
            "1",
            {"to_account": ["The sending and receiving accounts are the same."]},
        ),
    ],
)
def test_a_refused_holdings_transfer_shows_the_error_and_changes_nothing(
    admin_client, symbol, alice_account, bob_account, to_account, amount, errors
):
    numbers = {"alice": alice_account.number, "bob": bob_account.number}
    state = registry_state()

    response = admin_client.post(
        url("account_transfer", alice_account.pk),
        {
            "to_account": numbers.get(to_account, to_account),
            "asset": symbol.asset.pk,
            "amount": amount,
        },
    )

    assert response.status_code == 200
    assert response.context["form"].errors == errors
    assert registry_state() == state


# The records ------------------------------------------------------------------------


def test_transfers_are_read_only_records(admin_client, alice_account):
    transfer = Transfer.objects.get(kind="deposit", account=alice_account)
    state = registry_state()

    add = admin_client.get(url("transfer_add"))
    delete = admin_client.post(url("transfer_delete", transfer.pk), {"post": "yes"})
    change = admin_client.post(url("transfer_change", transfer.pk), {"amount": "1"})

    assert (add.status_code, delete.status_code, change.status_code) == (
        403,
        403,
        403,
    )
    assert registry_state() == state


def test_the_transfer_list_filters_by_kind_and_status_and_finds_by_id(
    admin_client, alice, alice_account
):
    withdrawal = withdrawal_request(
        account=alice_account,
        asset=alice_account.currency,
        amount=Decimal("20.00"),
        acting_user=alice,
        idempotency_key="b",
    ).transfer

    pending = admin_client.get(
        url("transfer_changelist"), {"kind": "withdrawal", "status": "pending"}
    )
    by_id = admin_client.get(url("transfer_changelist"), {"q": str(withdrawal.pk)})
    deposits = admin_client.get(url("transfer_changelist"), {"kind": "deposit"})
    page = admin_client.get(url("transfer_change", withdrawal.pk))

    assert list(pending.context["cl"].result_list) == [withdrawal]
    assert list(by_id.context["cl"].result_list) == [withdrawal]
    assert {t.kind for t in deposits.context["cl"].result_list} == {"deposit"}
    entry = withdrawal.journal_entries().get()
    assert url("journalentry_change", entry.pk) in page.content.decode()


def test_the_account_money_views_refuse_a_system_account_as_a_form_error(
    admin_client, alice_account
):
    omnibus = Account.objects.get(number="SYS-OMNIBUS")
    state = registry_state()

    response = admin_client.post(
        url("account_withdraw", omnibus.pk),
        {"asset": omnibus.currency.pk, "amount": "1.00"},
    )

    assert response.context["form"].errors == {
        "__all__": ["SYS-OMNIBUS is not a client account."]
    }
    assert registry_state() == state
