"""Watchlists: personal and system lists over REST, the admin and the stream."""

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.urls import reverse
from rest_framework.test import APIClient

from config.asgi import application
from exchange.models import StreamSequence
from marketdata.models import Watchlist
from marketdata.watchlists import (
    watchlist_create,
    watchlist_update,
    watchlists_loaded,
)
from registry.models import AuditRecord
from tests import factories
from tests.conftest import client_for
from tests.registry.test_admin import audit_trail, change_form_data

ORIGIN = [(b"origin", b"http://127.0.0.1:8000")]


@pytest.fixture
def xs02(market):
    return factories.symbol(market, "XS02")


@pytest.fixture
def xs03(market):
    return factories.symbol(market, "XS03")


@pytest.fixture
def system_list(symbol, xs02):
    return watchlist_create(
        owner=None, name="Top 20", symbols=[xs02, symbol], acting_user=None
    )


@pytest.fixture
def alice_list(alice, symbol, xs02):
    return watchlist_create(
        owner=alice, name="Miners", symbols=[symbol, xs02], acting_user=alice
    )


@pytest.fixture
def bob_list(bob, xs03):
    return watchlist_create(owner=bob, name="Bob's", symbols=[xs03], acting_user=bob)


def url(watchlist, suffix: str = "") -> str:
    return f"/api/v1/watchlists/{watchlist.pk}{suffix}"


def stream_seq(topic: str) -> int:
    row = StreamSequence.objects.filter(topic=topic).first()
    return row.seq if row else 0


def user_topic(user) -> str:
    return f"watchlists.user.{user.pk}"


def watchlists_state() -> tuple:
    """Everything a refused request must leave alone."""
    lists = [
        (
            w.pk,
            w.owner_id,
            w.name,
            w.updated_at,
            [m.symbol.identifier for m in w.members.all()],
        )
        for w in watchlists_loaded().order_by("pk")
    ]
    sequences = dict(StreamSequence.objects.values_list("topic", "seq"))
    return lists, AuditRecord.objects.count(), sequences


def wire(watchlist) -> dict:
    watchlist = watchlists_loaded().get(pk=watchlist.pk)
    return {
        "id": watchlist.pk,
        "name": watchlist.name,
        "is_system": watchlist.owner_id is None,
        "symbols": [m.symbol.identifier for m in watchlist.members.all()],
        "updated_at": watchlist.updated_at.isoformat(),
    }


# -- reading --------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_user_lists_their_own_and_the_system_lists_but_not_other_users(
    alice_client, alice_list, system_list, bob_list
):
    response = alice_client.get("/api/v1/watchlists")

    assert response.status_code == 200
    assert response.json()["results"] == [
        {
            "id": alice_list.pk,
            "name": "Miners",
            "is_system": False,
            "symbols": ["XSX:XS01", "XSX:XS02"],
            "updated_at": alice_list.updated_at.isoformat(),
        },
        {
            "id": system_list.pk,
            "name": "Top 20",
            "is_system": True,
            "symbols": ["XSX:XS02", "XSX:XS01"],
            "updated_at": system_list.updated_at.isoformat(),
        },
    ]


@pytest.mark.django_db
def test_a_user_reads_their_list_and_a_system_list_by_id(
    alice_client, alice_list, system_list
):
    own = alice_client.get(url(alice_list))
    system = alice_client.get(url(system_list))

    assert (own.status_code, own.json()) == (200, wire(alice_list))
    assert (system.status_code, system.json()) == (200, wire(system_list))


@pytest.mark.django_db
def test_anonymous_clients_cannot_use_watchlists(system_list):
    client = APIClient()

    listing = client.get("/api/v1/watchlists")
    creating = client.post("/api/v1/watchlists", {"name": "Mine"}, format="json")

    assert [listing.status_code, creating.status_code] == [401, 401]
    assert Watchlist.objects.count() == 1


# -- creating -------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_user_creates_a_list_of_ordered_symbols_audited_and_streamed(
    alice, alice_client, symbol, xs02, xs03
):
    response = alice_client.post(
        "/api/v1/watchlists",
        {"name": "Banks", "symbols": ["XSX:XS03", "XSX:XS01", "XSX:XS02"]},
        format="json",
    )

    assert response.status_code == 201
    watchlist = Watchlist.objects.get()
    assert response.json() == {
        "id": watchlist.pk,
        "name": "Banks",
        "is_system": False,
        "symbols": ["XSX:XS03", "XSX:XS01", "XSX:XS02"],
        "updated_at": watchlist.updated_at.isoformat(),
    }
    assert watchlist.owner == alice
    assert audit_trail(watchlist) == [("watchlist_create", alice.pk)]
    assert stream_seq(user_topic(alice)) == 1


