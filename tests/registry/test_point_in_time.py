"""Balances, holdings and transactions of an account as at any past instant, on the
timed scenario of ``tests/registry/conftest.py`` (T1 deposit, T2 alice's offer, T3
carol's bid and hold, T4 fill, T5 carol's offer and bob's bid, T6 fill)."""

from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from registry.models import Balance, JournalEntry, Posting, Transfer
from tests.registry.conftest import US

pytestmark = pytest.mark.django_db


def get(client, url: str, **params: str) -> Any:
    response = client.get(url, params)
    assert response.status_code == 200, response.json()
    return response.json()


def cash(aud: str, held: str = "0.00") -> list[dict[str, str]]:
    total = str(Decimal(aud) + Decimal(held))
    return [
        {
            "asset": "AUD",
            "available": aud,
            "held": held,
            "unsettled": "0.00",
            "total": total,
        }
    ]


def test_balances_as_at_each_instant_of_the_scenario(scenario):
    client, carol, t = scenario.carol_client, scenario.carol, scenario.t
    url = f"/api/v1/accounts/{carol.pk}/balances"

    def at(moment: datetime) -> Any:
        return get(client, url, as_at=moment.isoformat())

    assert at(t[1] - US) == []
    assert at(t[1]) == cash("5000.00")
    assert at(t[3] - US) == cash("5000.00")
    assert at(t[3]) == cash("3999.00", held="1001.00")
    assert at(t[4] - US) == cash("3999.00", held="1001.00")
    assert at(t[4]) == cash("3999.00")
    assert at(t[6] - US) == cash("3999.00")
    assert at(t[6]) == cash("4478.76")
    # without as_at: the stored balances, which equal the latest derivation
    assert get(client, url) == cash("4478.76") == at(timezone.now())


def holding(quantity, available, held, average, cost) -> dict[str, str]:
    return {
        "symbol": "XSX:XS01",
        "quantity": quantity,
        "available": available,
        "held": held,
        "unsettled": "0",
        "average_cost": average,
        "cost": cost,
    }


def test_holdings_as_at_each_instant_with_their_cost(
    scenario, alice_account, alice_client
):
    client, carol, t = scenario.carol_client, scenario.carol, scenario.t
    url = f"/api/v1/accounts/{carol.pk}/holdings"

    def at(moment: datetime) -> Any:
        return get(client, url, as_at=moment.isoformat())

    assert at(t[4] - US) == []
    assert at(t[4]) == [holding("100", "100", "0", "10.0100", "1001.0000")]
    assert at(t[5]) == [holding("100", "60", "40", "10.0100", "1001.0000")]
    assert at(t[6] - US) == at(t[5])
    assert at(t[6]) == [holding("60", "60", "0", "10.0100", "600.6000")]
    assert get(client, url) == at(t[6])
    # the seller's side: alice's units held from T2, sold at T4 (issued at no cost)
    alice_url = f"/api/v1/accounts/{alice_account.pk}/holdings"
    assert get(alice_client, alice_url, as_at=(t[2] - US).isoformat()) == [
        holding("1000", "1000", "0", "0.0000", "0.0000")
    ]
    assert get(alice_client, alice_url, as_at=t[2].isoformat()) == [
        holding("1000", "900", "100", "0.0000", "0.0000")
    ]
    assert get(alice_client, alice_url, as_at=t[4].isoformat()) == [
        holding("900", "900", "0", "0.0000", "0.0000")
    ]


def test_an_unencoded_plus_in_as_at_is_read_as_the_offset(scenario):
    client, carol, t = scenario.carol_client, scenario.carol, scenario.t
    moment = t[3].astimezone(timezone.get_fixed_timezone(600)).isoformat()
    assert "+10:00" in moment

    response = client.get(f"/api/v1/accounts/{carol.pk}/balances?as_at={moment}")

    assert response.status_code == 200
    assert response.json() == cash("3999.00", held="1001.00")


@pytest.mark.parametrize("path", ["balances", "holdings", "transactions"])
@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("yesterday", "invalid_time"),
        ("2026-13-01T00:00:00+00:00", "invalid_time"),
        ("2026-03-01T00:00:00", "invalid_time"),  # no offset
        ("", "invalid_time"),
        ("2999-01-01T00:00:00Z", "as_at_in_future"),
    ],
)
def test_a_bad_as_at_is_refused_with_400(scenario, path, value, code):
    client, carol = scenario.carol_client, scenario.carol
    before = (
        JournalEntry.objects.count(),
        Posting.objects.count(),
        sorted(Balance.objects.values_list("pk", "available", "held", "cost")),
    )

    response = client.get(f"/api/v1/accounts/{carol.pk}/{path}", {"as_at": value})

    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == (code, "as_at")
    assert before == (
        JournalEntry.objects.count(),
        Posting.objects.count(),
        sorted(Balance.objects.values_list("pk", "available", "held", "cost")),
    )


def test_as_at_answers_only_for_the_callers_accounts(scenario, bob_client):
    response = bob_client.get(
        f"/api/v1/accounts/{scenario.carol.pk}/balances",
        {"as_at": scenario.t[4].isoformat()},
    )

    assert response.status_code == 404


