"""Scans: REST, evaluation after matching batches, the ``scan.<id>`` topic, the
system scans and the admin."""

import importlib
import threading
from decimal import Decimal
from types import SimpleNamespace

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.apps import apps as django_apps
from django.db import connection, connections
from django.urls import reverse

from config.asgi import application
from exchange.models import Trade
from exchange.streams import stream_current
from marketdata import scans
from marketdata.models import Scan, SecuritySummary
from marketdata.prices import summary_to_wire
from marketdata.scans import (
    MAX_SCANS_PER_USER,
    scan_create,
    scan_to_wire,
    scans_evaluate,
    scans_loaded,
)
from oms.services import OrderSpec, order_place
from registry.models import AuditRecord
from tests import factories
from tests.conftest import MatcherThread, client_for, wait_for

MIGRATION = importlib.import_module("marketdata.migrations.0002_system_scans")
ORIGIN = [(b"origin", b"http://127.0.0.1:8000")]
SYSTEM_SCANS = [
    ("Most active", "volume > 0", "-volume", 10),
    ("Top gainers", "change_percent > 0", "-change_percent", 10),
    ("Top losers", "change_percent < 0", "change_percent", 10),
]


def install_system_scans() -> dict[str, Scan]:
    """The data migration's own forward step (idempotent): transactional tests
    empty the tables the migration filled."""
    MIGRATION.system_scans_create(django_apps, SimpleNamespace(connection=connection))
    return {scan.name: scan for scan in Scan.objects.filter(owner=None)}


@pytest.fixture
def system_scans(db) -> dict[str, Scan]:
    return install_system_scans()


def set_summary(symbol, **fields) -> SecuritySummary:
    values = {
        name: Decimal(value) if isinstance(value, str) else value
        for name, value in fields.items()
    }
    summary, _ = SecuritySummary.objects.update_or_create(
        symbol=symbol, defaults=values
    )
    return summary


def matches_of(scan: Scan) -> list[str]:
    return scan_to_wire(scans_loaded().get(pk=scan.pk))["matches"]


def wire_of(symbol) -> dict:
    return summary_to_wire(SecuritySummary.objects.get(symbol=symbol), symbol)


@pytest.fixture
def published(monkeypatch) -> list:
    """The messages the scan services hand over for publishing after commit."""
    messages: list = []
    monkeypatch.setattr(scans, "publish_on_commit", messages.extend)
    return messages


@pytest.fixture
def xs02(market):
    return factories.symbol(market, "XS02")


def place(user, account, symbol_id: str, side: str, price: str, quantity: str):
    spec = OrderSpec(
        account_id=account.pk,
        symbol=symbol_id,
        side=side,
        type="limit",
        time_in_force="gtc",
        quantity=Decimal(quantity),
        price=Decimal(price),
    )
    return order_place(user=user, spec=spec).order


def trade(buyer, buyer_account, seller, seller_account, symbol_id, price, quantity):
    place(seller, seller_account, symbol_id, "sell", price, quantity)
    place(buyer, buyer_account, symbol_id, "buy", price, quantity)


# -- the data migration ---------------------------------------------------------------


@pytest.mark.django_db
def test_the_data_migration_installs_the_three_system_scans():
    assert (
        list(
            Scan.objects.filter(owner=None)
            .order_by("name")
            .values_list("name", "criteria", "order_by", "limit")
        )
        == SYSTEM_SCANS
    )


@pytest.mark.django_db
def test_the_data_migration_reverses_by_deleting_the_system_scans(alice):
    mine = scan_create(owner=alice, name="Mine", criteria="last > 1", acting_user=alice)
    editor = SimpleNamespace(connection=connection)

    MIGRATION.system_scans_delete(django_apps, editor)
    assert list(Scan.objects.values_list("pk", flat=True)) == [mine.pk]

    MIGRATION.system_scans_create(django_apps, editor)
    assert (
        sorted(
            Scan.objects.filter(owner=None).values_list(
                "name", "criteria", "order_by", "limit"
            )
        )
        == SYSTEM_SCANS
    )