@pytest.mark.django_db
def test_a_list_may_start_empty_and_reuse_a_name_of_another_owner(
    alice_client, bob_list, system_list
):
    for name in ("Bob's", "Top 20"):
        response = alice_client.post(
            "/api/v1/watchlists", {"name": name}, format="json"
        )
        assert (response.status_code, response.json()["symbols"]) == (201, [])


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"name": "Miners"}, 409, "duplicate_name", "name"),
        ({"name": "Gold", "symbols": ["XSX:NOPE"]}, 400, "unknown_symbol", "symbols"),
        (
            {"name": "Gold", "symbols": ["XSX:XS01", "XSX:XS01"]},
            400,
            "duplicate_symbol",
            "symbols",
        ),
        ({"name": ""}, 400, "blank", "name"),
        ({"symbols": ["XSX:XS01"]}, 400, "required", "name"),
    ],
)
def test_creating_a_bad_list_is_refused_and_nothing_changes(
    alice_client, alice_list, body, status, code, field
):
    before = watchlists_state()

    response = alice_client.post("/api/v1/watchlists", body, format="json")

    assert response.status_code == status
    assert (response.json()["code"], response.json()["field"]) == (code, field)
    assert watchlists_state() == before


# -- changing -------------------------------------------------------------------------


@pytest.mark.django_db
def test_patch_renames_and_replaces_the_ordered_symbols_in_one_go(
    alice, alice_client, alice_list, xs03
):
    seq = stream_seq(user_topic(alice))

    response = alice_client.patch(
        url(alice_list),
        {"name": "Gold", "symbols": ["XSX:XS03", "XSX:XS01"]},
        format="json",
    )

    assert response.status_code == 200
    assert response.json() == wire(alice_list)
    assert (response.json()["name"], response.json()["symbols"]) == (
        "Gold",
        ["XSX:XS03", "XSX:XS01"],
    )
    assert AuditRecord.objects.get(action="watchlist_change").changes == {
        "name": ["Miners", "Gold"],
        "symbols": [["XSX:XS01", "XSX:XS02"], ["XSX:XS03", "XSX:XS01"]],
    }
    assert stream_seq(user_topic(alice)) == seq + 1


@pytest.mark.django_db
def test_patch_may_reorder_only(alice_client, alice_list):
    response = alice_client.patch(
        url(alice_list), {"symbols": ["XSX:XS02", "XSX:XS01"]}, format="json"
    )

    assert (response.json()["name"], response.json()["symbols"]) == (
        "Miners",
        ["XSX:XS02", "XSX:XS01"],
    )


@pytest.mark.django_db
def test_a_patch_that_changes_nothing_records_and_publishes_nothing(
    alice_client, alice_list
):
    before = watchlists_state()

    response = alice_client.patch(
        url(alice_list),
        {"name": "Miners", "symbols": ["XSX:XS01", "XSX:XS02"]},
        format="json",
    )

    assert (response.status_code, response.json()) == (200, wire(alice_list))
    assert watchlists_state() == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"name": "Tech"}, 409, "duplicate_name", "name"),
        ({"symbols": ["XSX:XS01", "XSX:NOPE"]}, 400, "unknown_symbol", "symbols"),
        ({"symbols": ["XSX:XS02", "XSX:XS02"]}, 400, "duplicate_symbol", "symbols"),
        ({"name": " "}, 400, "blank", "name"),
    ],
)
def test_a_bad_patch_is_refused_and_nothing_changes(
    alice, alice_client, alice_list, body, status, code, field
):
    watchlist_create(owner=alice, name="Tech", acting_user=alice)
    before = watchlists_state()

    response = alice_client.patch(url(alice_list), body, format="json")

    assert response.status_code == status
    assert (response.json()["code"], response.json()["field"]) == (code, field)
    assert watchlists_state() == before


