"""The WebSocket stream: snapshots, gapless updates, privacy, limits and trading."""

import asyncio
import contextlib
import json
import random
import threading
import time
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connections, transaction

from config.asgi import application
from exchange import streams
from exchange.models import Trade
from exchange.selectors import book_snapshot
from exchange.streams import group_name, stream_advance, stream_message
from marketdata import consumers
from marketdata.depth import orders_book_snapshot
from oms.models import RESTING_STATUSES, Order, OrderRequest
from oms.services import OrderError, OrderSpec, order_cancel, order_place
from tests import factories
from tests.conftest import MatcherThread, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

ORIGIN = [(b"origin", b"http://127.0.0.1:8000")]


async def connect(user=None, path="/ws/v1/", headers=ORIGIN) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, path, headers=headers)
    if user is not None:
        # channels' test scope type has no "user" (AuthMiddleware adds it).
        communicator.scope["user"] = user  # type: ignore[typeddict-unknown-key]
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

        book: dict[str, dict[Any, Any]] = {"bids": {}, "asks": {}}
        seq = 0
        trades: list[Any] = []
        expected = {"bids": {}, "asks": {"10.05": "40", "10.10": "50"}}
        # (the three orders may reach the matcher in one, two or three batches)
        while not trades or book != expected:
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


# -- the book rebuilt from snapshot and deltas, under a random order flow --------------


async def poll(ws: WebsocketCommunicator, timeout: float = 0.05) -> dict | None:
    """The next frame, or None if none comes within ``timeout`` (unlike a timed-out
    receive, this leaves the application running)."""
    if await ws.receive_nothing(timeout=timeout, interval=0.005):
        return None
    return await ws.receive_json_from()


class ClientBooks:
    """What a client keeps from ``book``, ``orders_book`` and ``trades`` frames."""

    def __init__(self) -> None:
        self.seqs: dict[str, int] = {}
        self.levels: dict[str, dict[str, tuple[str, int]]] = {"bids": {}, "asks": {}}
        # side -> price -> [[order id, quantity], ...] in time priority
        self.orders: dict[str, dict[str, list[list]]] = {"buy": {}, "sell": {}}
        self.where: dict[int, tuple[str, str]] = {}
        self.trade_seqs: list[int] = []

    def apply(self, frame: dict) -> None:
        if frame["type"] == "heartbeat":
            return  # a slow run outlasts the heartbeat interval; a client skips them
        assert frame["type"] in ("snapshot", "update"), frame
        kind = frame["topic"].split(".")[0]
        if frame["type"] == "snapshot":
            getattr(self, f"_load_{kind}")(frame["data"])
        else:
            assert frame["seq"] == self.seqs[kind] + 1, (frame, self.seqs)
            getattr(self, f"_apply_{kind}")(frame["data"], frame["seq"])
        self.seqs[kind] = frame["seq"]

    def _load_book(self, data: dict) -> None:
        self.levels = {"bids": {}, "asks": {}}
        self._apply_book(data, None)

    def _apply_book(self, data: dict, seq: int | None) -> None:
        for side in ("bids", "asks"):
            for price, quantity, count in data[side]:
                if quantity == "0":
                    assert count == 0
                    self.levels[side].pop(price, None)
                else:
                    self.levels[side][price] = (quantity, count)

    def _load_orders_book(self, data: dict) -> None:
        self.orders = {"buy": {}, "sell": {}}
        self.where = {}
        self._apply_orders_book(data["bids"] + data["asks"], None)

    def _apply_orders_book(self, rows: list[dict], seq: int | None) -> None:
        for row in rows:
            order_id, quantity = row["id"], row["quantity"]
            if order_id in self.where:
                side, price = self.where[order_id]
                level = self.orders[side][price]
                index = next(i for i, o in enumerate(level) if o[0] == order_id)
                if quantity == "0":
                    del level[index]
                    del self.where[order_id]
                    if not level:
                        del self.orders[side][price]
                else:
                    level[index][1] = quantity
            else:
                # a removal is only ever sent for an order the client has seen
                assert quantity != "0", row
                side, price = row["side"], row["price"]
                self.orders[side].setdefault(price, []).append([order_id, quantity])
                self.where[order_id] = (side, price)

    def _load_trades(self, data: dict) -> None:
        self.trade_seqs = []

    def _apply_trades(self, data: dict, seq: int) -> None:
        assert data["seq"] == seq
        self.trade_seqs.append(seq)

    def book_view(self) -> dict:
        return {side: dict(levels) for side, levels in self.levels.items()}

    def orders_book_view(self) -> dict:
        def rows(side: str, best_first: int) -> list[tuple]:
            levels = sorted(self.orders[side], key=lambda p: best_first * Decimal(p))
            return [
                (order_id, price, quantity)
                for price in levels
                for order_id, quantity in self.orders[side][price]
            ]

        return {"bids": rows("buy", -1), "asks": rows("sell", 1)}