# -- REST -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_user_creates_a_scan_and_gets_its_current_matches(
    alice, alice_client, symbol, xs02
):
    set_summary(symbol, last="10.60")
    set_summary(xs02, last="10.40")

    response = alice_client.post(
        "/api/v1/scans",
        {"name": "Above 10.50", "criteria": "last > 10.50"},
        format="json",
    )

    assert response.status_code == 201
    scan = Scan.objects.get(name="Above 10.50")
    assert response.json() == {
        "id": scan.pk,
        "name": "Above 10.50",
        "criteria": "last > 10.50",
        "is_system": False,
        "order_by": "",
        "limit": None,
        "matches": ["XSX:XS01"],
    }
    assert (scan.owner, list(scan.matches.all())) == (alice, [symbol])
    audit = AuditRecord.objects.get(action="scan_create")
    assert (audit.actor, audit.object_id, audit.changes) == (
        alice,
        str(scan.pk),
        {
            "name": "Above 10.50",
            "criteria": "last > 10.50",
            "order_by": "",
            "limit": None,
        },
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("criteria", "message"),
    [
        ("foo > 1", "unknown field 'foo' at 1"),
        ("last > 10.50 and", "unexpected end of criteria at 17"),
        ("last >> 1", "expected a field or a number at 7"),
        ("", "criteria are empty"),
        ("last > 1 and " * 40 + "last > 1", "criteria are longer than 500 characters"),
    ],
)
def test_invalid_criteria_are_refused_naming_the_position_and_nothing_is_stored(
    alice_client, symbol, criteria, message
):
    set_summary(symbol, last="10.60")
    scans_before = list(Scan.objects.values_list("pk", flat=True))

    response = alice_client.post(
        "/api/v1/scans", {"name": "Bad", "criteria": criteria}, format="json"
    )

    assert (response.status_code, response.json()) == (
        400,
        {"code": "invalid_criteria", "message": message, "field": "criteria"},
    )
    assert list(Scan.objects.values_list("pk", flat=True)) == scans_before
    assert not AuditRecord.objects.filter(action="scan_create").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"order_by": "-price", "limit": 5},
            {
                "code": "invalid_order_by",
                "message": "unknown field 'price' at 2",
                "field": "order_by",
            },
        ),
        (
            {"limit": 5},
            {
                "code": "invalid_limit",
                "message": "A limit is from 1 to 100 and needs an order_by.",
                "field": "limit",
            },
        ),
        (
            {"order_by": "volume", "limit": 0},
            {
                "code": "invalid_limit",
                "message": "A limit is from 1 to 100 and needs an order_by.",
                "field": "limit",
            },
        ),
    ],
)
def test_a_bad_ranking_is_refused_and_nothing_is_stored(alice_client, body, expected):
    scans_before = Scan.objects.count()

    response = alice_client.post(
        "/api/v1/scans",
        {"name": "Ranked", "criteria": "volume > 0", **body},
        format="json",
    )

    assert (response.status_code, response.json()) == (400, expected)
    assert Scan.objects.count() == scans_before


@pytest.mark.django_db
def test_a_user_keeps_at_most_twenty_scans(alice, alice_client):
    for number in range(MAX_SCANS_PER_USER):
        scan_create(
            owner=alice, name=f"Scan {number}", criteria="last > 1", acting_user=alice
        )

    response = alice_client.post(
        "/api/v1/scans", {"name": "One more", "criteria": "last > 1"}, format="json"
    )

    assert (response.status_code, response.json()) == (
        409,
        {"code": "too_many_scans", "message": "A user keeps at most 20 scans."},
    )
    assert Scan.objects.filter(owner=alice).count() == MAX_SCANS_PER_USER


@pytest.mark.django_db
def test_the_list_holds_the_users_own_scans_and_the_system_scans(
    alice, bob, alice_client, system_scans
):
    mine = scan_create(
        owner=alice, name="Cheap", criteria="last < 1", acting_user=alice
    )
    scan_create(owner=bob, name="Bobs", criteria="last > 1", acting_user=bob)

    response = alice_client.get("/api/v1/scans")

    assert response.status_code == 200
    body = response.json()
    assert (body["count"], body["next"], body["previous"]) == (4, None, None)
    assert [(s["id"], s["name"], s["is_system"]) for s in body["results"]] == [
        (mine.pk, "Cheap", False),
        (system_scans["Most active"].pk, "Most active", True),
        (system_scans["Top gainers"].pk, "Top gainers", True),
        (system_scans["Top losers"].pk, "Top losers", True),
    ]