@pytest.mark.django_db
def test_a_user_deletes_their_list_audited_and_streamed(
    alice, alice_client, alice_list
):
    seq = stream_seq(user_topic(alice))

    response = alice_client.delete(url(alice_list))

    assert response.status_code == 204
    assert not Watchlist.objects.filter(pk=alice_list.pk).exists()
    assert audit_trail(alice_list) == [
        ("watchlist_create", alice.pk),
        ("watchlist_delete", alice.pk),
    ]
    assert stream_seq(user_topic(alice)) == seq + 1


# -- copying --------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_user_copies_a_system_list_into_a_new_personal_list(
    alice, alice_client, system_list
):
    before = wire(system_list)

    response = alice_client.post(
        url(system_list, "/copy"), {"name": "My top 20"}, format="json"
    )

    assert response.status_code == 201
    copy = Watchlist.objects.get(name="My top 20")
    assert response.json() == {
        "id": copy.pk,
        "name": "My top 20",
        "is_system": False,
        "symbols": ["XSX:XS02", "XSX:XS01"],
        "updated_at": copy.updated_at.isoformat(),
    }
    assert copy.owner == alice
    assert AuditRecord.objects.get(action="watchlist_copy").changes == {
        "name": "My top 20",
        "symbols": ["XSX:XS02", "XSX:XS01"],
        "source": system_list.pk,
    }
    assert wire(system_list) == before


@pytest.mark.django_db
def test_copying_under_a_name_the_user_has_is_a_conflict(
    alice_client, alice_list, system_list
):
    before = watchlists_state()

    response = alice_client.post(
        url(system_list, "/copy"), {"name": "Miners"}, format="json"
    )

    assert (response.status_code, response.json()["code"]) == (409, "duplicate_name")
    assert watchlists_state() == before


# -- one symbol at a time -------------------------------------------------------------


@pytest.mark.django_db
def test_a_symbol_is_added_at_a_position_or_at_the_end(
    alice_client, alice_list, market, xs03
):
    factories.symbol(market, "XS04")

    first = alice_client.post(
        url(alice_list, "/symbols"),
        {"symbol": "XSX:XS03", "position": 0},
        format="json",
    )
    last = alice_client.post(
        url(alice_list, "/symbols"), {"symbol": "XSX:XS04"}, format="json"
    )

    assert (first.status_code, first.json()["symbols"]) == (
        200,
        ["XSX:XS03", "XSX:XS01", "XSX:XS02"],
    )
    assert (last.status_code, last.json()) == (200, wire(alice_list))
    assert last.json()["symbols"] == ["XSX:XS03", "XSX:XS01", "XSX:XS02", "XSX:XS04"]
    assert [
        r.action for r in AuditRecord.objects.filter(object_id=str(alice_list.pk))
    ] == ["watchlist_symbol_add", "watchlist_symbol_add", "watchlist_create"]


@pytest.mark.django_db
def test_a_symbol_is_removed_by_its_identifier(alice_client, alice_list):
    response = alice_client.delete(url(alice_list, "/symbols/XSX:XS01"))

    assert (response.status_code, response.json()["symbols"]) == (200, ["XSX:XS02"])
    assert AuditRecord.objects.get(action="watchlist_symbol_remove").changes == {
        "symbols": [["XSX:XS01", "XSX:XS02"], ["XSX:XS02"]]
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "suffix", "body", "status", "code", "field"),
    [
        ("post", "/symbols", {"symbol": "XSX:XS01"}, 400, "duplicate_symbol", "symbol"),
        ("post", "/symbols", {"symbol": "XSX:NOPE"}, 400, "unknown_symbol", "symbol"),
        (
            "post",
            "/symbols",
            {"symbol": "XSX:XS03", "position": -1},
            400,
            "min_value",
            "position",
        ),
        ("delete", "/symbols/XSX:XS03", None, 404, "not_in_watchlist", "symbol"),
        ("delete", "/symbols/XSX:NOPE", None, 400, "unknown_symbol", "symbol"),
    ],
)
def test_bad_symbol_changes_are_refused_and_nothing_changes(
    alice_client, alice_list, xs03, method, suffix, body, status, code, field
):
    before = watchlists_state()

    response = getattr(alice_client, method)(
        url(alice_list, suffix), body, format="json"
    )

    assert response.status_code == status
    assert (response.json()["code"], response.json()["field"]) == (code, field)
    assert watchlists_state() == before


