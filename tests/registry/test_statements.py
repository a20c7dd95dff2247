"""Account statements on the timed scenario of ``tests/registry/conftest.py``.

The period [T2, T5] of carol's account: opening 5000.00 AUD (the T1 deposit); the
hold of her bid (T3), the fill buying 100 units for 1001.00 (T4), the hold of her
offer of 40 units (T5).
"""

import csv
import io
from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest

from exchange.busts import trade_bust
from registry.models import JournalEntry
from tests import factories

pytestmark = pytest.mark.django_db


def statement(scenario, start, end, output="json", client=None) -> Any:
    client = client or scenario.carol_client
    return client.get(
        f"/api/v1/accounts/{scenario.carol.pk}/statement",
        {"from": start, "to": end, "format": output},
    )


def period(scenario) -> tuple[str, str]:
    return scenario.t[2].isoformat(), scenario.t[5].isoformat()


def test_the_json_statement_of_a_period(scenario):
    t = scenario.t
    first, _ = scenario.trades
    buy, sell = scenario.orders["carol_buy"]["id"], scenario.orders["carol_sell"]["id"]

    response = statement(scenario, *period(scenario))

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["account"]["number"] == scenario.carol.number
    assert (body["from"], body["to"]) == (t[2].isoformat(), t[5].isoformat())
    assert body["balances"] == [
        {"asset": a, "bucket": b, "opening": o, "movements": m, "closing": c}
        for a, b, o, m, c in [
            ("AUD", "available", "5000.00", "-1001.00", "3999.00"),
            ("AUD", "held", "0.00", "0.00", "0.00"),
            ("AUD", "unsettled", "0.00", "0.00", "0.00"),
            ("XSX:XS01", "available", "0", "60", "60"),
            ("XSX:XS01", "held", "0", "40", "40"),
            ("XSX:XS01", "unsettled", "0", "0", "0"),
        ]
    ]
    buy_text = "Trade: Buy 100 XSX:XS01 @ 10.00"
    assert [
        (
            r["created_at"],
            r["kind"],
            r["reference"],
            r["description"],
            r["asset"],
            r["bucket"],
            r["amount"],
            r["balance"],
        )
        for r in body["transactions"]
    ] == [
        (t[3].isoformat(), "hold", f"order:{buy}", "Hold for an order", "AUD",
         "available", "-1001.00", "3999.00"),
        (t[3].isoformat(), "hold", f"order:{buy}", "Hold for an order", "AUD",
         "held", "1001.00", "1001.00"),
        (t[4].isoformat(), "trade", f"trade:{first.pk}", buy_text, "AUD",
         "held", "-1001.00", "0.00"),
        (t[4].isoformat(), "trade", f"trade:{first.pk}", buy_text, "XSX:XS01",
         "available", "100", "100"),
        (t[5].isoformat(), "hold", f"order:{sell}", "Hold for an order", "XSX:XS01",
         "available", "-40", "60"),
        (t[5].isoformat(), "hold", f"order:{sell}", "Hold for an order", "XSX:XS01",
         "held", "40", "40"),
    ]  # fmt: skip
    assert body["trades"] == [
        {
            "trade": first.pk,
            "executed_at": t[4].isoformat(),
            "symbol": "XSX:XS01",
            "side": "buy",
            "price": "10.00",
            "quantity": "100",
            "value": "1000.00",
            "fee": "1.00",
            "currency": "AUD",
            "busted_at": None,
            "corrected_from": None,
        }
    ]
    assert body["busts"] == []
    assert body["fees"] == [
        {"currency": "AUD", "charged": "1.00", "refunded": "0.00", "total": "1.00"}
    ]
    assert body["positions"] == [
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


@pytest.mark.parametrize(
    "bounds",
    [(2, 5), (1, 7), (3, 3), (4, 6), (6, 7)],
)
def test_statement_totals_reconcile_exactly(scenario, bounds):
    """opening + movements = closing per asset and bucket; the movements are the
    sum of the listed lines; each bucket's last running balance is its closing
    figure; and the closing figures are the balances as at the period's end."""
    start, end = (scenario.t[n] for n in bounds)

    body = statement(scenario, start.isoformat(), end.isoformat()).json()

    listed: defaultdict[tuple[str, str], Decimal] = defaultdict(Decimal)
    last: dict[tuple[str, str], Decimal] = {}
    for line in body["transactions"]:
        key = (line["asset"], line["bucket"])
        listed[key] += Decimal(line["amount"])
        last[key] = Decimal(line["balance"])
    for row in body["balances"]:
        key = (row["asset"], row["bucket"])
        opening, moved, closing = (
            Decimal(row[f]) for f in ("opening", "movements", "closing")
        )
        assert opening + moved == closing, row
        assert moved == listed[key], row
        assert last.get(key, closing) == closing, row
    as_at = scenario.carol_client.get(
        f"/api/v1/accounts/{scenario.carol.pk}/balances", {"as_at": end.isoformat()}
    ).json()
    closing_cash = {
        (row["asset"], row["bucket"]): row["closing"]
        for row in body["balances"]
        if row["asset"] == "AUD"
    }
    for balance in as_at:
        for bucket in ("available", "held", "unsettled"):
            assert closing_cash[("AUD", bucket)] == balance[bucket]


def test_the_csv_statement_is_a_download_with_exact_rows(scenario):
    t = scenario.t
    first, _ = scenario.trades
    buy, sell = scenario.orders["carol_buy"]["id"], scenario.orders["carol_sell"]["id"]
    number = scenario.carol.number

    response = statement(scenario, *period(scenario), output="csv")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    day2, day5 = t[2].date().isoformat(), t[5].date().isoformat()
    assert response["Content-Disposition"] == (
        f'attachment; filename="statement-{number}-{day2}-{day5}.csv"'
    )
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    generated = rows[2][1]
    buy_text = "Trade: Buy 100 XSX:XS01 @ 10.00"
    assert rows == [
        ["Statement", number, f"Client {number}"],
        ["From", t[2].isoformat(), "To", t[5].isoformat()],
        ["Generated", generated],
        [],
        ["Balances"],
        ["asset", "bucket", "opening", "movements", "closing"],
        ["AUD", "available", "5000.00", "-1001.00", "3999.00"],
        ["AUD", "held", "0.00", "0.00", "0.00"],
        ["AUD", "unsettled", "0.00", "0.00", "0.00"],
        ["XSX:XS01", "available", "0", "60", "60"],
        ["XSX:XS01", "held", "0", "40", "40"],
        ["XSX:XS01", "unsettled", "0", "0", "0"],
        [],
        ["Transactions"],
        ["created_at", "entry", "kind", "reference", "description", "asset", "bucket",
         "amount", "balance"],
        [t[3].isoformat(), entry(buy), "hold", f"order:{buy}", "Hold for an order",
         "AUD", "available", "-1001.00", "3999.00"],
        [t[3].isoformat(), entry(buy), "hold", f"order:{buy}", "Hold for an order",
         "AUD", "held", "1001.00", "1001.00"],
        [t[4].isoformat(), trade_entry(first), "trade", f"trade:{first.pk}", buy_text,
         "AUD", "held", "-1001.00", "0.00"],
        [t[4].isoformat(), trade_entry(first), "trade", f"trade:{first.pk}", buy_text,
         "XSX:XS01", "available", "100", "100"],
        [t[5].isoformat(), entry(sell), "hold", f"order:{sell}", "Hold for an order",
         "XSX:XS01", "available", "-40", "60"],
        [t[5].isoformat(), entry(sell), "hold", f"order:{sell}", "Hold for an order",
         "XSX:XS01", "held", "40", "40"],
        [],
        ["Trades"],
        ["executed_at", "trade", "symbol", "side", "price", "quantity", "value", "fee",
         "currency", "busted_at"],
        [t[4].isoformat(), str(first.pk), "XSX:XS01", "buy", "10.00", "100", "1000.00",
         "1.00", "AUD", ""],
        [],
        ["Busts"],
        ["executed_at", "trade", "symbol", "side", "price", "quantity", "value", "fee",
         "currency", "busted_at"],
        [],
        ["Fees"],
        ["currency", "charged", "refunded", "total"],
        ["AUD", "1.00", "0.00", "1.00"],
        [],
        ["Positions"],
        ["symbol", "quantity", "available", "held", "unsettled", "average_cost", "cost"],
        ["XSX:XS01", "100", "60", "40", "0", "10.0100", "1001.0000"],
    ]  # fmt: skip


def entry(order_id: int) -> str:
    return str(JournalEntry.objects.get(kind="hold", reference=f"order:{order_id}").pk)


def trade_entry(trade) -> str:
    return str(JournalEntry.objects.get(kind="trade", reference=f"trade:{trade.pk}").pk)


def test_the_html_statement_is_a_printable_page_with_the_figures(scenario):
    response = statement(scenario, *period(scenario), output="html")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    page = response.content.decode()
    assert f"Statement of account {scenario.carol.number}" in page
    assert "@media print" in page
    for figure in (
        "5000.00",
        "-1001.00",
        "3999.00",
        "Trade: Buy 100 XSX:XS01 @ 10.00",
        "1000.00",
        "10.0100",
        "1001.0000",
    ):
        assert figure in page


def test_dates_cover_whole_days_and_an_unfinished_period_ends_now(scenario):
    t = scenario.t
    start_day, end_day = t[1].date().isoformat(), t[7].date().isoformat()

    body = statement(scenario, start_day, end_day).json()

    assert body["from"] == f"{start_day}T00:00:00+00:00"
    assert body["to"] == t[7].isoformat()  # the clock stands at T7
    assert [row["closing"] for row in body["balances"][:3]] == [
        "4478.76",
        "0.00",
        "0.00",
    ]
    assert [trade["side"] for trade in body["trades"]] == ["buy", "sell"]
    assert body["fees"] == [
        {"currency": "AUD", "charged": "1.24", "refunded": "0.00", "total": "1.24"}
    ]
    assert body["positions"][0]["cost"] == "600.6000"


def test_a_bust_in_the_period_shows_its_reversal_and_the_fee_returned(scenario):
    _, second = scenario.trades
    staff = factories.user("staffer", is_staff=True)
    trade_bust(trade=second, acting_user=staff, reason="Wrong price")

    body = statement(scenario, scenario.t[6].isoformat(), scenario.t[7].isoformat())
    body = body.json()

    assert [
        (r["kind"], r["asset"], r["bucket"], r["amount"]) for r in body["transactions"]
    ] == [
        ("trade", "AUD", "available", "479.76"),
        ("trade", "XSX:XS01", "held", "-40"),
        ("bust", "AUD", "available", "-479.76"),
        ("bust", "XSX:XS01", "available", "40"),
    ]
    bust_line = body["transactions"][2]
    assert bust_line["description"] == (
        "Trade bust: Sell 40 XSX:XS01 @ 12.00 (Wrong price)"
    )
    assert [b["trade"] for b in body["busts"]] == [second.pk]
    assert body["trades"][0]["busted_at"] is not None
    assert body["fees"] == [
        {"currency": "AUD", "charged": "0.24", "refunded": "0.24", "total": "0.00"}
    ]
    assert body["positions"][0]["quantity"] == "100"
    assert body["positions"][0]["cost"] == "1001.0000"


@pytest.mark.parametrize(
    ("params", "code", "field"),
    [
        ({"to": "2026-01-31"}, "required", "from"),
        ({"from": "2026-01-01"}, "required", "to"),
        ({"from": "2026-02-30", "to": "2026-03-01"}, "invalid_time", "from"),
        ({"from": "2026-01-01T00:00:00", "to": "2026-03-01"}, "invalid_time", "from"),
        ({"from": "2026-03-01", "to": "2026-01-01"}, "invalid_period", "from"),
        ({"from": "2999-01-01", "to": "2999-01-02"}, "invalid_period", "from"),
        ({"from": "2026-01-01", "to": "2026-03-01", "format": "pdf"}, "invalid_format",
         "format"),
    ],
)  # fmt: skip
def test_bad_statement_requests_are_refused(scenario, params, code, field):
    before = JournalEntry.objects.count()

    response = scenario.carol_client.get(
        f"/api/v1/accounts/{scenario.carol.pk}/statement", params
    )

    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == (code, field)
    assert JournalEntry.objects.count() == before


def test_only_the_accounts_users_get_its_statement(scenario, bob_client):
    response = statement(scenario, *period(scenario), client=bob_client)

    assert response.status_code == 404