@pytest.mark.django_db
def test_the_list_costs_the_same_queries_for_many_scans_and_matches(
    alice, alice_client, symbol, xs02, django_assert_num_queries
):
    set_summary(symbol, last="10.60", volume="5")
    set_summary(xs02, last="10.70", volume="9")
    for number in range(5):
        scan_create(
            owner=alice, name=f"Scan {number}", criteria="last > 1", acting_user=alice
        )

    # count, page of scans, their matches with markets and summaries
    with django_assert_num_queries(3):
        response = alice_client.get("/api/v1/scans")

    results = response.json()["results"]
    assert [s["matches"] for s in results if not s["is_system"]] == [
        ["XSX:XS01", "XSX:XS02"]
    ] * 5


@pytest.mark.django_db
def test_a_ranked_scan_lists_its_matches_best_first(alice, alice_client, symbol, xs02):
    xs03 = factories.symbol(symbol.market, "XS03")
    set_summary(symbol, volume="300")
    set_summary(xs02, volume="500")
    set_summary(xs03, volume="100")

    response = alice_client.post(
        "/api/v1/scans",
        {
            "name": "Busiest two",
            "criteria": "volume > 0",
            "order_by": "-volume",
            "limit": 2,
        },
        format="json",
    )

    assert response.status_code == 201
    assert (response.json()["order_by"], response.json()["limit"]) == ("-volume", 2)
    assert response.json()["matches"] == ["XSX:XS02", "XSX:XS01"]
    detail = alice_client.get(f"/api/v1/scans/{response.json()['id']}")
    assert detail.json()["matches"] == ["XSX:XS02", "XSX:XS01"]


@pytest.mark.django_db
def test_another_user_can_neither_see_nor_delete_a_private_scan(
    alice, bob_client, symbol
):
    set_summary(symbol, last="10.60")
    scan = scan_create(
        owner=alice, name="Private", criteria="last > 10.50", acting_user=alice
    )
    not_found = {"code": "scan_not_found", "message": f"There is no scan {scan.pk}."}

    read = bob_client.get(f"/api/v1/scans/{scan.pk}")
    delete = bob_client.delete(f"/api/v1/scans/{scan.pk}")
    listed = bob_client.get("/api/v1/scans")

    assert (read.status_code, read.json()) == (404, not_found)
    assert (delete.status_code, delete.json()) == (404, not_found)
    assert scan.pk not in [s["id"] for s in listed.json()["results"]]
    assert list(Scan.objects.get(pk=scan.pk).matches.all()) == [symbol]
    assert not AuditRecord.objects.filter(action="scan_delete").exists()


@pytest.mark.django_db
def test_a_client_cannot_delete_a_system_scan(alice_client, system_scans):
    top_gainers = system_scans["Top gainers"]

    response = alice_client.delete(f"/api/v1/scans/{top_gainers.pk}")

    assert (response.status_code, response.json()) == (
        403,
        {"code": "scan_read_only", "message": "System scans are read-only."},
    )
    assert Scan.objects.filter(pk=top_gainers.pk).exists()


@pytest.mark.django_db
def test_a_user_reads_and_deletes_their_own_scan(alice, alice_client, symbol):
    set_summary(symbol, last="10.60")
    scan = scan_create(
        owner=alice, name="Mine", criteria="last > 10.50", acting_user=alice
    )

    read = alice_client.get(f"/api/v1/scans/{scan.pk}")
    delete = alice_client.delete(f"/api/v1/scans/{scan.pk}")

    assert (read.status_code, read.json()["matches"]) == (200, ["XSX:XS01"])
    assert (delete.status_code, delete.content) == (204, b"")
    assert not Scan.objects.filter(pk=scan.pk).exists()
    audit = AuditRecord.objects.get(action="scan_delete")
    assert (audit.actor, audit.object_id, audit.changes) == (
        alice,
        str(scan.pk),
        {"name": "Mine", "criteria": "last > 10.50"},
    )


@pytest.mark.django_db
@pytest.mark.parametrize("scan_id", ["abc", "999999", "99999999999999999999999"])
def test_an_unknown_scan_is_not_found(alice_client, scan_id):
    response = alice_client.get(f"/api/v1/scans/{scan_id}")

    assert (response.status_code, response.json()) == (
        404,
        {"code": "scan_not_found", "message": f"There is no scan {scan_id}."},
    )