def rest_view(kind: str, symbol) -> tuple[int, dict]:
    """The REST/selector snapshot of ``kind``: (seq, the view a client keeps)."""
    if kind == "book":
        rest = book_snapshot(symbol)
        view: dict[str, Any] = {
            side: {price: (quantity, count) for price, quantity, count in rest[side]}
            for side in ("bids", "asks")
        }
    else:
        rest = orders_book_snapshot(symbol)
        view = {
            side: [(r["id"], r["price"], r["quantity"]) for r in rest[side]]
            for side in ("bids", "asks")
        }
    return rest["seq"], view


async def assert_same_as_rest(ws, books: ClientBooks, symbol) -> None:
    """Compare the client's books with REST snapshots at the same sequence: read the
    REST snapshot, apply frames until the client reaches its sequence, compare;
    retry if the client went past it (only after a resent snapshot)."""
    for kind in ("book", "orders_book"):
        for _attempt in range(20):
            seq, view = await sync_to_async(rest_view)(kind, symbol)
            while books.seqs[kind] < seq:
                books.apply(await ws.receive_json_from(timeout=10))
            if books.seqs[kind] == seq:
                client = (
                    books.book_view() if kind == "book" else books.orders_book_view()
                )
                assert client == view, (kind, seq)
                break
        else:
            pytest.fail(f"{kind}: never at the REST sequence")


class OrderFlow(threading.Thread):
    """Random limit orders (and some cancels) through the OMS service, seeded."""

    def __init__(self, traders: list, count: int, seed: int) -> None:
        super().__init__(daemon=True)
        self.traders = traders  # [(user, account)]
        self.count = count
        self.rng = random.Random(seed)
        self.done = 0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        rng = self.rng
        placed: list[tuple] = []
        try:
            for _ in range(self.count):
                if self.stop.is_set():
                    return
                if placed and rng.random() < 0.15:
                    user, order_id = rng.choice(placed)
                    with contextlib.suppress(OrderError):
                        order_cancel(user=user, order_id=order_id)
                user, account = rng.choice(self.traders)
                spec = OrderSpec(
                    account_id=account.pk,
                    symbol="XSX:XS01",
                    side=rng.choice(["buy", "sell"]),
                    type="limit",
                    time_in_force=rng.choice(["gtc", "gtc", "gtc", "ioc"]),
                    price=Decimal(rng.randint(990, 1010)) / 100,
                    quantity=Decimal(rng.randint(1, 50)),
                )
                placed.append((user, order_place(user=user, spec=spec).order.pk))
                self.done += 1
                time.sleep(rng.random() * 0.01)
        except BaseException as error:
            self.error = error
        finally:
            connections.close_all()


def inbox_empty() -> bool:
    return not OrderRequest.objects.filter(processed_at__isnull=True).exists()


async def subscribe_books(ws) -> ClientBooks:
    books = ClientBooks()
    topics = ["book.XSX:XS01", "trades.XSX:XS01", "orders_book.XSX:XS01"]
    await ws.send_json_to({"op": "subscribe", "topics": topics})
    for _ in topics:
        frame = await ws.receive_json_from(timeout=5)
        while frame["type"] != "snapshot":  # updates of topics already subscribed
            books.apply(frame)
            frame = await ws.receive_json_from(timeout=5)
        books.apply(frame)
    return books


