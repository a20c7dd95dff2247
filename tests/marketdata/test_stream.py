"""The WebSocket stream: snapshots, gapless updates, privacy and trading."""

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator

from config.asgi import application
from exchange.selectors import book_snapshot
from tests.conftest import MatcherThread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

ORIGIN = [(b"origin", b"http://127.0.0.1:8000")]


async def connect(user=None, path="/ws/v1/", headers=ORIGIN) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, path, headers=headers)
    if user is not None:
        communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


def rest_place(client, account, **body):
    body = {"account": account.pk, "symbol": "XSX:XS01", "time_in_force": "gtc", **body}
    response = client.post("/api/v1/orders", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def apply_book(book: dict[str, dict[str, str]], delta: dict) -> None:
    for side in ("bids", "asks"):
        for price, quantity, _count in delta[side]:
            if quantity == "0":
                book[side].pop(price, None)
            else:
                book[side][price] = quantity


async def test_a_subscriber_sees_the_trade_and_rebuilds_the_book_from_snapshot_and_deltas(
    market, symbol, alice_client, bob_client, alice_account, bob_account
):
    matcher = MatcherThread("XSX").start()
    try:
        ws = await connect()
        await ws.send_json_to(
            {"op": "subscribe", "topics": ["book.XSX:XS01", "trades.XSX:XS01"]}
        )
        book_snap = await ws.receive_json_from(timeout=5)
        trades_snap = await ws.receive_json_from(timeout=5)
        assert (book_snap["type"], book_snap["seq"], book_snap["data"]["bids"]) == (
            "snapshot",
            0,
            [],
        )
        assert (
            trades_snap["topic"],
            trades_snap["seq"],
            trades_snap["data"]["trades"],
        ) == ("trades.XSX:XS01", 0, [])

        await sync_to_async(rest_place)(
            alice_client, alice_account, side="sell", price="10.05", quantity="100"
        )
        await sync_to_async(rest_place)(
            alice_client, alice_account, side="sell", price="10.10", quantity="50"
        )
        await sync_to_async(rest_place)(
            bob_client, bob_account, side="buy", price="10.05", quantity="60"
        )

        book = {"bids": {}, "asks": {}}
        seq = 0
        trades = []
        while not trades or seq < 3:
            message = await ws.receive_json_from(timeout=10)
            assert message["type"] == "update"
            if message["topic"] == "book.XSX:XS01":
                assert message["seq"] == seq + 1
                seq = message["seq"]
                apply_book(book, message["data"])
            else:
                trades.append(message)
        assert [
            (
                t["seq"],
                t["data"]["price"],
                t["data"]["quantity"],
                t["data"]["aggressor_side"],
            )
            for t in trades
        ] == [(1, "10.05", "60", "buy")]
        assert book == {"bids": {}, "asks": {"10.05": "40", "10.10": "50"}}
        rest = await sync_to_async(book_snapshot)(symbol)
        assert rest["seq"] == seq
        assert {
            "bids": dict((p, q) for p, q, _ in rest["bids"]),
            "asks": dict((p, q) for p, q, _ in rest["asks"]),
        } == book
        await ws.disconnect()
    finally:
        await sync_to_async(matcher.stop)()


async def test_private_orders_reach_only_their_owner(
    market, symbol, alice, bob, alice_client, alice_account, bob_account
):
    alice_ws = await connect(alice)
    bob_ws = await connect(bob)
    for ws in (alice_ws, bob_ws):
        await ws.send_json_to({"op": "subscribe", "topics": ["orders"]})
    alice_snap = await alice_ws.receive_json_from(timeout=5)
    bob_snap = await bob_ws.receive_json_from(timeout=5)
    assert alice_snap == {
        "type": "snapshot",
        "topic": "orders",
        "seqs": {str(alice_account.pk): 0},
        "data": [],
    }
    assert bob_snap["seqs"] == {str(bob_account.pk): 0}

    order = await sync_to_async(rest_place)(
        alice_client, alice_account, side="buy", price="9.00", quantity="10"
    )

    update = await alice_ws.receive_json_from(timeout=5)
    assert (
        update["topic"],
        update["seq"],
        update["account"],
        update["data"]["id"],
        update["data"]["status"],
    ) == (
        "orders",
        1,
        alice_account.pk,
        order["id"],
        "pending",
    )
    assert await bob_ws.receive_nothing(timeout=0.5)
    await alice_ws.disconnect()
    await bob_ws.disconnect()


async def test_anonymous_clients_cannot_subscribe_to_private_topics_and_bad_messages_get_an_error_frame(
    market, symbol
):
    ws = await connect()
    await ws.send_json_to({"op": "subscribe", "topics": ["orders"]})
    assert (await ws.receive_json_from())["code"] == "unauthorized"
    await ws.send_to(text_data="not json")
    assert (await ws.receive_json_from())["code"] == "bad_message"
    await ws.send_json_to({"op": "subscribe", "topics": ["book.XSX:NOPE"]})
    assert (await ws.receive_json_from())["code"] == "unknown_topic"
    await ws.send_json_to({"op": "ping", "id": 7})
    assert await ws.receive_json_from() == {"type": "pong", "id": 7}
    await ws.disconnect()


async def test_a_handshake_from_a_foreign_origin_is_refused(market):
    communicator = WebsocketCommunicator(
        application, "/ws/v1/", headers=[(b"origin", b"http://evil.example")]
    )
    connected, _ = await communicator.connect()
    assert not connected