@pytest.mark.django_db
def test_anonymous_clients_cannot_use_scans(client):
    listed = client.get("/api/v1/scans")
    created = client.post(
        "/api/v1/scans",
        {"name": "x", "criteria": "last > 1"},
        content_type="application/json",
    )

    assert (listed.status_code, listed.json()["code"]) == (401, "not_authenticated")
    assert (created.status_code, created.json()["code"]) == (401, "not_authenticated")
    assert not Scan.objects.filter(name="x").exists()


# -- evaluation -------------------------------------------------------------------------


@pytest.mark.django_db
def test_evaluation_announces_added_and_removed_symbols_in_one_message_per_scan(
    alice, symbol, xs02, published
):
    set_summary(symbol, last="10.40")
    set_summary(xs02, last="10.60")
    scan = scan_create(
        owner=alice, name="Above", criteria="last > 10.50", acting_user=alice
    )
    set_summary(symbol, last="10.60")
    set_summary(xs02, last="10.40")

    changed = scans_evaluate(symbol_ids=[symbol.pk, xs02.pk])

    topic = f"scan.{scan.pk}"
    assert changed == 1
    assert published == [
        (
            topic,
            {
                "type": "stream.message",
                "topic": topic,
                "seq": 1,
                "data": {"added": [wire_of(symbol)], "removed": ["XSX:XS02"]},
            },
        )
    ]
    assert matches_of(scan) == ["XSX:XS01"]
    assert stream_current([topic]) == {topic: 1}


@pytest.mark.django_db
def test_evaluating_the_same_symbols_again_changes_and_publishes_nothing(
    alice, symbol, published
):
    set_summary(symbol, last="10.40")
    scan = scan_create(
        owner=alice, name="Above", criteria="last > 10.50", acting_user=alice
    )
    set_summary(symbol, last="10.60")
    assert scans_evaluate(symbol_ids=[symbol.pk]) == 1
    del published[:]

    again = scans_evaluate(symbol_ids=[symbol.pk])

    assert (again, published) == (0, [])
    assert matches_of(scan) == ["XSX:XS01"]
    assert stream_current([f"scan.{scan.pk}"]) == {f"scan.{scan.pk}": 1}


@pytest.mark.django_db
def test_an_unranked_scan_re_evaluates_only_the_changed_symbols(
    alice, symbol, xs02, published
):
    set_summary(symbol, last="10.60")
    set_summary(xs02, last="10.60")
    scan = scan_create(
        owner=alice, name="Above", criteria="last > 10.50", acting_user=alice
    )
    set_summary(symbol, last="10.40")
    set_summary(xs02, last="10.40")

    scans_evaluate(symbol_ids=[xs02.pk])

    assert matches_of(scan) == ["XSX:XS01"]
    assert published[0][1]["data"] == {"added": [], "removed": ["XSX:XS02"]}


@pytest.mark.django_db
def test_top_gainers_keep_the_ten_best_by_change_percent_ties_by_symbol_id(
    market, symbol, system_scans, published
):
    # Created in reverse so that database ids and symbol ids disagree on ties.
    others = {
        code: factories.symbol(market, code)
        for code in reversed([f"XS{n:02d}" for n in range(2, 14)])
    }
    lasts = {
        "XS01": "10.10",  # +1%
        "XS02": "10.50",  # +5%, tied with XS03
        "XS03": "10.50",
        "XS04": "11.00",  # +10%
        "XS05": "9.00",  # -10%
        "XS06": None,  # never traded
        "XS07": "10.20",
        "XS08": "10.30",
        "XS09": "10.40",
        "XS10": "10.60",
        "XS11": "10.70",
        "XS12": "10.01",  # +0.1%: the eleventh gainer, left out
        "XS13": "10.80",
    }
    symbols = {"XS01": symbol, **others}
    for code, last in lasts.items():
        set_summary(symbols[code], last=last, previous_close="10.00")

    scans_evaluate(symbol_ids=[symbols["XS12"].pk])

    expected = [
        "XS04",
        "XS13",
        "XS11",
        "XS10",
        "XS02",
        "XS03",
        "XS09",
        "XS08",
        "XS07",
        "XS01",
    ]
    assert matches_of(system_scans["Top gainers"]) == [f"XSX:{c}" for c in expected]
    assert matches_of(system_scans["Top losers"]) == ["XSX:XS05"]
    messages = {topic: message["data"] for topic, message in published}
    gainers = messages[f"scan.{system_scans['Top gainers'].pk}"]
    assert [wire["symbol"] for wire in gainers["added"]] == [
        f"XSX:{c}" for c in expected
    ]
    assert gainers["removed"] == []