async def test_the_books_rebuilt_from_snapshot_and_deltas_equal_rest_at_the_same_seq_every_time(
    market, symbol, alice, bob
):
    # given two well-funded traders and a running matcher
    traders = [
        (
            user,
            await sync_to_async(factories.account)(
                user, cash="1000000.00", holdings={symbol: "100000"}
            ),
        )
        for user in (alice, bob)
    ]
    matcher = MatcherThread("XSX").start()
    flow = OrderFlow(traders, count=200, seed=20261122)
    ws = late = None
    try:
        ws = await connect()
        books = await subscribe_books(ws)
        assert books.seqs == {"book": 0, "trades": 0, "orders_book": 0}

        # when ~200 random orders flow while the client receives
        flow.start()
        checkpoints = [50, 100, 150]
        compared = 0
        while flow.is_alive():
            frame = await poll(ws)
            if frame is not None:
                books.apply(frame)
            if checkpoints and flow.done >= checkpoints[0]:
                checkpoints.pop(0)
                # then at each point the books equal REST at the same sequence
                await assert_same_as_rest(ws, books, symbol)
                compared += 1
                if late is None:  # a second client joins mid-flow
                    late = await connect()
                    late_books = await subscribe_books(late)
        assert flow.error is None, flow.error
        assert compared == 3

        # and at the end, once the matcher has taken every request
        await sync_to_async(wait_for)(inbox_empty, 30)
        await assert_same_as_rest(ws, books, symbol)
        await assert_same_as_rest(late, late_books, symbol)
        while (frame := await poll(ws, 0.3)) is not None:
            books.apply(frame)
        trades = await sync_to_async(Trade.objects.count)()
        assert trades > 20
        assert books.trade_seqs == list(range(1, trades + 1))
        resting = await sync_to_async(
            Order.objects.filter(status__in=RESTING_STATUSES).count
        )()
        assert len(books.where) == resting > 0
    finally:
        flow.stop.set()
        if flow.is_alive():
            await asyncio.to_thread(flow.join, 10)
        for communicator in (ws, late):
            if communicator is not None:
                await communicator.disconnect()
        await sync_to_async(matcher.stop)()


# -- private data ------------------------------------------------------------------------


PRIVATE = ["orders", "balances", "holdings", "executions"]


async def test_balances_holdings_and_executions_reach_only_their_owner(
    market, symbol, alice, bob, alice_account, bob_account
):
    carol = await sync_to_async(factories.user)("carol")
    carol_account = await sync_to_async(factories.account)(carol, cash="500.00")
    accounts = {alice: alice_account, bob: bob_account, carol: carol_account}
    matcher = MatcherThread("XSX").start()
    sockets = {}
    try:
        for user in accounts:
            sockets[user] = await connect(user)
            await sockets[user].send_json_to({"op": "subscribe", "topics": PRIVATE})
        # each snapshot covers the user's own account only
        for user, ws in sockets.items():
            mine = accounts[user].pk
            # funding the accounts published each cash and holding position once
            funded = {"balances": 1, "holdings": 0 if user is carol else 1}
            for topic in PRIVATE:
                snapshot = await ws.receive_json_from(timeout=5)
                assert (snapshot["type"], snapshot["topic"]) == ("snapshot", topic)
                assert snapshot["seqs"] == {str(mine): funded.get(topic, 0)}
                assert {row["account"] for row in snapshot["data"]} <= {mine}

        # when alice sells to bob
        sell = await sync_to_async(place_order)(alice, alice_account, "sell", "10")
        buy = await sync_to_async(place_order)(bob, bob_account, "buy", "10")

        # then each sees their own fill, balance and holding, and nothing of the other
        received = {}
        for user in (alice, bob):
            frames: list[Any] = []
            while (
                not any(f["topic"] == "executions" for f in frames)
                or len({f["topic"] for f in frames}) < 4
            ):
                frames.append(await sockets[user].receive_json_from(timeout=10))
            while (frame := await poll(sockets[user], 0.5)) is not None:
                frames.append(frame)
            received[user] = frames
            mine = accounts[user].pk
            for frame in frames:
                assert frame["type"] == "update"
                assert frame["account"] == mine
                assert frame["data"].get("account", mine) == mine
        [alice_fill] = [
            f["data"] for f in received[alice] if f["topic"] == "executions"
        ]
        [bob_fill] = [f["data"] for f in received[bob] if f["topic"] == "executions"]
        assert (
            alice_fill["order_id"],
            alice_fill["side"],
            alice_fill["liquidity"],
        ) == (
            sell.pk,
            "sell",
            "maker",
        )
        assert (bob_fill["order_id"], bob_fill["side"], bob_fill["liquidity"]) == (
            buy.pk,
            "buy",
            "taker",
        )
        alice_cash = [f["data"] for f in received[alice] if f["topic"] == "balances"]
        assert alice_cash[-1]["available"] == "10100.00"
        bob_shares = [f["data"] for f in received[bob] if f["topic"] == "holdings"]
        assert bob_shares[-1]["quantity"] == "1010"
        assert await sockets[carol].receive_nothing(timeout=0.5)
    finally:
        for ws in sockets.values():
            await ws.disconnect()
        await sync_to_async(matcher.stop)()