# -- other people's lists and system lists --------------------------------------------

WRITES = [
    ("patch", "", {"name": "Mine now"}),
    ("delete", "", None),
    ("post", "/symbols", {"symbol": "XSX:XS03"}),
    ("delete", "/symbols/XSX:XS01", None),
]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [("get", "", None), ("post", "/copy", {"name": "Stolen"}), *WRITES],
)
def test_another_users_list_is_not_found(
    bob_client, alice_list, xs03, method, suffix, body
):
    before = watchlists_state()

    response = getattr(bob_client, method)(url(alice_list, suffix), body, format="json")

    assert (response.status_code, response.json()["code"]) == (404, "not_found")
    assert watchlists_state() == before


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "suffix", "body"), WRITES)
def test_clients_cannot_change_system_lists(
    alice_client, system_list, xs03, method, suffix, body
):
    before = watchlists_state()

    response = getattr(alice_client, method)(
        url(system_list, suffix), body, format="json"
    )

    assert response.status_code == 403
    assert response.json() == {
        "code": "watchlist_read_only",
        "message": "System watchlists are read-only: copy one to change it.",
    }
    assert watchlists_state() == before


# -- admin ----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "names"),
    [
        ({}, ["Miners", "Top 20"]),
        ({"kind": "system"}, ["Top 20"]),
        ({"kind": "personal"}, ["Miners"]),
        ({"q": "alice"}, ["Miners"]),
    ],
)
def test_the_watchlist_changelist_renders_with_search_and_filters(
    admin_client, alice_list, system_list, query, names
):
    response = admin_client.get(reverse("admin:marketdata_watchlist_changelist"), query)

    assert response.status_code == 200
    assert [w.name for w in response.context["cl"].result_list] == names


@pytest.mark.django_db
def test_the_watchlist_add_and_change_pages_render(admin_client, system_list):
    add = admin_client.get(reverse("admin:marketdata_watchlist_add"))
    change = admin_client.get(
        reverse("admin:marketdata_watchlist_change", args=[system_list.pk])
    )

    assert (add.status_code, change.status_code) == (200, 200)
    assert change.context["adminform"].form["symbols"].value() == "XSX:XS02\nXSX:XS01"


@pytest.mark.django_db
def test_adding_a_list_in_the_admin_creates_a_system_list_through_the_service(
    admin_client, admin_user, symbol, xs02
):
    response = admin_client.post(
        reverse("admin:marketdata_watchlist_add"),
        {"name": "Most active", "symbols": "XSX:XS02\nXSX:XS01\n"},
    )

    assert response.status_code == 302
    watchlist = Watchlist.objects.get()
    assert wire(watchlist) | {"updated_at": None} == {
        "id": watchlist.pk,
        "name": "Most active",
        "is_system": True,
        "symbols": ["XSX:XS02", "XSX:XS01"],
        "updated_at": None,
    }
    assert audit_trail(watchlist) == [("watchlist_create", admin_user.pk)]
    assert stream_seq("watchlists.system") == 1


@pytest.mark.django_db
def test_editing_a_list_in_the_admin_goes_through_the_service(
    admin_client, admin_user, alice, alice_list, xs03
):
    change_url = reverse("admin:marketdata_watchlist_change", args=[alice_list.pk])
    data = change_form_data(admin_client.get(change_url))
    seq = stream_seq(user_topic(alice))

    response = admin_client.post(
        change_url, {**data, "symbols": "XSX:XS03 XSX:XS02, XSX:XS01"}
    )

    assert response.status_code == 302
    assert wire(alice_list)["symbols"] == ["XSX:XS03", "XSX:XS02", "XSX:XS01"]
    assert Watchlist.objects.get(pk=alice_list.pk).owner == alice
    assert audit_trail(alice_list)[-1] == ("watchlist_change", admin_user.pk)
    assert stream_seq(user_topic(alice)) == seq + 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "field", "error"),
    [
        (
            {"symbols": "XSX:XS01\nXSX:NOPE"},
            "symbols",
            "There is no symbol 'XSX:NOPE'.",
        ),
        (
            {"symbols": "XSX:XS01\nXSX:XS01"},
            "symbols",
            "Listed more than once: XSX:XS01.",
        ),
        ({"name": "Top 20"}, "name", "There is already a watchlist of this name."),
    ],
)
def test_a_bad_admin_form_shows_the_error_and_nothing_changes(
    admin_client, system_list, data, field, error
):
    watchlist_create(owner=None, name="Movers", acting_user=None)
    movers = Watchlist.objects.get(name="Movers")
    change_url = reverse("admin:marketdata_watchlist_change", args=[movers.pk])
    form_data = change_form_data(admin_client.get(change_url))
    before = watchlists_state()

    response = admin_client.post(change_url, {**form_data, **data})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {field: [error]}
    assert watchlists_state() == before