@pytest.mark.django_db
def test_a_ranked_scan_drops_the_symbol_pushed_out_of_its_top(
    market, symbol, xs02, system_scans, published
):
    for code in [f"XS{n:02d}" for n in range(3, 12)]:
        set_summary(factories.symbol(market, code), volume="100")
    set_summary(symbol, volume="50")
    scans_evaluate(symbol_ids=[symbol.pk])
    most_active = system_scans["Most active"]
    assert "XSX:XS01" in matches_of(most_active)
    del published[:]

    set_summary(xs02, volume="75")
    scans_evaluate(symbol_ids=[xs02.pk])

    assert len(matches_of(most_active)) == 10
    assert "XSX:XS01" not in matches_of(most_active)
    assert published == [
        (
            f"scan.{most_active.pk}",
            {
                "type": "stream.message",
                "topic": f"scan.{most_active.pk}",
                "seq": 2,
                "data": {"added": [wire_of(xs02)], "removed": ["XSX:XS01"]},
            },
        )
    ]


@pytest.mark.django_db
def test_a_scan_with_broken_stored_criteria_is_skipped_and_the_others_carry_on(
    alice, symbol, published
):
    set_summary(symbol, last="10.40")
    broken = scan_create(
        owner=alice, name="Broken", criteria="last > 1", acting_user=alice
    )
    Scan.objects.filter(pk=broken.pk).update(criteria="last >")
    good = scan_create(
        owner=alice, name="Good", criteria="last > 10.50", acting_user=alice
    )
    set_summary(symbol, last="10.60")

    assert scans_evaluate(symbol_ids=[symbol.pk]) == 1

    assert [topic for topic, _ in published] == [f"scan.{good.pk}"]
    assert matches_of(broken) == ["XSX:XS01"]  # as it was


@pytest.mark.django_db(transaction=True)
def test_two_evaluations_of_the_same_change_racing_store_and_publish_it_once(
    alice, symbol, published
):
    set_summary(symbol, last="10.40")
    scan = scan_create(
        owner=alice, name="Above", criteria="last > 10.50", acting_user=alice
    )
    set_summary(symbol, last="10.60")
    start = threading.Barrier(2)
    results: list[int] = []

    def evaluate() -> None:
        start.wait()
        try:
            results.append(scans_evaluate(symbol_ids=[symbol.pk]))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=evaluate) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert sorted(results) == [0, 1]
    assert [(topic, message["seq"]) for topic, message in published] == [
        (f"scan.{scan.pk}", 1)
    ]
    assert matches_of(scan) == ["XSX:XS01"]
    assert stream_current([f"scan.{scan.pk}"]) == {f"scan.{scan.pk}": 1}


# -- over a running matcher --------------------------------------------------------------


async def receive(ws: WebsocketCommunicator, timeout: float = 10) -> dict:
    """The next frame that is not a heartbeat."""
    while True:
        frame = await ws.receive_json_from(timeout=timeout)
        if frame.get("type") != "heartbeat":
            return frame


async def connect(user=None) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, "/ws/v1/", headers=ORIGIN)
    if user is not None:
        # channels' test scope type has no "user" (AuthMiddleware adds it).
        communicator.scope["user"] = user  # type: ignore[typeddict-unknown-key]
    connected, _ = await communicator.connect()
    assert connected
    return communicator


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_scan_announces_a_symbol_trading_above_its_level_and_drops_it_below(
    market, symbol, alice, bob, alice_account, bob_account
):
    scan = await database_sync_to_async(scan_create)(
        owner=alice, name="Above 10.50", criteria="last > 10.50", acting_user=alice
    )
    topic = f"scan.{scan.pk}"
    matcher = MatcherThread("XSX").start()
    try:
        ws = await connect(alice)
        await ws.send_json_to({"op": "subscribe", "topics": [topic]})
        assert await receive(ws) == {
            "type": "snapshot",
            "topic": topic,
            "seq": 0,
            "data": {
                "id": scan.pk,
                "name": "Above 10.50",
                "criteria": "last > 10.50",
                "is_system": False,
                "order_by": "",
                "limit": None,
                "matches": [],
            },
        }

        await database_sync_to_async(trade)(
            bob, bob_account, alice, alice_account, "XSX:XS01", "10.60", "100"
        )
        added = await receive(ws)

        await database_sync_to_async(trade)(
            bob, bob_account, alice, alice_account, "XSX:XS01", "10.40", "50"
        )
        removed = await receive(ws)

        assert (added["type"], added["topic"], added["seq"]) == ("update", topic, 1)
        assert [
            (w["symbol"], w["last"], w["volume"], w["trades"])
            for w in added["data"]["added"]
        ] == [("XSX:XS01", "10.60", "100", 1)]
        assert added["data"]["removed"] == []
        assert removed == {
            "type": "update",
            "topic": topic,
            "seq": 2,
            "data": {"added": [], "removed": ["XSX:XS01"]},
        }
        assert await ws.receive_nothing(timeout=0.5)
        assert await database_sync_to_async(matches_of)(scan) == []
        await ws.disconnect()
    finally:
        await database_sync_to_async(matcher.stop)()