def place_order(user, account, side, quantity, price="10.00"):
    spec = OrderSpec(
        account_id=account.pk,
        symbol="XSX:XS01",
        side=side,
        type="limit",
        time_in_force="gtc",
        price=Decimal(price),
        quantity=Decimal(quantity),
    )
    return order_place(user=user, spec=spec).order


async def test_a_private_upstream_cannot_be_named_directly(
    market, symbol, alice, bob, alice_account, bob_account
):
    ws = await connect(bob)
    for topic in (
        f"executions.acct.{alice_account.pk}",
        f"balances.acct.{alice_account.pk}",
        f"orders.{alice_account.pk}",
    ):
        await ws.send_json_to({"op": "subscribe", "topics": [topic], "id": 3})
        assert await ws.receive_json_from() == {
            "type": "error",
            "code": "unknown_topic",
            "message": f"There is no topic {topic!r}.",
            "id": 3,
            "topic": topic,
        }
    await ws.disconnect()


# -- heartbeats, limits and slow clients -------------------------------------------------


async def test_the_server_sends_heartbeats_and_closes_a_connection_that_stays_quiet(
    market, settings
):
    settings.STREAM_HEARTBEAT_SECONDS = 0.2
    settings.STREAM_IDLE_SECONDS = 1.0
    ws = await connect()
    # pings keep the connection open past the idle limit
    for _ in range(6):
        await ws.send_json_to({"op": "ping"})
        await asyncio.sleep(0.3)
    frames: list[Any] = []
    while (frame := await poll(ws, 0.01)) is not None:
        frames.append(frame)
    kinds = [f["type"] for f in frames]
    assert kinds.count("pong") == 6
    assert kinds.count("heartbeat") >= 5
    heartbeat = next(f for f in frames if f["type"] == "heartbeat")
    assert datetime.fromisoformat(heartbeat["time"]).tzinfo is not None

    # then silence: closed with 4408 about a second after the last ping
    while True:
        output = await ws.receive_output(timeout=3)
        if output["type"] == "websocket.close":
            break
        assert json.loads(output["text"])["type"] == "heartbeat"
    assert output["code"] == 4408
    await ws.disconnect()


async def test_bad_messages_get_error_frames_and_the_connection_stays_open(
    market, symbol, monkeypatch
):
    monkeypatch.setattr(consumers, "MAX_TOPICS", 2)
    ws = await connect()

    await ws.send_to(bytes_data=b"\x00\x01")
    assert (await ws.receive_json_from())["code"] == "bad_message"
    await ws.send_to(text_data=json.dumps({"op": "ping", "pad": "x" * 40_000}))
    assert await ws.receive_json_from() == {
        "type": "error",
        "code": "message_too_large",
        "message": "Messages are limited to 32768 bytes.",
        "id": None,
    }
    await ws.send_json_to({"op": "subscribe", "topics": "book.XSX:XS01"})
    assert (await ws.receive_json_from())["code"] == "bad_topics"
    await ws.send_json_to({"op": "fly", "id": 1})
    assert (await ws.receive_json_from())["code"] == "unknown_op"

    # at most MAX_TOPICS topics, and unsubscribing still works when at the limit
    await ws.send_json_to(
        {"op": "subscribe", "topics": ["book.XSX:XS01", "trades.XSX:XS01"]}
    )
    assert [(await ws.receive_json_from())["type"] for _ in range(2)] == [
        "snapshot",
        "snapshot",
    ]
    await ws.send_json_to({"op": "subscribe", "topics": ["ticker.XSX:XS01"]})
    assert (await ws.receive_json_from())["code"] == "too_many_topics"
    await ws.send_json_to({"op": "unsubscribe", "topics": ["book.XSX:XS01"]})
    assert await ws.receive_json_from() == {
        "type": "unsubscribed",
        "topic": "book.XSX:XS01",
    }
    await ws.send_json_to({"op": "ping", "id": 2})
    assert await ws.receive_json_from() == {"type": "pong", "id": 2}
    await ws.disconnect()


