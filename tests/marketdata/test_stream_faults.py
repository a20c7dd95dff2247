"""The stream under faults: Redis (the channel layer) flushed mid-stream."""

import asyncio
import os

import pytest
import redis
from channels.db import database_sync_to_async as sync_to_async
from django.conf import settings as django_settings

from exchange.models import Trade
from exchange.streams import stream_current
from tests import factories
from tests.conftest import MatcherThread, assert_trading_consistent, wait_for
from tests.marketdata.test_stream import (
    ClientBooks,
    OrderFlow,
    assert_same_as_rest,
    connect,
    inbox_empty,
    place_order,
    poll,
    subscribe_books,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

TOPICS = {
    "book": "book.XSX:XS01",
    "trades": "trades.XSX:XS01",
    "orders_book": "orders_book.XSX:XS01",
}


def flush_redis() -> None:
    """FLUSHDB on this run's Redis database. When other pytest-xdist workers share
    that database, only this worker's channel-layer keys (its prefix) are deleted,
    which is what a flush does to this worker's stream, without breaking theirs."""
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    try:
        if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) <= 1:
            client.flushdb()
            return
        prefix = django_settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
    finally:
        client.close()


class HeartbeatClient:
    """A client following the documented rule: a heartbeat whose ``last_seq`` for a
    topic is above the last ``seq`` it has means an update was lost: resubscribe."""

    def __init__(self, ws, books: ClientBooks) -> None:
        self.ws = ws
        self.books = books
        self.gaps_seen: list[tuple[str, int, int]] = []  # (topic, theirs, mine)
        self.last_heartbeat: dict | None = None

    async def step(self, timeout: float = 0.05) -> None:
        frame = await poll(self.ws, timeout)
        if frame is None:
            return
        if frame["type"] != "heartbeat":
            self.books.apply(frame)
            return
        self.last_heartbeat = frame
        behind = [
            topic
            for kind, topic in TOPICS.items()
            if frame["last_seq"].get(topic, 0) > self.books.seqs[kind]
        ]
        for topic in behind:
            kind = topic.split(".")[0]
            self.gaps_seen.append(
                (topic, frame["last_seq"][topic], self.books.seqs[kind])
            )
        if behind:
            await self.ws.send_json_to({"op": "subscribe", "topics": behind})

    def is_level_with(self, committed: dict[str, int]) -> bool:
        return all(self.books.seqs[kind] == committed[t] for kind, t in TOPICS.items())


def committed_seqs() -> dict[str, int]:
    return stream_current(TOPICS.values())


def trade_count() -> int:
    return Trade.objects.count()


async def test_after_redis_is_flushed_mid_stream_matching_goes_on_and_subscribers_resync(
    market, symbol, alice, bob, settings
):
    # (updates still on their way count as lost after half a heartbeat or more)
    settings.STREAM_HEARTBEAT_SECONDS = 1.0
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
    flow = OrderFlow(traders, count=60, seed=20261204)
    ws = None
    try:
        ws = await connect()
        client = HeartbeatClient(ws, await subscribe_books(ws))

        # given a stream that is flowing
        flow.start()
        while flow.done < 20:
            await client.step()
        assert flow.error is None, flow.error
        trades_before = await sync_to_async(trade_count)()

        # when Redis loses everything (group memberships, queued messages) mid-flow
        await asyncio.to_thread(flush_redis)
        while flow.is_alive():
            await client.step()
        assert flow.error is None, flow.error

        # then matching carries on: every request is taken and trades persisted
        await sync_to_async(wait_for)(inbox_empty, 30)
        assert await sync_to_async(trade_count)() > trades_before

        # and the client, told by heartbeats that it is behind, resubscribes until
        # it is level with the committed sequences
        committed = await sync_to_async(committed_seqs)()
        for _ in range(800):
            if client.is_level_with(committed) and client.last_heartbeat:
                break
            await client.step()
        else:
            pytest.fail(f"never level: {client.books.seqs} vs {committed}")
        assert client.gaps_seen, "no heartbeat showed the lost updates"
        # the books equal REST at the same sequence
        await assert_same_as_rest(ws, client.books, symbol)

        # and the stream is live again: a new trade arrives as an update
        (alice_user, alice_account), (bob_user, bob_account) = traders
        before = await sync_to_async(trade_count)()
        await sync_to_async(place_order)(alice_user, alice_account, "sell", "5")
        await sync_to_async(place_order)(bob_user, bob_account, "buy", "5")

        def traded_again() -> int:
            count = trade_count()
            return count if count > before and inbox_empty() else 0

        trades = await sync_to_async(wait_for)(traded_again, 30)
        while client.books.seqs["trades"] < trades:
            await client.step(0.5)
        # (a snapshot, after a heartbeat showed it missing, would empty trade_seqs)
        assert client.books.trade_seqs[-1:] == [trades]
        await sync_to_async(assert_trading_consistent)()
    finally:
        flow.stop.set()
        if flow.is_alive():
            await asyncio.to_thread(flow.join, 10)
        if ws is not None:
            await ws.disconnect()
        await sync_to_async(matcher.stop)()
