"""News: publishing (REST, admin), reading, and the ``news`` stream topic."""

from datetime import UTC, datetime, timedelta

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.urls import reverse
from django.utils import timezone
from oauth2_provider.models import AccessToken, Application
from rest_framework.test import APIClient

from config.asgi import application
from exchange.models import StreamSequence
from marketdata.models import NewsItem
from marketdata.news import news_publish, news_to_wire, news_update
from registry.models import AuditRecord
from tests import factories
from tests.conftest import client_for
from tests.registry.test_admin import audit_trail, change_form_data

ORIGIN = [(b"origin", b"http://127.0.0.1:8000")]
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@pytest.fixture
def editor(db):
    return factories.user("editor", is_staff=True)


@pytest.fixture
def editor_client(editor):
    return client_for(editor)


@pytest.fixture
def xs02(market):
    return factories.symbol(market, "XS02")


def publish(headline: str, minutes: int = 0, **values) -> NewsItem:
    values.setdefault("source", "XSX Announcements")
    return news_publish(
        headline=headline,
        acting_user=None,
        published_at=T0 + timedelta(minutes=minutes),
        **values,
    )


def news_seq() -> int:
    row = StreamSequence.objects.filter(topic="news").first()
    return row.seq if row else 0


def news_state() -> tuple:
    """Everything a refused write must leave alone."""
    items = [
        (item.pk, item.headline, sorted(s.pk for s in item.symbols.all()))
        for item in NewsItem.objects.order_by("pk")
    ]
    return items, AuditRecord.objects.count(), news_seq()


PUBLISH_BODY = {
    "source": "XSX Announcements",
    "headline": "XS01 Ltd: half-year results",
    "body": "Revenue up 12%.",
    "priority": 3,
    "is_price_sensitive": True,
    "symbols": ["XSX:XS01"],
}


# -- reading --------------------------------------------------------------------------


@pytest.mark.django_db
def test_signed_in_users_read_the_news_newest_first_in_the_wire_shape(
    alice_client, symbol, xs02
):
    older = publish("Market notice", body="Closed Monday.", priority=1)
    newer = publish(
        "XS01 results",
        minutes=5,
        priority=4,
        is_price_sensitive=True,
        symbols=[xs02, symbol],
    )

    response = alice_client.get("/api/v1/news")

    assert response.status_code == 200
    assert response.json()["results"] == [
        {
            "id": newer.pk,
            "source": "XSX Announcements",
            "headline": "XS01 results",
            "body": "",
            "priority": 4,
            "is_price_sensitive": True,
            "symbols": ["XSX:XS01", "XSX:XS02"],
            "published_at": "2026-03-02T09:35:00+00:00",
        },
        {
            "id": older.pk,
            "source": "XSX Announcements",
            "headline": "Market notice",
            "body": "Closed Monday.",
            "priority": 1,
            "is_price_sensitive": False,
            "symbols": [],
            "published_at": "2026-03-02T09:30:00+00:00",
        },
    ]


@pytest.mark.django_db
def test_the_news_list_pages_with_a_cursor(alice_client):
    for minute in range(3):
        publish(f"Item {minute}", minutes=minute)

    first = alice_client.get("/api/v1/news", {"limit": 2}).json()
    second = alice_client.get(first["next"]).json()

    assert [item["headline"] for item in first["results"]] == ["Item 2", "Item 1"]
    assert [item["headline"] for item in second["results"]] == ["Item 0"]
    assert second["next"] is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "headlines"),
    [
        ({"symbol": "XSX:XS01"}, ["Urgent XS01", "Low XS01"]),
        ({"symbol": "XSX:XS02"}, ["Urgent XS01"]),
        ({"priority__gte": 3}, ["Urgent XS01", "High other"]),
        ({"is_price_sensitive": "true"}, ["Urgent XS01"]),
        ({"is_price_sensitive": "false"}, ["High other", "Low XS01"]),
        ({"symbol": "XSX:XS01", "priority__gte": 3}, ["Urgent XS01"]),
    ],
)
def test_the_news_list_filters_by_symbol_priority_and_price_sensitivity(
    alice_client, symbol, xs02, query, headlines
):
    publish("Low XS01", priority=1, symbols=[symbol])
    publish("High other", minutes=1, priority=3)
    publish(
        "Urgent XS01",
        minutes=2,
        priority=4,
        is_price_sensitive=True,
        symbols=[symbol, xs02],
    )

    response = alice_client.get("/api/v1/news", query)

    assert response.status_code == 200
    assert [item["headline"] for item in response.json()["results"]] == headlines


@pytest.mark.django_db
def test_filtering_news_by_an_unknown_symbol_is_a_bad_request(alice_client, symbol):
    response = alice_client.get("/api/v1/news", {"symbol": "XSX:NOPE"})

    assert response.status_code == 400
    assert response.json() == {
        "code": "unknown_symbol",
        "message": "There is no symbol 'XSX:NOPE'.",
        "field": "symbol",
    }


