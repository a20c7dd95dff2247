"""The account's "as at" and statement pages in the staff console, on the timed
scenario of ``tests/registry/conftest.py``."""

import csv
import io

import pytest
from django.urls import reverse

from registry.models import JournalEntry

pytestmark = pytest.mark.django_db


def test_the_account_page_links_to_as_at_and_statement(admin_client, scenario):
    carol = scenario.carol

    page = admin_client.get(reverse("admin:registry_account_change", args=[carol.pk]))

    html = page.content.decode()
    assert reverse("admin:registry_account_as_at", args=[carol.pk]) in html
    assert reverse("admin:registry_account_statement", args=[carol.pk]) in html


def test_the_as_at_page_asks_for_an_instant(admin_client, scenario):
    url = reverse("admin:registry_account_as_at", args=[scenario.carol.pk])

    response = admin_client.get(url)

    assert response.status_code == 200
    assert response.context["form"].is_bound is False
    assert 'method="get"' in response.content.decode()
    assert response.context["cash"] == []


def test_the_as_at_page_shows_balances_and_holdings_at_that_instant(
    admin_client, scenario
):
    url = reverse("admin:registry_account_as_at", args=[scenario.carol.pk])
    moment = scenario.t[5].strftime("%Y-%m-%d %H:%M:%S")

    response = admin_client.get(url, {"as_at": moment})

    assert response.status_code == 200
    assert response.context["cash"] == [
        {
            "asset": "AUD",
            "available": "3999.00",
            "held": "0.00",
            "unsettled": "0.00",
            "total": "3999.00",
        }
    ]
    assert response.context["holdings"] == [
        {
            "symbol": "XSX:XS01",
            "quantity": "100",
            "available": "60",
            "held": "40",
            "unsettled": "0",
            "average_cost": "10.0100",
            "cost": "1001.0000",
        }
    ]
    html = response.content.decode()
    assert "1001.0000" in html and "3999.00" in html


def test_the_as_at_page_refuses_a_future_instant(admin_client, scenario):
    url = reverse("admin:registry_account_as_at", args=[scenario.carol.pk])

    response = admin_client.get(url, {"as_at": "2999-01-01 00:00"})

    assert response.status_code == 200
    assert response.context["form"].errors == {"as_at": ["That is in the future."]}
    assert "as-at-results" not in response.content.decode()


def test_the_statement_page_downloads_the_csv(admin_client, scenario):
    url = reverse("admin:registry_account_statement", args=[scenario.carol.pk])
    day = scenario.t[7].date().isoformat()
    first_day = scenario.t[1].date().isoformat()
    before = JournalEntry.objects.count()

    response = admin_client.get(url, {"start": first_day, "end": day, "output": "csv"})

    assert response.status_code == 200
    assert response["Content-Disposition"] == (
        f'attachment; filename="statement-{scenario.carol.number}-{first_day}-{day}.csv"'
    )
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    balances = rows[rows.index(["Balances"]) + 2 : rows.index(["Balances"]) + 8]
    assert balances[0] == ["AUD", "available", "0.00", "4478.76", "4478.76"]
    assert rows[-1] == ["XSX:XS01", "60", "60", "0", "0", "10.0100", "600.6000"]
    assert JournalEntry.objects.count() == before


def test_the_statement_page_shows_the_printable_statement(admin_client, scenario):
    url = reverse("admin:registry_account_statement", args=[scenario.carol.pk])
    day = scenario.t[7].date().isoformat()

    response = admin_client.get(
        url, {"start": scenario.t[1].date().isoformat(), "end": day, "output": "html"}
    )

    assert response.status_code == 200
    page = response.content.decode()
    assert "@media print" in page
    assert "Trade: Sell 40 XSX:XS01 @ 12.00" in page


def test_the_statement_page_refuses_a_period_ending_before_it_starts(
    admin_client, scenario
):
    url = reverse("admin:registry_account_statement", args=[scenario.carol.pk])

    response = admin_client.get(
        url, {"start": "2026-03-02", "end": "2026-03-01", "output": "html"}
    )

    assert response.status_code == 200
    assert response.context["form"].errors == {
        "end": ["The period ends before it starts."]
    }