async def test_subscription_changes_are_rate_limited_by_a_token_bucket(
    market, symbol, monkeypatch
):
    monkeypatch.setattr(consumers, "SUBSCRIBE_BURST", 3)
    monkeypatch.setattr(consumers, "SUBSCRIBE_PER_SECOND", 2.0)
    ws = await connect()
    topics = ["book.XSX:XS01", "trades.XSX:XS01", "ticker.XSX:XS01"]
    await ws.send_json_to({"op": "subscribe", "topics": topics})
    assert [(await ws.receive_json_from())["topic"] for _ in topics] == topics

    await ws.send_json_to({"op": "subscribe", "topics": ["book.XSX:XS01"], "id": 9})
    error = await ws.receive_json_from()
    assert (error["code"], error["id"]) == ("rate_limited", 9)
    assert 0 < error["retry_after"] <= 0.5
    assert await ws.receive_nothing(timeout=0.1)

    await asyncio.sleep(error["retry_after"])
    await ws.send_json_to({"op": "subscribe", "topics": ["book.XSX:XS01"]})
    assert (await ws.receive_json_from())["type"] == "snapshot"
    await ws.disconnect()


def advance(topic: str, count: int) -> None:
    with transaction.atomic():
        stream_advance({topic: count})


async def publish(topic: str, seq: int, data: dict) -> None:
    message = stream_message(topic, seq, data)[1]
    layer = get_channel_layer()
    assert layer is not None
    await layer.group_send(group_name(topic), message)


async def test_a_gap_in_the_updates_makes_the_server_resend_the_snapshot(
    market, symbol
):
    topic = "trades.XSX:XS01"
    ws = await connect()
    await ws.send_json_to({"op": "subscribe", "topics": [topic]})
    assert (await ws.receive_json_from())["seq"] == 0
    await publish(topic, 1, {"n": 1})
    assert (await ws.receive_json_from())["seq"] == 1

    # update 2 is lost on the way; 3 arrives
    await sync_to_async(advance)(topic, 3)
    await publish(topic, 3, {"n": 3})
    snapshot = await ws.receive_json_from(timeout=5)
    assert (snapshot["type"], snapshot["seq"]) == ("snapshot", 3)
    await publish(topic, 4, {"n": 4})
    update = await ws.receive_json_from()
    assert (update["type"], update["seq"], update["data"]) == ("update", 4, {"n": 4})
    await ws.disconnect()


def gated(app, gate: asyncio.Event):
    """The application, with frames to the client held until ``gate`` opens: a
    client that does not read."""

    async def application_(scope, receive, send):
        async def held_send(message):
            if message["type"] == "websocket.send":
                await gate.wait()
            await send(message)

        return await app(scope, receive, held_send)

    return application_