@pytest.mark.django_db
def test_a_news_item_reads_by_id_and_an_unknown_id_is_not_found(alice_client, symbol):
    item = publish("XS01 results", symbols=[symbol])

    found = alice_client.get(f"/api/v1/news/{item.pk}")
    missing = alice_client.get(f"/api/v1/news/{item.pk + 1}")

    assert (found.status_code, found.json()) == (200, news_to_wire(item))
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")


@pytest.mark.django_db
def test_anonymous_clients_cannot_read_news():
    publish("Market notice")

    response = APIClient().get("/api/v1/news")

    assert (response.status_code, response.json()["code"]) == (401, "not_authenticated")


# -- publishing over REST -------------------------------------------------------------


@pytest.mark.django_db
def test_staff_publish_a_news_item_which_is_stored_audited_and_advances_the_stream(
    editor, editor_client, symbol
):
    response = editor_client.post("/api/v1/news", PUBLISH_BODY, format="json")

    assert response.status_code == 201
    item = NewsItem.objects.get()
    body = response.json()
    assert body == {
        "id": item.pk,
        "source": "XSX Announcements",
        "headline": "XS01 Ltd: half-year results",
        "body": "Revenue up 12%.",
        "priority": 3,
        "is_price_sensitive": True,
        "symbols": ["XSX:XS01"],
        "published_at": item.published_at.isoformat(),
    }
    assert item.published_by == editor
    assert audit_trail(item) == [("news_publish", editor.pk)]
    assert news_seq() == 1


@pytest.mark.django_db
def test_an_integration_acting_as_a_staff_user_publishes_with_a_bearer_token(
    editor, symbol
):
    app = Application.objects.create(
        name="CRM",
        user=editor,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
    )
    AccessToken.objects.create(
        application=app,
        token="integration-token",
        expires=timezone.now() + timedelta(hours=1),
        scope="read write",
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer integration-token")

    response = client.post("/api/v1/news", PUBLISH_BODY, format="json")

    assert response.status_code == 201
    assert NewsItem.objects.get().published_by == editor


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"symbols": ["XSX:XS01", "XSX:NOPE"]}, "unknown_symbol", "symbols"),
        ({"symbols": ["XS01"]}, "unknown_symbol", "symbols"),
        ({"headline": ""}, "blank", "headline"),
        ({"headline": "   "}, "blank", "headline"),
        ({"source": ""}, "blank", "source"),
        ({"priority": 5}, "invalid_choice", "priority"),
        ({"priority": 0}, "invalid_choice", "priority"),
        ({"symbols": "XSX:XS01"}, "not_a_list", "symbols"),
    ],
)
def test_publishing_bad_input_is_refused_and_nothing_is_stored(
    editor_client, symbol, change, code, field
):
    before = news_state()

    response = editor_client.post(
        "/api/v1/news", {**PUBLISH_BODY, **change}, format="json"
    )

    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == (code, field)
    assert news_state() == before


@pytest.mark.django_db
def test_publishing_an_unknown_symbol_names_it(editor_client, symbol):
    response = editor_client.post(
        "/api/v1/news", {**PUBLISH_BODY, "symbols": ["XSX:NOPE"]}, format="json"
    )

    assert response.json()["message"] == "symbols: There is no symbol 'XSX:NOPE'."


@pytest.mark.django_db
def test_clients_who_are_not_staff_cannot_publish(alice_client, symbol):
    before = news_state()

    response = alice_client.post("/api/v1/news", PUBLISH_BODY, format="json")

    assert (response.status_code, response.json()["code"]) == (403, "permission_denied")
    assert news_state() == before


# -- admin ----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    [
        {},
        {"q": "results"},
        {"priority__exact": "4"},
        {"is_price_sensitive__exact": "1"},
    ],
)
def test_the_news_changelist_renders_with_search_and_filters(
    admin_client, symbol, query
):
    publish("XS01 results", priority=4, is_price_sensitive=True, symbols=[symbol])
    publish("Market notice", minutes=1)

    response = admin_client.get(reverse("admin:marketdata_newsitem_changelist"), query)

    assert response.status_code == 200
    expected = 2 if not query else 1
    assert response.context["cl"].result_count == expected


@pytest.mark.django_db
def test_the_news_add_and_change_pages_render(admin_client, symbol):
    item = publish("XS01 results", symbols=[symbol])

    add = admin_client.get(reverse("admin:marketdata_newsitem_add"))
    change = admin_client.get(
        reverse("admin:marketdata_newsitem_change", args=[item.pk])
    )

    assert (add.status_code, change.status_code) == (200, 200)


@pytest.mark.django_db
def test_adding_news_in_the_admin_publishes_it_through_the_service(
    admin_client, admin_user, symbol
):
    response = admin_client.post(
        reverse("admin:marketdata_newsitem_add"),
        {
            "source": "Operations",
            "headline": "Trading halt XS01",
            "body": "Pending an announcement.",
            "priority": "4",
            "is_price_sensitive": "on",
            "symbols": [symbol.pk],
        },
    )

    assert response.status_code == 302
    item = NewsItem.objects.get()
    assert news_to_wire(item) | {"published_at": None} == {
        "id": item.pk,
        "source": "Operations",
        "headline": "Trading halt XS01",
        "body": "Pending an announcement.",
        "priority": 4,
        "is_price_sensitive": True,
        "symbols": ["XSX:XS01"],
        "published_at": None,
    }
    assert item.published_by == admin_user
    assert audit_trail(item) == [("news_publish", admin_user.pk)]
    assert news_seq() == 1


