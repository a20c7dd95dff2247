"""The stream hub: one channel-layer channel per server process (per event loop).

It joins the group of each upstream topic some local connection follows, receives
every message once and hands it to each connection following the topic. It also
reads, every half heartbeat, the committed sequence of every topic it follows (one
query for all of them): the heartbeats tell each client what it should have
received, so a message lost after commit (a failed send, a flushed Redis) is seen on
a quiet topic too, without waiting for the next update.
"""

import asyncio
import logging
import time
import weakref
from typing import Any, Protocol

from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer, get_channel_layer
from django.conf import settings

from exchange.streams import group_name, stream_current

logger = logging.getLogger(__name__)

#: The hub re-joins its groups this often (channel-layer group membership expires).
GROUP_REFRESH_SECONDS = 3600.0
#: Longest a group change may take before the hub gives up on it (a stuck Redis
#: call must never hold the hub's lock, and so every subscribe, forever).
LAYER_TIMEOUT_SECONDS = 5.0


def heartbeat_seconds() -> float:
    return float(settings.STREAM_HEARTBEAT_SECONDS)


class Follower(Protocol):
    def deliver(self, upstream: str, message: dict[str, Any]) -> None: ...


class Hub:
    """The process's one channel-layer channel for the stream (one per event loop).

    It joins the group of each upstream topic some local connection follows (before
    that connection reads its snapshot), receives every message once and calls
    ``deliver`` of each connection following the topic. It stops when no connection
    follows anything.

    :attr:`settled` holds each followed topic's committed sequence as read one
    reading ago (half a heartbeat to a heartbeat old): an update committed before
    it has had that long to arrive, so a connection that has not sent it has lost it.
    """

    def __init__(self, layer: BaseChannelLayer) -> None:
        self.layer = layer
        self.channel: str | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.followers: dict[str, set[Follower]] = {}
        self.joined: set[str] = set()
        self.lock = asyncio.Lock()  # group changes, in order
        self.background: set[asyncio.Task[None]] = set()
        self.settled: dict[str, int] = {}
        self._reading: dict[str, int] = {}
        self._rejoined_at: dict[str, float] = {}

    async def follow(self, upstream: str, consumer: Follower) -> None:
        """Deliver ``upstream`` to ``consumer``; returns once the group is joined."""
        self.followers.setdefault(upstream, set()).add(consumer)
        if upstream in self.joined:
            return
        async with self.lock:
            if upstream in self.joined or upstream not in self.followers:
                return
            if self.channel is None:
                self.channel = await self.layer.new_channel()
                self.tasks = [
                    asyncio.create_task(self._receive(self.channel)),
                    asyncio.create_task(self._refresh()),
                    asyncio.create_task(self._watch()),
                ]
            await asyncio.wait_for(
                self.layer.group_add(group_name(upstream), self.channel),
                LAYER_TIMEOUT_SECONDS,
            )
            self.joined.add(upstream)

    async def rejoin(self, upstreams: list[str]) -> None:
        """Join the groups of ``upstreams`` (those joined) again: the layer may have
        lost the membership (Redis flushed or restarted) while the hub still counts
        itself in. Adding a member twice is harmless."""
        async with self.lock:
            for upstream in sorted(set(upstreams) & self.joined):
                assert self.channel is not None
                self._rejoined_at[upstream] = time.monotonic()
                await asyncio.wait_for(
                    self.layer.group_add(group_name(upstream), self.channel),
                    LAYER_TIMEOUT_SECONDS,
                )

    def rejoin_soon(self, upstreams: list[str]) -> None:
        """:meth:`rejoin`, in a task of its own, for the upstreams not rejoined in
        the last heartbeat (many connections report the same loss)."""
        now = time.monotonic()
        due = [
            upstream
            for upstream in upstreams
            if now - self._rejoined_at.get(upstream, -1e9) > heartbeat_seconds()
        ]
        if due:
            logger.warning("stream hub: %d topic(s) lost updates; rejoining", len(due))
            for upstream in due:
                self._rejoined_at[upstream] = now
            self._in_background(self.rejoin(due), "rejoining")

    def forget(self, upstream: str, consumer: Follower) -> bool:
        """Stop delivering to ``consumer``; True if nobody follows ``upstream`` now
        (then :meth:`leave` it)."""
        followers = self.followers.get(upstream)
        if followers is None:
            return False
        followers.discard(consumer)
        if followers:
            return False
        del self.followers[upstream]
        return True

    async def leave(self, upstream: str) -> None:
        async with self.lock:
            if upstream in self.followers or upstream not in self.joined:
                return
            self.joined.discard(upstream)
            self._rejoined_at.pop(upstream, None)
            assert self.channel is not None
            await asyncio.wait_for(
                self.layer.group_discard(group_name(upstream), self.channel),
                LAYER_TIMEOUT_SECONDS,
            )
            if not self.followers and not self.joined:
                self._stop()

    def leave_soon(self, upstream: str) -> None:
        """:meth:`leave` in a task of its own (kept referenced until it is done)."""
        self._in_background(self.leave(upstream), f"leaving {upstream}")

    def _in_background(self, work: Any, what: str) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                logger.warning("stream hub: %s failed", what, exc_info=True)

        task = asyncio.get_running_loop().create_task(run())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def _stop(self) -> None:
        self.channel = None
        self.settled, self._reading = {}, {}
        for task in self.tasks:
            task.cancel()
        self.tasks = []

    async def _receive(self, channel: str) -> None:
        failures = 0
        while self.channel == channel:
            started = time.monotonic()
            try:
                message = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    # The layer turned our cancellation into its own error (redis-py
                    # can): honour the cancellation, never wait on a new receive.
                    raise asyncio.CancelledError from error
                if self.channel != channel:
                    return  # stopped (some layers raise their own error on cancel)
                # A lost update shows as a gap, answered by a snapshot. A receive
                # that waited and then failed (a Redis read timing out while idle)
                # is retried at once; quick failures back off.
                if time.monotonic() - started > 1:
                    logger.debug("stream hub: receive timed out (%r)", error)
                    continue
                failures += 1
                logger.warning("stream hub: receiving failed (%r); retrying", error)
                await asyncio.sleep(min(5, failures))
                continue
            failures = 0
            self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        upstream: str = message.get("topic", "")
        for consumer in tuple(self.followers.get(upstream, ())):
            try:
                consumer.deliver(upstream, message)
            except Exception:  # one connection's fault must not stop the others
                logger.exception("stream hub: delivering %s failed", upstream)

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(GROUP_REFRESH_SECONDS)
            async with self.lock:
                for upstream in sorted(self.joined):
                    assert self.channel is not None
                    await self.layer.group_add(group_name(upstream), self.channel)

    async def _watch(self) -> None:
        """Every half heartbeat, read the committed sequence of every joined topic
        (one query); the previous reading becomes :attr:`settled`. A failed read
        keeps the last readings (heartbeats then report nothing new)."""
        while True:
            await asyncio.sleep(heartbeat_seconds() / 2)
            topics = sorted(self.joined)
            try:
                reading = await database_sync_to_async(stream_current)(topics)
            except Exception as error:
                logger.warning("stream hub: reading sequences failed (%r)", error)
                continue
            self.settled, self._reading = self._reading, reading


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]
_hubs = weakref.WeakKeyDictionary()


def hub() -> Hub:
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        layer = get_channel_layer()
        assert layer is not None, "the stream needs a channel layer"
        found = _hubs[loop] = Hub(layer)
    return found