async def test_a_slow_client_gets_a_fresh_snapshot_instead_of_a_backlog_and_holds_up_nobody(
    market, symbol, monkeypatch
):
    monkeypatch.setattr(consumers, "MAX_OUTSTANDING_BYTES", 2000)
    topic = "trades.XSX:XS01"
    gate = asyncio.Event()
    slow = WebsocketCommunicator(gated(application, gate), "/ws/v1/", headers=ORIGIN)
    assert (await slow.connect())[0]
    fast = await connect()
    gate.set()
    for ws in (slow, fast):
        await ws.send_json_to({"op": "subscribe", "topics": [topic]})
        assert (await ws.receive_json_from())["type"] == "snapshot"

    # when the slow client stops reading and 200 updates are published
    gate.clear()
    await sync_to_async(advance)(topic, 200)
    for seq in range(1, 201):
        await publish(topic, seq, {"n": seq, "pad": "x" * 100})

    # then the other client gets every one of them
    assert [(await fast.receive_json_from(timeout=5))["seq"] for _ in range(200)] == (
        list(range(1, 201))
    )
    await asyncio.sleep(0.2)  # the slow connection has taken them from the layer

    # and the slow one, once it reads again, a few updates then one fresh snapshot
    gate.set()
    frames: list[Any] = []
    while not frames or frames[-1]["type"] != "snapshot":
        frames.append(await slow.receive_json_from(timeout=5))
    updates = [f["seq"] for f in frames[:-1]]
    assert updates == list(range(1, len(updates) + 1))
    assert len(updates) < 20
    assert frames[-1]["seq"] == 200
    assert await slow.receive_nothing(timeout=0.3)
    await publish(topic, 201, {"n": 201})
    assert (await slow.receive_json_from())["seq"] == 201
    for ws in (slow, fast):
        await ws.disconnect()


async def test_amend_and_cancel_all_over_the_socket(market, symbol, bob, bob_account):
    """Without a matcher the requests queue up: the socket answers with the order
    and the inbox holds exactly the amend and the cancels."""
    ws = await connect(bob)
    await ws.send_json_to(
        {
            "op": "place",
            "id": 1,
            "order": {
                "account": bob_account.pk,
                "symbol": "XSX:XS01",
                "side": "buy",
                "type": "limit",
                "price": "10.00",
                "quantity": "10",
            },
        }
    )
    placed = await ws.receive_json_from()
    order_id = placed["order"]["id"]
    await ws.send_json_to(
        {"op": "amend", "id": 2, "order_id": order_id, "amend": {"price": "10.10"}}
    )
    amended = await ws.receive_json_from()
    assert (amended["type"], amended["id"], amended["order"]["id"]) == (
        "amend_requested",
        2,
        order_id,
    )
    await ws.send_json_to(
        {"op": "amend", "id": 3, "order_id": order_id, "amend": {"price": 10.2}}
    )
    assert (await ws.receive_json_from())["code"] == "not_a_string"
    await ws.send_json_to({"op": "amend", "id": 4, "order_id": "x", "amend": {}})
    assert (await ws.receive_json_from())["code"] == "bad_message"
    await ws.send_json_to(
        {"op": "cancel_all", "id": 5, "filter": {"account": bob_account.pk}}
    )
    assert await ws.receive_json_from() == {
        "type": "cancel_all_requested",
        "id": 5,
        "orders": [order_id],
    }
    await ws.send_json_to({"op": "cancel_all", "id": 6, "filter": {"account": 999_999}})
    assert (await ws.receive_json_from())["code"] == "account_forbidden"
    kinds = await sync_to_async(
        lambda: list(
            OrderRequest.objects.filter(order_id=order_id)
            .order_by("pk")
            .values_list("kind", "price")
        )
    )()
    assert kinds == [("place", None), ("amend", Decimal("10.10")), ("cancel", None)]
    await ws.disconnect()


# -- a publish that fails after commit -----------------------------------------------


class FailingSends:
    """A test double for the channel layer's ``group_send`` only (the database is
    untouched): the next ``failures`` sends to ``group`` raise, like a Redis
    connection dropping; every other send goes through."""

    def __init__(self, monkeypatch, group: str, failures: int) -> None:
        from channels_redis.core import RedisChannelLayer  # type: ignore[import-untyped]  # no stubs

        self.group = group
        self.failures = failures
        self.failed = 0
        real = RedisChannelLayer.group_send

        async def group_send(layer, group_, message):
            if group_ == self.group and self.failed < self.failures:
                self.failed += 1
                raise ConnectionError("redis connection lost (test double)")
            return await real(layer, group_, message)

        monkeypatch.setattr(RedisChannelLayer, "group_send", group_send)


def news_item(headline: str):
    from marketdata.news import news_publish

    return news_publish(
        source="Wire",
        headline=headline,
        acting_user=factories.user(f"editor-{headline}", is_staff=True),
    )


async def next_frame_of(ws, kind: str, timeout: float = 5) -> dict:
    """The next frame of type ``kind`` (skipping heartbeats and others)."""
    while True:
        frame = await ws.receive_json_from(timeout=timeout)
        if frame["type"] == kind:
            return frame