@pytest.mark.django_db(transaction=True)
def test_top_gainers_rank_the_symbols_traded_on_a_running_matcher(
    market, symbol, alice, bob
):
    scans_by_name = install_system_scans()
    symbols = [symbol] + [factories.symbol(market, f"XS0{n}") for n in (2, 3, 4)]
    holdings = {s: "1000" for s in symbols}
    seller = factories.account(alice, cash="100000.00", holdings=holdings)
    buyer = factories.account(bob, cash="100000.00")
    for each in symbols:
        set_summary(each, previous_close="10.00")
    trades = [  # symbol, price, quantity: +2%, +5%, -5%, +5% (a tie with XS02)
        ("XSX:XS01", "10.20", "300"),
        ("XSX:XS02", "10.50", "100"),
        ("XSX:XS03", "9.50", "200"),
        ("XSX:XS04", "10.50", "50"),
    ]
    client = client_for(alice)
    matcher = MatcherThread("XSX").start()
    try:
        for symbol_id, price, quantity in trades:
            trade(bob, buyer, alice, seller, symbol_id, price, quantity)
        wait_for(lambda: Trade.objects.count() == 4)

        def matches(name: str) -> list[str]:
            scan_id = scans_by_name[name].pk
            return client.get(f"/api/v1/scans/{scan_id}").json()["matches"]

        expected = {
            "Top gainers": ["XSX:XS02", "XSX:XS04", "XSX:XS01"],
            "Top losers": ["XSX:XS03"],
            "Most active": ["XSX:XS01", "XSX:XS03", "XSX:XS02", "XSX:XS04"],
        }
        wait_for(lambda: {name: matches(name) for name in expected} == expected)
    finally:
        matcher.stop()
    summary = SecuritySummary.objects.get(symbol__code="XS02")
    assert (summary.previous_close, summary.last, summary.change_percent) == (
        Decimal("10.00"),
        Decimal("10.50"),
        Decimal(5),
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_another_user_cannot_subscribe_to_a_private_scan(alice, bob, symbol):
    scans_by_name = await database_sync_to_async(install_system_scans)()
    scan = await database_sync_to_async(scan_create)(
        owner=alice, name="Private", criteria="last > 10.50", acting_user=alice
    )
    bob_ws, anonymous_ws = await connect(bob), await connect()
    unknown = ("error", "unknown_topic", f"There is no topic 'scan.{scan.pk}'.")

    for ws in (bob_ws, anonymous_ws):
        await ws.send_json_to({"op": "subscribe", "topics": [f"scan.{scan.pk}"]})
        error = await receive(ws)
        assert (error["type"], error["code"], error["message"]) == unknown
    await anonymous_ws.send_json_to({"op": "subscribe", "topics": ["scan.abc"]})
    assert (await receive(anonymous_ws))["code"] == "unknown_topic"
    top_gainers = f"scan.{scans_by_name['Top gainers'].pk}"
    await anonymous_ws.send_json_to({"op": "subscribe", "topics": [top_gainers]})
    snapshot = await receive(anonymous_ws)

    assert (snapshot["type"], snapshot["topic"], snapshot["seq"]) == (
        "snapshot",
        top_gainers,
        0,
    )
    assert (snapshot["data"]["is_system"], snapshot["data"]["matches"]) == (True, [])
    await bob_ws.disconnect()
    await anonymous_ws.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_snapshot_holds_the_matches_as_summaries(alice, symbol):
    await database_sync_to_async(set_summary)(symbol, last="10.60", volume="100")
    scan = await database_sync_to_async(scan_create)(
        owner=alice, name="Above", criteria="last > 10.50", acting_user=alice
    )
    ws = await connect(alice)

    await ws.send_json_to({"op": "subscribe", "topics": [f"scan.{scan.pk}"]})
    snapshot = await receive(ws)

    assert snapshot["data"]["matches"] == [
        await database_sync_to_async(wire_of)(symbol)
    ]
    await ws.disconnect()


# -- admin ----------------------------------------------------------------------------------


def admin_form(scan_values: dict) -> dict:
    return {**scan_values, "_save": "Save"}


@pytest.mark.django_db
def test_staff_change_a_system_scans_criteria_and_its_matches_follow(
    admin_client, admin_user, symbol, xs02, system_scans, published
):
    set_summary(symbol, last="10.05", previous_close="10.00")  # +0.5%
    set_summary(xs02, last="10.50", previous_close="10.00")  # +5%
    scans_evaluate(symbol_ids=[symbol.pk])
    top_gainers = system_scans["Top gainers"]
    assert matches_of(top_gainers) == ["XSX:XS02", "XSX:XS01"]
    del published[:]

    response = admin_client.post(
        reverse("admin:marketdata_scan_change", args=[top_gainers.pk]),
        admin_form(
            {
                "name": "Top gainers",
                "criteria": "change_percent > 1",
                "order_by": "-change_percent",
                "limit": "10",
            }
        ),
    )

    assert response.status_code == 302
    top_gainers.refresh_from_db()
    assert top_gainers.criteria == "change_percent > 1"
    assert matches_of(top_gainers) == ["XSX:XS02"]
    assert [message["data"] for _, message in published] == [
        {"added": [], "removed": ["XSX:XS01"]}
    ]
    audit = AuditRecord.objects.get(action="scan_change")
    assert (audit.actor, audit.changes) == (
        admin_user,
        {"criteria": ["change_percent > 0", "change_percent > 1"]},
    )


@pytest.mark.django_db
def test_bad_criteria_in_the_admin_are_a_form_error_and_nothing_changes(
    admin_client, system_scans
):
    top_gainers = system_scans["Top gainers"]

    response = admin_client.post(
        reverse("admin:marketdata_scan_change", args=[top_gainers.pk]),
        admin_form(
            {
                "name": "Top gainers",
                "criteria": "change_percent >> 1",
                "order_by": "-percent",
                "limit": "10",
            }
        ),
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "criteria": ["expected a field or a number at 17"],
        "order_by": ["unknown field 'percent' at 2"],
    }
    top_gainers.refresh_from_db()
    assert (top_gainers.criteria, top_gainers.order_by) == (
        "change_percent > 0",
        "-change_percent",
    )
    assert not AuditRecord.objects.filter(action="scan_change").exists()


@pytest.mark.django_db
def test_staff_add_a_system_scan_with_its_current_matches(
    admin_client, admin_user, symbol
):
    set_summary(symbol, best_bid="10.00", best_ask="10.20")

    response = admin_client.post(
        reverse("admin:marketdata_scan_add"),
        admin_form(
            {
                "name": "Wide spreads",
                "criteria": "spread > 0.10",
                "order_by": "",
                "limit": "",
            }
        ),
    )

    assert response.status_code == 302
    scan = Scan.objects.get(name="Wide spreads")
    assert (scan.owner, matches_of(scan)) == (None, ["XSX:XS01"])
    assert AuditRecord.objects.get(action="scan_create").actor == admin_user


@pytest.mark.django_db
def test_users_scans_are_read_only_in_the_admin(admin_client, alice):
    scan = scan_create(owner=alice, name="Mine", criteria="last > 1", acting_user=alice)
    change_url = reverse("admin:marketdata_scan_change", args=[scan.pk])

    page = admin_client.get(change_url)
    post = admin_client.post(
        change_url,
        admin_form(
            {"name": "Hacked", "criteria": "last > 2", "order_by": "", "limit": ""}
        ),
    )
    delete = admin_client.post(
        reverse("admin:marketdata_scan_delete", args=[scan.pk]), {"post": "yes"}
    )

    assert (page.status_code, page.context["has_change_permission"]) == (200, False)
    assert (post.status_code, delete.status_code) == (403, 403)
    scan.refresh_from_db()
    assert (scan.name, scan.criteria) == ("Mine", "last > 1")
    changelist = admin_client.get(reverse("admin:marketdata_scan_changelist"))
    assert changelist.context["action_form"] is None  # no bulk delete
