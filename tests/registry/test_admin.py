"""The registry's staff console: accounts through services, money views, the ledger."""

from decimal import Decimal
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from registry.models import (
    Account,
    AccountAccess,
    AuditRecord,
    Balance,
    JournalEntry,
    Posting,
    Transfer,
)
from tests import factories
from tests.conftest import assert_ledger_balanced, balance_of

pytestmark = pytest.mark.django_db

REGISTRY_MODELS = [
    "asset",
    "account",
    "accountaccess",
    "balance",
    "journalentry",
    "posting",
    "auditrecord",
    "transfer",
]
READ_ONLY_MODELS = ["balance", "journalentry", "posting", "auditrecord"]


def change_form_data(response: Any) -> dict[str, Any]:
    """The POST body an admin change page would send back unchanged."""
    data: dict[str, Any] = {}
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        forms += [inline.formset.management_form, *inline.formset.forms]
    for form in forms:
        for bound in form:
            value = bound.value()
            if value is not None and value is not False:
                data[bound.html_name] = value
    return data


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def audit_trail(target: Any) -> list[tuple[str, int | None]]:
    return list(
        AuditRecord.objects.filter(
            object_type=target._meta.label_lower, object_id=str(target.pk)
        )
        .order_by("id")
        .values_list("action", "actor_id")
    )


def deposit_url(account: Account) -> str:
    return reverse("admin:registry_account_deposit", args=[account.pk])


def issue_url(account: Account) -> str:
    return reverse("admin:registry_account_issue", args=[account.pk])


# Pages render ---------------------------------------------------------------------


def test_the_admin_index_renders(admin_client):
    assert admin_client.get(reverse("admin:index")).status_code == 200


@pytest.mark.parametrize("model", REGISTRY_MODELS)
def test_each_registry_changelist_and_change_page_renders(
    admin_client, alice_account, model
):
    changelist = admin_client.get(reverse(f"admin:registry_{model}_changelist"))
    assert changelist.status_code == 200
    first = changelist.context["cl"].result_list[0]

    change = admin_client.get(
        reverse(f"admin:registry_{model}_change", args=[first.pk])
    )

    assert change.status_code == 200


@pytest.mark.parametrize("model", REGISTRY_MODELS)
@pytest.mark.parametrize("term", ["C0", "1", "AUD"])
def test_each_registry_changelist_searches_without_error(
    admin_client, alice_account, model, term
):
    response = admin_client.get(
        reverse(f"admin:registry_{model}_changelist"), {"q": term}
    )

    assert response.status_code == 200


def test_the_balance_list_shows_the_total_of_the_three_buckets(
    admin_client, alice_account
):
    response = admin_client.get(
        reverse("admin:registry_balance_changelist"), {"q": alice_account.number}
    )

    rows = {
        (balance.asset.code, balance.total_amount)
        for balance in response.context["cl"].result_list
    }
    assert rows == {("AUD", Decimal("10000.00")), ("XSX:XS01", Decimal(1000))}


def test_the_account_page_links_to_deposit_and_issue(admin_client, alice_account):
    response = admin_client.get(
        reverse("admin:registry_account_change", args=[alice_account.pk])
    )

    content = response.content.decode()
    assert f'href="{deposit_url(alice_account)}"' in content
    assert f'href="{issue_url(alice_account)}"' in content


# Opening accounts and granting access -------------------------------------------


def test_opening_an_account_goes_through_account_open_and_grants_inline_access(
    admin_client, admin_user, alice
):
    aud = factories.currency()

    response = admin_client.post(
        reverse("admin:registry_account_add"),
        {
            "number": "C90001",
            "name": "Carol Pty Ltd",
            "currency": aud.pk,
            "access-TOTAL_FORMS": "1",
            "access-INITIAL_FORMS": "0",
            "access-0-user": alice.pk,
            "access-0-role": "owner",
        },
    )

    assert response.status_code == 302
    account = Account.objects.get(number="C90001")
    assert (account.name, account.kind, account.status, account.currency) == (
        "Carol Pty Ltd",
        "client",
        "active",
        aud,
    )
    assert list(account.access.values_list("user__username", "role")) == [
        ("alice", "owner")
    ]
    assert audit_trail(account) == [
        ("account_open", admin_user.pk),
        ("account_access_grant", admin_user.pk),
    ]