@pytest.mark.django_db
def test_editing_news_in_the_admin_is_audited_and_republished_under_the_same_id(
    admin_client, admin_user, symbol, xs02
):
    item = publish("XS01 reslts", symbols=[symbol])
    url = reverse("admin:marketdata_newsitem_change", args=[item.pk])
    data = change_form_data(admin_client.get(url))

    response = admin_client.post(
        url, {**data, "headline": "XS01 results", "symbols": [symbol.pk, xs02.pk]}
    )

    assert response.status_code == 302
    item.refresh_from_db()
    assert (item.headline, item.published_at, NewsItem.objects.count()) == (
        "XS01 results",
        T0,
        1,
    )
    assert audit_trail(item) == [
        ("news_publish", None),
        ("news_change", admin_user.pk),
    ]
    assert AuditRecord.objects.get(action="news_change").changes == {
        "headline": ["XS01 reslts", "XS01 results"],
        "symbols": [["XSX:XS01"], ["XSX:XS01", "XSX:XS02"]],
    }
    assert news_seq() == 2


@pytest.mark.django_db
def test_saving_news_unchanged_in_the_admin_records_and_publishes_nothing(
    admin_client, symbol
):
    item = publish("XS01 results", symbols=[symbol])
    url = reverse("admin:marketdata_newsitem_change", args=[item.pk])
    before = news_state()

    response = admin_client.post(url, change_form_data(admin_client.get(url)))

    assert response.status_code == 302
    assert news_state() == before


@pytest.mark.django_db
def test_news_cannot_be_deleted_in_the_admin(admin_client):
    item = publish("Market notice")

    response = admin_client.post(
        reverse("admin:marketdata_newsitem_delete", args=[item.pk]), {"post": "yes"}
    )

    assert response.status_code == 403
    assert NewsItem.objects.filter(pk=item.pk).exists()


# -- the ``news`` stream --------------------------------------------------------------


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
async def test_a_news_subscriber_gets_the_snapshot_then_each_new_item_with_the_next_seq(
    editor, symbol
):
    earlier = await database_sync_to_async(publish)("Market notice")
    ws = await connect()  # public: no sign-in needed
    await ws.send_json_to({"op": "subscribe", "topics": ["news"]})
    snapshot = await ws.receive_json_from(timeout=5)
    assert snapshot == {
        "type": "snapshot",
        "topic": "news",
        "seq": 1,
        "data": [await database_sync_to_async(news_to_wire)(earlier)],
    }

    response = await database_sync_to_async(client_for(editor).post)(
        "/api/v1/news", PUBLISH_BODY, format="json"
    )

    update = await ws.receive_json_from(timeout=5)
    assert update == {
        "type": "update",
        "topic": "news",
        "seq": 2,
        "data": response.json(),
    }
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_correction_reaches_subscribers_under_the_same_id(symbol):
    def publish_then_correct() -> NewsItem:
        item = publish("XS01 reslts", symbols=[symbol])
        return news_update(item=item, headline="XS01 results", acting_user=None)

    ws = await connect()
    await ws.send_json_to({"op": "subscribe", "topics": ["news"]})
    assert (await ws.receive_json_from(timeout=5))["seq"] == 0

    item = await database_sync_to_async(publish_then_correct)()

    first = await ws.receive_json_from(timeout=5)
    second = await ws.receive_json_from(timeout=5)
    assert [
        (m["seq"], m["data"]["id"], m["data"]["headline"]) for m in (first, second)
    ] == [
        (1, item.pk, "XS01 reslts"),
        (2, item.pk, "XS01 results"),
    ]
    await ws.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_news_snapshot_holds_the_latest_fifty_items():
    def publish_many() -> None:
        for minute in range(52):
            publish(f"Item {minute}", minutes=minute)

    await database_sync_to_async(publish_many)()
    ws = await connect()
    await ws.send_json_to({"op": "subscribe", "topics": ["news", "news.XSX"]})

    snapshot = await ws.receive_json_from(timeout=5)
    error = await ws.receive_json_from(timeout=5)

    assert (snapshot["seq"], len(snapshot["data"])) == (52, 50)
    assert [snapshot["data"][0]["headline"], snapshot["data"][-1]["headline"]] == [
        "Item 51",
        "Item 2",
    ]
    assert (error["type"], error["code"]) == ("error", "unknown_topic")
    await ws.disconnect()


@pytest.mark.django_db
def test_the_news_list_reads_in_two_queries_however_many_items(
    alice_client, symbol, xs02, django_assert_num_queries
):
    for minute in range(5):
        publish(f"Item {minute}", minutes=minute, symbols=[symbol, xs02])

    with django_assert_num_queries(2):  # the items, then their symbols
        response = alice_client.get("/api/v1/news")

    assert len(response.json()["results"]) == 5