@pytest.mark.django_db
def test_deleting_a_list_in_the_admin_goes_through_the_service(
    admin_client, admin_user, system_list
):
    response = admin_client.post(
        reverse("admin:marketdata_watchlist_delete", args=[system_list.pk]),
        {"post": "yes"},
    )

    assert response.status_code == 302
    assert not Watchlist.objects.exists()
    assert audit_trail(system_list)[-1] == ("watchlist_delete", admin_user.pk)
    assert stream_seq("watchlists.system") == 2


# -- the ``watchlists`` stream --------------------------------------------------------


async def subscribe(user) -> tuple[WebsocketCommunicator, dict]:
    ws = WebsocketCommunicator(application, "/ws/v1/", headers=ORIGIN)
    if user is not None:
        # channels' test scope type has no "user" (AuthMiddleware adds it).
        ws.scope["user"] = user  # type: ignore[typeddict-unknown-key]
    connected, _ = await ws.connect()
    assert connected
    await ws.send_json_to({"op": "subscribe", "topics": ["watchlists"]})
    return ws, await ws.receive_json_from(timeout=5)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_watchlist_subscriber_gets_their_lists_then_each_change_privately(
    alice, bob, alice_list, system_list, bob_list
):
    alice_ws, alice_snap = await subscribe(alice)
    bob_ws, bob_snap = await subscribe(bob)
    assert alice_snap == {
        "type": "snapshot",
        "topic": "watchlists",
        "seqs": {str(alice.pk): 1, "system": 1},
        "data": [
            await database_sync_to_async(wire)(alice_list),
            await database_sync_to_async(wire)(system_list),
        ],
    }
    assert [w["name"] for w in bob_snap["data"]] == ["Bob's", "Top 20"]

    response = await database_sync_to_async(client_for(alice).patch)(
        url(alice_list), {"symbols": ["XSX:XS02"]}, format="json"
    )

    assert await alice_ws.receive_json_from(timeout=5) == {
        "type": "update",
        "topic": "watchlists",
        "seq": 2,
        "data": response.json(),
    }
    assert await bob_ws.receive_nothing(timeout=0.5)

    await database_sync_to_async(client_for(alice).delete)(url(alice_list))

    deleted = await alice_ws.receive_json_from(timeout=5)
    assert (deleted["seq"], deleted["data"]) == (
        3,
        {"id": alice_list.pk, "deleted": True},
    )
    assert await bob_ws.receive_nothing(timeout=0.5)
    await alice_ws.disconnect()
    await bob_ws.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_system_list_change_reaches_every_subscriber(
    alice, bob, system_list, xs03
):
    alice_ws, _ = await subscribe(alice)
    bob_ws, _ = await subscribe(bob)

    await database_sync_to_async(watchlist_update)(
        watchlist=system_list, symbols=[xs03], acting_user=None
    )

    for ws in (alice_ws, bob_ws):
        update = await ws.receive_json_from(timeout=5)
        assert (update["seq"], update["data"]["id"], update["data"]["symbols"]) == (
            2,
            system_list.pk,
            ["XSX:XS03"],
        )
        await ws.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_anonymous_clients_cannot_subscribe_to_watchlists():
    ws, reply = await subscribe(None)

    assert (reply["type"], reply["code"]) == ("error", "unauthorized")
    await ws.disconnect()


@pytest.mark.django_db
def test_the_watchlist_list_reads_in_three_queries_however_many_lists(
    alice, alice_client, system_list, xs03, django_assert_num_queries
):
    for number in range(5):
        watchlist_create(
            owner=alice, name=f"List {number}", symbols=[xs03], acting_user=alice
        )

    with django_assert_num_queries(3):  # the count, the lists, their members
        response = alice_client.get("/api/v1/watchlists")

    assert response.json()["count"] == 6