async def test_a_publish_that_fails_once_after_commit_is_retried_and_delivered(
    market, monkeypatch, caplog
):
    ws = await connect()
    await ws.send_json_to({"op": "subscribe", "topics": ["news"]})
    assert (await ws.receive_json_from())["seq"] == 0
    sends = FailingSends(monkeypatch, "news", failures=1)

    # when the first send of a committed news item fails
    await sync_to_async(news_item)("Rates unchanged")

    # then the retry delivers it, in sequence, and the failure is logged
    update = await next_frame_of(ws, "update")
    assert (update["seq"], update["data"]["headline"]) == (1, "Rates unchanged")
    assert sends.failed == 1
    assert [r.getMessage() for r in caplog.records if r.name == "exchange.streams"] == [
        "publishing news seq 1 failed (ConnectionError('redis connection lost "
        "(test double)')); retrying in 0.05 s"
    ]
    await ws.disconnect()


async def test_a_heartbeat_shows_a_client_the_update_it_lost_on_a_quiet_topic_and_a_resubscribe_resyncs_it(
    market, monkeypatch, settings
):
    settings.STREAM_HEARTBEAT_SECONDS = 0.2
    ws = await connect()
    await ws.send_json_to({"op": "subscribe", "topics": ["news", "market.XSX"]})
    assert [(await next_frame_of(ws, "snapshot"))["seq"] for _ in range(2)] == [0, 0]
    await sync_to_async(news_item)("Rates unchanged")
    assert (await next_frame_of(ws, "update"))["seq"] == 1
    # heartbeats report what the client has
    heartbeat = await next_frame_of(ws, "heartbeat")
    assert heartbeat["last_seq"] == {"news": 1, "market.XSX": 0}

    # when every send of the next item fails (retries included): it is dropped
    monkeypatch.setattr(streams, "PUBLISH_RETRY_DELAYS", (0.01, 0.01, 0.01))
    sends = FailingSends(monkeypatch, "news", failures=4)
    await sync_to_async(news_item)("Rates cut")
    while sends.failed < 4:
        await asyncio.sleep(0.01)

    # then, with no later update on the topic, a heartbeat shows seq 2 > 1
    while heartbeat["last_seq"]["news"] == 1:
        heartbeat = await ws.receive_json_from(timeout=5)
        assert heartbeat["type"] == "heartbeat"
    assert heartbeat["last_seq"] == {"news": 2, "market.XSX": 0}

    # and the client resubscribes: the snapshot is the database's, at seq 2
    await ws.send_json_to({"op": "subscribe", "topics": ["news"]})
    snapshot = await next_frame_of(ws, "snapshot")
    from marketdata.news import news_snapshot

    expected = await sync_to_async(news_snapshot)()
    assert (snapshot["seq"], snapshot["data"]) == (expected["seq"], expected["items"])
    assert [item["headline"] for item in snapshot["data"]] == [
        "Rates cut",
        "Rates unchanged",
    ]
    # and updates carry on from it
    await sync_to_async(news_item)("Rates hold")
    update = await next_frame_of(ws, "update")
    assert (update["seq"], update["data"]["headline"]) == (3, "Rates hold")
    await ws.disconnect()


async def test_a_heartbeat_names_a_private_topics_committed_seqs_by_account(
    market, symbol, alice, alice_account, settings
):
    settings.STREAM_HEARTBEAT_SECONDS = 0.2
    ws = await connect(alice)
    await ws.send_json_to({"op": "subscribe", "topics": ["orders", "book.XSX:XS01"]})
    assert [(await next_frame_of(ws, "snapshot"))["topic"] for _ in range(2)] == [
        "orders",
        "book.XSX:XS01",
    ]
    await sync_to_async(place_order)(alice, alice_account, "buy", "10")
    assert (await next_frame_of(ws, "update"))["seq"] == 1

    heartbeat = await next_frame_of(ws, "heartbeat")
    assert (heartbeat["last_seq"], heartbeat["last_seqs"]) == (
        {"book.XSX:XS01": 0},
        {"orders": {str(alice_account.pk): 1}},
    )
    await ws.disconnect()