def test_opening_an_account_with_a_taken_number_shows_the_error_and_opens_nothing(
    admin_client, alice_account
):
    response = admin_client.post(
        reverse("admin:registry_account_add"),
        {
            "number": alice_account.number,
            "name": "Someone else",
            "currency": alice_account.currency.pk,
            "access-TOTAL_FORMS": "0",
            "access-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "number": ["Account with this Number already exists."]
    }
    assert Account.objects.filter(number=alice_account.number).count() == 1
    assert not AuditRecord.objects.filter(action="account_open").exists()


def test_changing_a_role_inline_goes_through_account_access_grant(
    admin_client, admin_user, alice, alice_account
):
    url = reverse("admin:registry_account_change", args=[alice_account.pk])
    data = change_form_data(admin_client.get(url))
    data["access-0-role"] = "viewer"

    response = admin_client.post(url, data)

    assert response.status_code == 302
    assert AccountAccess.objects.get(account=alice_account).role == "viewer"
    record = AuditRecord.objects.filter(actor=admin_user).get()
    assert (record.action, record.changes) == (
        "account_access_grant",
        {"user": "alice", "role": "viewer"},
    )


def test_removing_access_inline_is_audited(
    admin_client, admin_user, alice, alice_account
):
    url = reverse("admin:registry_account_change", args=[alice_account.pk])
    data = change_form_data(admin_client.get(url))
    data["access-0-DELETE"] = "on"

    response = admin_client.post(url, data)

    assert response.status_code == 302
    assert not AccountAccess.objects.filter(account=alice_account).exists()
    record = AuditRecord.objects.filter(actor=admin_user).get()
    assert (record.action, record.changes) == (
        "account_access_revoke",
        {"user": "alice", "role": "owner"},
    )


def test_moving_an_access_row_to_another_user_revokes_the_first_user(
    admin_client, admin_user, alice, bob, alice_account
):
    url = reverse("admin:registry_account_change", args=[alice_account.pk])
    data = change_form_data(admin_client.get(url))
    data["access-0-user"] = bob.pk

    response = admin_client.post(url, data)

    assert response.status_code == 302
    assert list(alice_account.access.values_list("user__username", "role")) == [
        ("bob", "owner")
    ]
    records = AuditRecord.objects.filter(actor=admin_user).order_by("id")
    assert [(r.action, r.changes) for r in records] == [
        ("account_access_revoke", {"user": "alice", "role": "owner"}),
        ("account_access_grant", {"user": "bob", "role": "owner"}),
    ]


def test_deleting_access_from_the_access_admin_is_audited(
    admin_client, admin_user, alice_account
):
    access = AccountAccess.objects.get(account=alice_account)

    response = admin_client.post(
        reverse("admin:registry_accountaccess_delete", args=[access.pk]),
        {"post": "yes"},
    )

    assert response.status_code == 302
    assert not AccountAccess.objects.filter(pk=access.pk).exists()
    assert audit_trail(alice_account)[-1] == ("account_access_revoke", admin_user.pk)


def test_suspending_an_account_is_audited_and_its_number_cannot_be_changed(
    admin_client, admin_user, alice_account
):
    number = alice_account.number
    url = reverse("admin:registry_account_change", args=[alice_account.pk])
    data = change_form_data(admin_client.get(url))
    data.update(status="suspended", number="HIJACKED")

    response = admin_client.post(url, data)

    assert response.status_code == 302
    alice_account.refresh_from_db()
    assert (alice_account.number, alice_account.status) == (number, "suspended")
    record = AuditRecord.objects.filter(actor=admin_user).get()
    assert (record.action, record.changes) == (
        "account_change",
        {"status": ["active", "suspended"]},
    )


def test_granting_access_from_the_access_admin_goes_through_the_service(
    admin_client, admin_user, alice_account, bob
):
    response = admin_client.post(
        reverse("admin:registry_accountaccess_add"),
        {"account": alice_account.pk, "user": bob.pk, "role": "trader"},
    )

    assert response.status_code == 302
    assert AccountAccess.objects.get(account=alice_account, user=bob).role == "trader"
    assert audit_trail(alice_account)[-1] == ("account_access_grant", admin_user.pk)


# Deposits and issues ---------------------------------------------------------------


def test_the_deposit_page_offers_only_currencies(admin_client, alice_account, symbol):
    response = admin_client.get(deposit_url(alice_account))

    assert response.status_code == 200
    assert list(response.context["form"].fields["asset"].queryset) == [
        alice_account.currency
    ]


def test_depositing_posts_exactly_the_amount_with_the_admin_as_acting_user(
    admin_client, admin_user, alice_account
):
    aud = alice_account.currency
    earlier_entries = list(JournalEntry.objects.values_list("pk", flat=True))

    response = admin_client.post(
        deposit_url(alice_account),
        {"asset": aud.pk, "amount": "250.75", "reason": "Wire 42"},
    )

    assert response.status_code == 302
    assert response["Location"] == reverse(
        "admin:registry_account_change", args=[alice_account.pk]
    )
    assert balance_of(alice_account, aud).available == Decimal("10250.75")
    entry = JournalEntry.objects.exclude(pk__in=earlier_entries).get()
    assert (entry.kind, entry.acting_user, entry.reason) == (
        "deposit",
        admin_user,
        "Wire 42",
    )
    postings = entry.postings.values_list("account__number", "bucket", "amount")
    assert sorted(postings) == [
        (alice_account.number, "available", Decimal("250.75")),
        ("SYS-OMNIBUS", "available", Decimal("-250.75")),
    ]
    transfer = Transfer.objects.get(kind="deposit", memo="Wire 42")
    assert entry.reference == f"transfer:{transfer.pk}"
    assert (
        transfer.kind,
        transfer.status,
        transfer.account,
        transfer.amount,
        transfer.memo,
        transfer.requested_by,
        transfer.decided_by,
    ) == (
        "deposit",
        "completed",
        alice_account,
        Decimal("250.75"),
        "Wire 42",
        admin_user,
        admin_user,
    )
    assert audit_trail(transfer) == [("deposit", admin_user.pk)]
    assert messages_of(response) == [
        f"Deposited 250.75 AUD to {alice_account.number} "
        f"(transfer #{transfer.pk}, journal entry #{entry.pk})."
    ]
    assert_ledger_balanced()


@pytest.mark.parametrize(
    ("amount", "error"),
    [
        ("0", "The amount must be positive."),
        ("-5.00", "The amount must be positive."),
        ("1.005", "1.005 has more than 2 decimal places."),
        ("ten", "Enter a number."),
    ],
)
def test_a_bad_deposit_amount_shows_the_form_error_and_changes_nothing(
    admin_client, alice_account, amount, error
):
    aud = alice_account.currency
    entries, postings, records = (
        JournalEntry.objects.count(),
        Posting.objects.count(),
        AuditRecord.objects.count(),
    )

    response = admin_client.post(
        deposit_url(alice_account), {"asset": aud.pk, "amount": amount}
    )

    assert response.status_code == 200
    assert response.context["form"].errors == {"amount": [error]}
    assert balance_of(alice_account, aud).available == Decimal("10000.00")
    assert (
        JournalEntry.objects.count(),
        Posting.objects.count(),
        AuditRecord.objects.count(),
    ) == (entries, postings, records)


def test_depositing_a_security_is_refused_as_a_form_error(
    admin_client, alice_account, symbol
):
    entries = JournalEntry.objects.count()

    response = admin_client.post(
        deposit_url(alice_account), {"asset": symbol.asset.pk, "amount": "10"}
    )

    assert response.status_code == 200
    assert response.context["form"].errors == {
        "asset": [
            "Select a valid choice. That choice is not one of the available choices."
        ]
    }
    assert JournalEntry.objects.count() == entries
    assert balance_of(alice_account, symbol.asset).available == Decimal(1000)


def test_depositing_to_a_suspended_account_shows_the_service_error(
    admin_client, alice_account
):
    Account.objects.filter(pk=alice_account.pk).update(status="suspended")
    entries = JournalEntry.objects.count()

    response = admin_client.post(
        deposit_url(alice_account),
        {"asset": alice_account.currency.pk, "amount": "10.00"},
    )

    assert response.status_code == 200
    assert response.context["form"].errors == {
        "__all__": [f"Account {alice_account.number} is suspended."]
    }
    assert JournalEntry.objects.count() == entries


def test_issuing_holdings_credits_the_security_against_the_issuance_account(
    admin_client, admin_user, alice_account, symbol
):
    response = admin_client.post(
        issue_url(alice_account), {"asset": symbol.asset.pk, "amount": "500"}
    )

    assert response.status_code == 302
    assert balance_of(alice_account, symbol.asset).available == Decimal(1500)
    entry = JournalEntry.objects.filter(acting_user=admin_user).get()
    assert (entry.kind, entry.reason) == ("issue", "Security issue")
    assert sorted(entry.postings.values_list("account__number", "amount")) == [
        (alice_account.number, Decimal(500)),
        ("SYS-ISSUANCE", Decimal(-500)),
    ]
    assert_ledger_balanced()


def test_issuing_cash_as_holdings_is_refused(admin_client, alice_account):
    response = admin_client.post(
        issue_url(alice_account),
        {"asset": alice_account.currency.pk, "amount": "5.00"},
    )

    assert response.status_code == 200
    assert list(response.context["form"].errors) == ["asset"]
    assert balance_of(alice_account, alice_account.currency).available == Decimal(
        "10000.00"
    )


def test_the_money_views_of_a_missing_account_redirect_to_the_admin_index(admin_client):
    response = admin_client.get(
        reverse("admin:registry_account_deposit", args=[999999])
    )

    assert (response.status_code, response["Location"]) == (302, reverse("admin:index"))


# Read-only records -----------------------------------------------------------------


@pytest.mark.parametrize("model", READ_ONLY_MODELS)
def test_read_only_records_cannot_be_added(admin_client, model):
    response = admin_client.get(reverse(f"admin:registry_{model}_add"))

    assert response.status_code == 403


@pytest.mark.parametrize("model", READ_ONLY_MODELS)
def test_read_only_records_cannot_be_deleted_or_changed(
    admin_client, alice_account, model
):
    changelist = admin_client.get(reverse(f"admin:registry_{model}_changelist"))
    first = changelist.context["cl"].result_list[0]
    counts = (
        Balance.objects.count(),
        Posting.objects.count(),
        AuditRecord.objects.count(),
    )

    delete = admin_client.post(
        reverse(f"admin:registry_{model}_delete", args=[first.pk]), {"post": "yes"}
    )
    change = admin_client.post(
        reverse(f"admin:registry_{model}_change", args=[first.pk]), {}
    )

    assert (delete.status_code, change.status_code) == (403, 403)
    assert changelist.context["action_form"] is None
    assert (
        Balance.objects.count(),
        Posting.objects.count(),
        AuditRecord.objects.count(),
    ) == counts


def test_accounts_cannot_be_deleted(admin_client, alice_account):
    response = admin_client.post(
        reverse("admin:registry_account_delete", args=[alice_account.pk]),
        {"post": "yes"},
    )

    assert response.status_code == 403
    assert Account.objects.filter(pk=alice_account.pk).exists()