# Transactions ---------------------------------------------------------------------


def rows(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (
            row["created_at"],
            row["kind"],
            row["reference"],
            row["description"],
            row["asset"],
            row["bucket"],
            row["amount"],
            row["balance"],
            row["total"],
            row["cost_delta"],
            row["cost"],
        )
        for row in body["results"]
    ]


def expected_lines(scenario) -> list[tuple[Any, ...]]:
    """carol's ledger lines, oldest first."""
    t, carol = scenario.t, scenario.carol
    first, second = scenario.trades
    buy, sell = scenario.orders["carol_buy"]["id"], scenario.orders["carol_sell"]["id"]
    iso = {n: t[n].isoformat() for n in t}
    deposit = Transfer.objects.get(account=carol, kind=Transfer.Kind.DEPOSIT)
    x = "XSX:XS01"
    buy_text = "Trade: Buy 100 XSX:XS01 @ 10.00"
    sell_text = "Trade: Sell 40 XSX:XS01 @ 12.00"
    return [
        (iso[1], "deposit", deposit.reference, "Deposit (Cash deposit)", "AUD",
         "available", "5000.00", "5000.00", "5000.00", None, None),
        (iso[3], "hold", f"order:{buy}", "Hold for an order", "AUD",
         "available", "-1001.00", "3999.00", "5000.00", None, None),
        (iso[3], "hold", f"order:{buy}", "Hold for an order", "AUD",
         "held", "1001.00", "1001.00", "5000.00", None, None),
        (iso[4], "trade", f"trade:{first.pk}", buy_text, "AUD",
         "held", "-1001.00", "0.00", "3999.00", None, None),
        (iso[4], "trade", f"trade:{first.pk}", buy_text, x,
         "available", "100", "100", "100", "1001.0000", "1001.0000"),
        (iso[5], "hold", f"order:{sell}", "Hold for an order", x,
         "available", "-40", "60", "100", "0.0000", "1001.0000"),
        (iso[5], "hold", f"order:{sell}", "Hold for an order", x,
         "held", "40", "40", "100", "0.0000", "1001.0000"),
        (iso[6], "trade", f"trade:{second.pk}", sell_text, "AUD",
         "available", "479.76", "4478.76", "4478.76", None, None),
        (iso[6], "trade", f"trade:{second.pk}", sell_text, x,
         "held", "-40", "0", "60", "-400.4000", "600.6000"),
    ]  # fmt: skip


def test_transactions_list_every_line_newest_first_with_running_balances(scenario):
    client, carol = scenario.carol_client, scenario.carol

    body = get(client, f"/api/v1/accounts/{carol.pk}/transactions")

    assert rows(body) == expected_lines(scenario)[::-1]
    assert body["next"] is None


def test_transactions_keep_their_running_balances_across_pages(scenario):
    client, carol = scenario.carol_client, scenario.carol
    url = f"/api/v1/accounts/{carol.pk}/transactions"

    pages = [get(client, url, limit="4")]
    while pages[-1]["next"]:
        pages.append(client.get(pages[-1]["next"]).json())

    assert [len(page["results"]) for page in pages] == [4, 4, 1]
    assert [r for page in pages for r in rows(page)] == expected_lines(scenario)[::-1]


def test_transactions_as_at_stop_at_that_instant(scenario):
    client, carol, t = scenario.carol_client, scenario.carol, scenario.t

    body = get(
        client, f"/api/v1/accounts/{carol.pk}/transactions", as_at=t[4].isoformat()
    )

    assert rows(body) == expected_lines(scenario)[:5][::-1]


@pytest.mark.parametrize(
    ("params", "selected"),
    [
        ({"kind": "trade"}, [3, 4, 7, 8]),
        ({"kind": "deposit"}, [0]),
        ({"asset": "XSX:XS01"}, [4, 5, 6, 8]),
        ({"from": 4, "to": 6}, [3, 4, 5, 6]),
        ({"from": 5, "asset": "AUD"}, [7]),
    ],
)
def test_transactions_filter_without_changing_running_balances(
    scenario, params, selected
):
    client, carol, t = scenario.carol_client, scenario.carol, scenario.t
    query = {
        name: t[value].isoformat() if name in ("from", "to") else value
        for name, value in params.items()
    }

    body = get(client, f"/api/v1/accounts/{carol.pk}/transactions", **query)

    lines = expected_lines(scenario)
    assert rows(body) == [lines[i] for i in selected][::-1]


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"kind": "gift"}, "invalid_kind", "kind"),
        ({"asset": "XYZ"}, "unknown_asset", "asset"),
        ({"from": "monday"}, "invalid_time", "from"),
        ({"to": "2026-01-01"}, "invalid_time", "to"),
    ],
)
def test_bad_transaction_filters_are_refused(scenario, params, code, field):
    client, carol = scenario.carol_client, scenario.carol

    response = client.get(f"/api/v1/accounts/{carol.pk}/transactions", params)

    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == (code, field)
