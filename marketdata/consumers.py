"""The WebSocket stream at ``/ws/v1/``.

Client messages are JSON objects with an ``op``:
``{"op": "subscribe", "topics": [...]}``, ``{"op": "unsubscribe", "topics": [...]}``
and ``{"op": "ping"}``. Each subscribed topic first gets a ``snapshot`` carrying the
topic's sequence number, then ``update`` messages with consecutive sequence numbers.
If the server sees a gap (an update lost upstream, e.g. dropped by the channel layer)
it sends a fresh snapshot. Private topics (``orders``, ``balances``, ``holdings``,
``executions``) cover every account the user may see; their sequences run per
account, so their snapshot carries ``seqs`` by account and each update names its
``account``. Trading over the socket (``place``, ``cancel``) calls the same OMS
services as REST.

Fan-out: connections have no channel-layer channel of their own. One
:class:`~marketdata.stream_hub.Hub` per server process (per event loop) joins the
group of every upstream topic a local connection follows, receives each message once
and hands it to those connections, which queue the frame (encoded once per process)
in their outbox.

Keeping a connection healthy:

- The server sends ``{"type": "heartbeat", "time": ..., "last_seq": {...},
  "last_seqs": {...}}`` every ``STREAM_HEARTBEAT_SECONDS`` and closes (code 4408) a
  connection that has sent nothing for ``STREAM_IDLE_SECONDS``; ``ping`` is
  answered with ``pong``. ``last_seq`` (``last_seqs`` by account for topics whose
  snapshot has ``seqs``) is each subscribed topic's committed sequence as the hub
  read it a moment ago, or the last one sent if later: above what the client has,
  an update was lost after commit (a failed send, a flushed Redis) and the client
  resubscribes; the server then joins the topic's group again before the snapshot.
- Frames leave through a per-connection outbox drained by a writer task, so a client
  that reads slowly never holds up the hub, the matcher or other clients. At most
  :data:`MAX_OUTSTANDING_BYTES` of updates wait for one connection: past that its
  queued updates are dropped and each topic concerned gets one fresh snapshot once
  the client has caught up (instead of a replay of stale updates). A connection
  whose outbox still grows past :data:`MAX_BACKLOG_BYTES` (snapshots and replies it
  does not read) is closed with code 4429.
- A bad message gets an error frame, never a disconnect: over
  :data:`MAX_MESSAGE_BYTES` (``message_too_large``), not a JSON object with a known
  ``op``, more than :data:`MAX_TOPICS` topics, or subscription changes faster than
  the token bucket allows (``rate_limited``, with ``retry_after`` seconds).
"""

import asyncio
import json
import logging
import time
from collections import OrderedDict, deque
from datetime import UTC, datetime
from typing import Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from rest_framework.exceptions import ValidationError

from config.api import validation_error_body
from exchange.streams import attach_event_loop
from marketdata.stream_hub import heartbeat_seconds, hub
from marketdata.topics import TOPICS, Snapshot, StreamError, TopicHandler, unknown
from oms.api import (
    AmendRequestSerializer,
    CancelAllRequestSerializer,
    OrderRequestSerializer,
)
from oms.services import (
    OrderError,
    order_amend,
    order_cancel,
    order_cancel_all,
    order_place,
)
from oms.wire import order_to_wire

logger = logging.getLogger(__name__)

MAX_TOPICS = 200
MAX_TOPIC_LENGTH = 200
#: Largest client message accepted (a 200-topic subscribe is about 6 KiB).
MAX_MESSAGE_BYTES = 32 * 1024
#: Subscription token bucket: each topic in a subscribe or unsubscribe takes a
#: token; the bucket holds a full connection's worth and refills at this rate.
SUBSCRIBE_BURST = MAX_TOPICS
SUBSCRIBE_PER_SECOND = 20.0
#: Updates one connection may have waiting before they are replaced by snapshots.
MAX_OUTSTANDING_BYTES = 1024 * 1024
#: Everything (snapshots, replies) one connection may have waiting before it is
#: closed as too slow.
MAX_BACKLOG_BYTES = 16 * 1024 * 1024
#: Updates held for a topic while its snapshot is read (more: read it again).
MAX_HELD_UPDATES = 1000
CLOSE_IDLE = 4408
CLOSE_TOO_SLOW = 4429


def idle_seconds() -> float:
    return float(settings.STREAM_IDLE_SECONDS)


def encode(content: Any) -> str:
    return json.dumps(content, separators=(",", ":"))


class _UpdateFrames:
    """Encodes an update once per process rather than once per subscriber.

    The Redis channel layer hands the same message object to every local channel in
    the group, so its identity (kept alive by the cache) names the frame."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._frames: OrderedDict[tuple[int, str], tuple[object, str]] = OrderedDict()

    def text(self, topic: str, message: dict[str, Any]) -> str:
        key = (id(message), topic)
        cached = self._frames.get(key)
        if cached is not None and cached[0] is message:
            return cached[1]
        update: dict[str, Any] = {
            "type": "update",
            "topic": topic,
            "seq": message["seq"],
            "data": message["data"],
        }
        if "account" in message:
            update["account"] = message["account"]
        text = encode(update)
        self._frames[key] = (message, text)
        if len(self._frames) > self.size:
            self._frames.popitem(last=False)
        return text


_update_frames = _UpdateFrames()


class RateLimited(StreamError):
    def __init__(self, retry_after: float) -> None:
        super().__init__(
            "rate_limited", "Too many subscription changes; retry after the delay."
        )
        self.retry_after = round(retry_after, 2)


class TokenBucket:
    def __init__(self, capacity: float, per_second: float) -> None:
        self.capacity = capacity
        self.per_second = per_second
        self.tokens = capacity
        self.updated = time.monotonic()

    def take(self, count: float) -> float:
        """Take ``count`` tokens; returns 0, or the seconds to wait (nothing taken)."""
        now = time.monotonic()
        self.tokens = min(
            self.capacity, self.tokens + (now - self.updated) * self.per_second
        )
        self.updated = now
        if count <= self.tokens:
            self.tokens -= count
            return 0.0
        return (count - self.tokens) / self.per_second


class Outbox:
    """Frames waiting for the writer: ``(text, topic)``, ``topic`` set on updates."""

    def __init__(self) -> None:
        self.frames: deque[tuple[str, str | None]] = deque()
        self.size = 0
        self.update_size = 0
        self.ready = asyncio.Event()

    def __bool__(self) -> bool:
        return bool(self.frames)

    def put(self, text: str, topic: str | None = None) -> None:
        self.frames.append((text, topic))
        self.size += len(text)
        if topic is not None:
            self.update_size += len(text)
        self.ready.set()

    def wake(self) -> None:
        self.ready.set()

    async def get(self) -> str | None:
        """The next frame; None if woken (:meth:`wake`) with nothing queued."""
        if not self.frames:
            self.ready.clear()
            await self.ready.wait()
            if not self.frames:
                return None
        text, topic = self.frames.popleft()
        self.size -= len(text)
        if topic is not None:
            self.update_size -= len(text)
        return text

    def drop_updates(self) -> set[str]:
        """Drop every queued update; returns their topics."""
        topics = {topic for _, topic in self.frames if topic is not None}
        self.frames = deque(f for f in self.frames if f[1] is None)
        self.size -= self.update_size
        self.update_size = 0
        return topics


class StreamConsumer(AsyncJsonWebsocketConsumer):
    # No channel-layer channel per connection: the process's Hub delivers.
    channel_layer_alias = "(none: the stream hub delivers)"

    async def connect(self) -> None:
        attach_event_loop(asyncio.get_running_loop())
        user = self.scope.get("user")
        self.user = AnonymousUser() if user is None else user
        self.hub = hub()
        # client topic -> {upstream topic: last seq sent}
        self.subscriptions: dict[str, dict[str, int]] = {}
        # upstream topic -> client topic
        self.routes: dict[str, str] = {}
        # topics whose snapshot is being read -> updates held meanwhile (None: too
        # many, read it again)
        self.held: dict[str, list[tuple[str, dict[str, Any]]] | None] = {}
        # topics whose snapshots carry ``seqs`` (one per upstream) not ``seq``
        self.keyed: set[str] = set()
        # topics needing a fresh snapshot (a gap, or updates dropped for a slow
        # client): the writer reads them once the outbox is empty
        self.stale: set[str] = set()
        self.outbox = Outbox()
        self.bucket = TokenBucket(SUBSCRIBE_BURST, SUBSCRIBE_PER_SECOND)
        self.snapshot_lock = asyncio.Lock()
        self.last_heard = time.monotonic()
        self.closing = False
        await self.accept()
        self.tasks = [
            asyncio.create_task(self._write()),
            asyncio.create_task(self._keepalive()),
        ]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:  # after an error too: never deliver to a dead connection
            self._stop()
            for upstream in list(getattr(self, "routes", {})):
                if self.hub.forget(upstream, self):
                    self.hub.leave_soon(upstream)

    def _stop(self) -> None:
        for task in getattr(self, "tasks", []):
            task.cancel()

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' dispatch first hops to the sync thread to close stale database
        # connections, for every message. Database work here goes through
        # database_sync_to_async, which closes stale connections itself.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def disconnect(self, code: int) -> None:
        # Nothing awaited here: a disconnect may arrive while the connection's task
        # is being cancelled, and must not wait on the hub's lock or on Redis.
        self._stop()
        for upstream in list(getattr(self, "routes", {})):
            self.routes.pop(upstream)
            if self.hub.forget(upstream, self):
                self.hub.leave_soon(upstream)

    @property
    def is_authenticated(self) -> bool:
        return bool(self.user is not None and self.user.is_authenticated)

    # -- updates from the hub ------------------------------------------------------------

    def deliver(self, upstream: str, message: dict[str, Any]) -> None:
        """Queue an upstream message for the client if it is the next in sequence;
        on a gap, mark the topic for a fresh snapshot."""
        topic = self.routes.get(upstream)
        if topic is None or topic in self.stale:
            return  # not (or no longer) followed, or a snapshot will follow
        if topic in self.held:
            held = self.held[topic]
            if held is not None:
                held.append((upstream, message))
                if len(held) > MAX_HELD_UPDATES:
                    self.held[topic] = None
            return
        last = self.subscriptions[topic][upstream]
        seq = message["seq"]
        if seq <= last:
            return  # already covered by the snapshot
        if seq != last + 1:
            logger.info(
                "gap on %s: %s after %s; sending a snapshot", upstream, seq, last
            )
            self.stale.add(topic)
            self.outbox.wake()
            return
        self.subscriptions[topic][upstream] = seq
        self._queue(_update_frames.text(topic, message), update_topic=topic)

    # -- frames out ----------------------------------------------------------------------

    def _reply(self, content: dict[str, Any]) -> None:
        self._queue(encode(content))

    def _queue(self, text: str, update_topic: str | None = None) -> None:
        if self.closing:
            return
        if update_topic is not None and (
            self.outbox.update_size + len(text) > MAX_OUTSTANDING_BYTES
        ):
            self._overflow(update_topic)
            return
        self.outbox.put(text, update_topic)
        if self.outbox.size > MAX_BACKLOG_BYTES:
            logger.warning("closing a stream connection that does not read")
            self.closing = True
            self.outbox.frames.clear()
            asyncio.get_running_loop().create_task(self.close(code=CLOSE_TOO_SLOW))

    def _overflow(self, topic: str) -> None:
        """The client reads too slowly: replace its backlog of updates by one
        snapshot per topic concerned, sent when it has caught up."""
        dropped = self.outbox.drop_updates() | {topic}
        logger.info("slow stream client: %d topics to resync", len(dropped))
        self.stale |= dropped & self.subscriptions.keys()
        self.outbox.wake()

    async def _write(self) -> None:
        try:
            while True:
                if self.stale and not self.outbox:
                    topics = sorted(self.stale & self.subscriptions.keys())
                    self.stale.clear()
                    await self._send_snapshots(topics)
                text = await self.outbox.get()
                if text is not None:
                    await self.send(text_data=text)
        except asyncio.CancelledError:
            raise
        except Exception:  # the client went away; disconnect() follows
            logger.debug("stream writer stopped", exc_info=True)

    async def _keepalive(self) -> None:
        """Heartbeats out; close the connection when the client has gone quiet."""
        beat, idle = heartbeat_seconds(), idle_seconds()
        next_beat = time.monotonic() + beat
        while True:
            now = time.monotonic()
            quiet_until = self.last_heard + idle
            if now >= quiet_until:
                self.closing = True
                await self.close(code=CLOSE_IDLE)
                return
            if now >= next_beat:
                if not self.outbox:  # a backed-up client gains nothing from more
                    self._reply(self._heartbeat())
                next_beat = now + beat
            await asyncio.sleep(max(0.0, min(next_beat, quiet_until) - now))

    def _heartbeat(self) -> dict[str, Any]:
        """The heartbeat frame: each subscribed topic's settled committed sequence
        (or the last sent, if later). Topics whose updates were lost get their
        groups rejoined (the client resubscribes on seeing the higher sequence).
        Topics awaiting a snapshot are left out: the snapshot is on its way."""
        settled = self.hub.settled
        last_seq: dict[str, int] = {}
        last_seqs: dict[str, dict[str, int]] = {}
        lost: list[str] = []
        for topic, upstreams in self.subscriptions.items():
            if topic in self.held or topic in self.stale:
                continue
            seqs = {}
            for upstream, sent in upstreams.items():
                committed = settled.get(upstream, 0)
                if committed > sent:
                    lost.append(upstream)
                seqs[upstream] = max(committed, sent)
            if topic in self.keyed:
                last_seqs[topic] = {u.rsplit(".", 1)[1]: s for u, s in seqs.items()}
            elif seqs:  # one upstream (or several sharing the snapshot's seq)
                last_seq[topic] = max(seqs.values())
        if lost:
            logger.info("stream: %d upstream(s) behind their committed seq", len(lost))
            self.hub.rejoin_soon(lost)
        frame: dict[str, Any] = {
            "type": "heartbeat",
            "time": datetime.now(UTC).isoformat(),
            "last_seq": last_seq,
        }
        if last_seqs:
            frame["last_seqs"] = last_seqs
        return frame

    def _error(
        self, error: StreamError, *, message_id: Any = None, topic: str | None = None
    ) -> None:
        frame: dict[str, Any] = {
            "type": "error",
            "code": error.code,
            "message": error.message,
            "id": message_id,
        }
        if topic is not None:
            frame["topic"] = topic
        if isinstance(error, RateLimited):
            frame["retry_after"] = error.retry_after
        self._reply(frame)

    # -- frames in -----------------------------------------------------------------------

    async def receive(
        self,
        text_data: str | None = None,
        bytes_data: bytes | None = None,
        **kwargs: Any,
    ) -> None:
        self.last_heard = time.monotonic()
        if text_data is None:
            self._error(StreamError("bad_message", "Send JSON text frames."))
            return
        if len(text_data) > MAX_MESSAGE_BYTES // 4 and (
            len(text_data.encode()) > MAX_MESSAGE_BYTES
        ):
            self._error(
                StreamError(
                    "message_too_large",
                    f"Messages are limited to {MAX_MESSAGE_BYTES} bytes.",
                )
            )
            return
        await self.receive_json(await self.decode_json(text_data))

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        try:
            return json.loads(text_data)
        except ValueError:
            return None  # answered as a bad message

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        message_id = content.get("id") if isinstance(content, dict) else None
        try:
            if not isinstance(content, dict):
                raise StreamError("bad_message", "Send a JSON object with an 'op'.")
            op = content.get("op")
            if op == "ping":
                self._reply({"type": "pong", "id": message_id})
            elif op == "subscribe":
                await self._subscribe(
                    self._topics(content, subscribing=True), message_id
                )
            elif op == "unsubscribe":
                for topic in self._topics(content, subscribing=False):
                    await self._unsubscribe(topic)
            elif op == "place":
                await self._place(content)
            elif op == "cancel":
                await self._cancel(content)
            elif op == "amend":
                await self._amend(content)
            elif op == "cancel_all":
                await self._cancel_all(content)
            else:
                raise StreamError("unknown_op", f"Unknown op {op!r}.")
        except StreamError as error:
            self._error(error, message_id=message_id)

    def _topics(self, content: dict[str, Any], *, subscribing: bool) -> list[str]:
        """The op's topics (each once); raises before anything changes."""
        topics = content.get("topics")
        if (
            not isinstance(topics, list)
            or not all(isinstance(t, str) for t in topics)
            or any(len(t) > MAX_TOPIC_LENGTH for t in topics)
        ):
            raise StreamError("bad_topics", "'topics' must be a list of topic names.")
        topics = list(dict.fromkeys(topics))
        if len(topics) > MAX_TOPICS or (
            subscribing and len(self.subscriptions.keys() | set(topics)) > MAX_TOPICS
        ):
            raise StreamError(
                "too_many_topics", f"At most {MAX_TOPICS} topics per connection."
            )
        wait = self.bucket.take(len(topics))
        if wait:
            raise RateLimited(wait)
        return topics

    # -- subscriptions -------------------------------------------------------------------

    async def _subscribe(self, topics: list[str], message_id: Any) -> None:
        """Subscribe and send the snapshots (again, for topics already subscribed);
        a topic that does not exist or is not the user's gets an error frame naming
        it. The hub joins the groups before the snapshots are read and holds the
        updates that arrive meanwhile; two database round trips for the whole op."""
        new = [topic for topic in topics if topic not in self.subscriptions]
        await self._rejoin([topic for topic in topics if topic in self.subscriptions])
        found = await database_sync_to_async(self._read_upstreams)(new) if new else {}
        errors = {}
        for topic in topics:
            upstreams = found.get(topic)
            if isinstance(upstreams, StreamError):
                errors[topic] = upstreams
            elif upstreams is not None and topic not in self.subscriptions:
                self.subscriptions[topic] = {upstream: 0 for upstream in upstreams}
                self.held.setdefault(topic, [])
                for upstream in upstreams:
                    self.routes[upstream] = topic
                    await self.hub.follow(upstream, self)
        await self._send_snapshots(topics, message_id, errors)

    async def _rejoin(self, topics: list[str]) -> None:
        """A resubscribe: hold the topics' updates from now on and have the hub join
        their groups again (their membership may be what was lost), so the snapshot
        read next is followed by every later update."""
        if not topics:
            return
        for topic in topics:
            self.held.setdefault(topic, [])
        upstreams = [u for topic in topics for u in self.subscriptions[topic]]
        try:
            await self.hub.rejoin(upstreams)
        except Exception:  # the snapshot still goes out; the next heartbeat retries
            logger.warning("stream: rejoining %d group(s) failed", len(upstreams))

    async def _unsubscribe(self, topic: str) -> None:
        upstreams = self.subscriptions.pop(topic, {})
        self.held.pop(topic, None)
        self.stale.discard(topic)
        self.keyed.discard(topic)
        for upstream in upstreams:
            self.routes.pop(upstream, None)
            if self.hub.forget(upstream, self):
                await self.hub.leave(upstream)
        self._reply({"type": "unsubscribed", "topic": topic})

    def _handler(self, topic: str) -> tuple[TopicHandler, str]:
        kind, _, argument = topic.partition(".")
        handler = TOPICS.get(kind)
        if handler is None:
            raise unknown(topic)
        return handler, argument

    def _read_upstreams(self, topics: list[str]) -> dict[str, list[str] | StreamError]:
        """(Database thread) each topic's upstreams, or why it cannot be had."""
        found: dict[str, list[str] | StreamError] = {}
        for topic in topics:
            try:
                handler, argument = self._handler(topic)
                found[topic] = handler.upstreams(self.user, argument)
            except StreamError as error:
                found[topic] = error
        return found

    def _read_snapshots(
        self, plans: list[tuple[str, list[str]]]
    ) -> list[tuple[str, Snapshot | StreamError]]:
        """(Database thread) the snapshot of each (topic, upstreams)."""
        snapshots: list[tuple[str, Snapshot | StreamError]] = []
        for topic, upstreams in plans:
            try:
                handler, argument = self._handler(topic)
                snapshots.append(
                    (topic, handler.snapshot(self.user, argument, upstreams))
                )
            except StreamError as error:
                snapshots.append((topic, error))
        return snapshots

    async def _send_snapshots(
        self,
        topics: list[str],
        message_id: Any = None,
        errors: dict[str, StreamError] | None = None,
    ) -> None:
        """Read the topics' snapshots and queue them, each followed by the updates
        held while reading that are newer; ``errors`` (topics that could not be
        subscribed) are answered in the same order. One read at a time."""
        for topic in topics:  # hold their updates from now on
            if topic in self.subscriptions:
                self.held.setdefault(topic, [])
        async with self.snapshot_lock:
            reading = [topic for topic in topics if topic in self.subscriptions]
            for topic in reading:
                self.held.setdefault(topic, [])
            plans = [(topic, list(self.subscriptions[topic])) for topic in reading]
            try:
                read = dict(
                    await database_sync_to_async(self._read_snapshots)(plans)
                    if plans
                    else []
                )
            except BaseException:
                for topic in reading:
                    self.held.pop(topic, None)
                raise
            for topic in topics:
                if errors and topic in errors:
                    self._error(errors[topic], message_id=message_id, topic=topic)
                    continue
                snapshot = read.get(topic)
                held = self.held.pop(topic, [])
                if snapshot is None or topic not in self.subscriptions:
                    continue
                if isinstance(snapshot, StreamError):
                    self._error(snapshot, message_id=message_id, topic=topic)
                    continue
                self._queue_snapshot(topic, snapshot)
                if held is None:
                    self.stale.add(topic)
                    continue
                for upstream, message in held:
                    self.deliver(upstream, message)

    def _queue_snapshot(self, topic: str, snapshot: Snapshot) -> None:
        upstreams = self.subscriptions[topic]
        message: dict[str, Any] = {"type": "snapshot", "topic": topic}
        if snapshot.seqs is not None:
            for upstream in upstreams:
                upstreams[upstream] = snapshot.seqs[upstream.rsplit(".", 1)[1]]
            message["seqs"] = snapshot.seqs
            self.keyed.add(topic)
        else:
            assert snapshot.seq is not None
            for upstream in upstreams:
                upstreams[upstream] = snapshot.seq
            message["seq"] = snapshot.seq
        message["data"] = snapshot.data
        self.stale.discard(topic)
        self._reply(message)

    # -- trading -------------------------------------------------------------------------

    async def _place(self, content: dict[str, Any]) -> None:
        if not self.is_authenticated:
            raise StreamError("unauthorized", "Sign in to trade.")
        body = OrderRequestSerializer(data=content.get("order"))
        self._validate(body)

        def run() -> dict[str, Any]:
            return order_to_wire(order_place(user=self.user, spec=body.to_spec()).order)

        try:
            order = await database_sync_to_async(run)()
        except OrderError as error:
            raise StreamError(error.code, error.message) from error
        self._reply({"type": "placed", "id": content.get("id"), "order": order})

    async def _amend(self, content: dict[str, Any]) -> None:
        order_id = self._order_id(content)
        body = AmendRequestSerializer(data=content.get("amend"))
        self._validate(body)

        def run() -> dict[str, Any]:
            return order_to_wire(
                order_amend(user=self.user, order_id=order_id, amend=body.to_spec())
            )

        try:
            order = await database_sync_to_async(run)()
        except OrderError as error:
            raise StreamError(error.code, error.message) from error
        self._reply(
            {"type": "amend_requested", "id": content.get("id"), "order": order}
        )

    async def _cancel_all(self, content: dict[str, Any]) -> None:
        if not self.is_authenticated:
            raise StreamError("unauthorized", "Sign in to trade.")
        body = CancelAllRequestSerializer(data=content.get("filter"))
        self._validate(body)
        data = body.validated_data

        def run() -> list[int]:
            orders = order_cancel_all(
                user=self.user,
                account_id=data["account"],
                symbol=data.get("symbol"),
                side=data.get("side"),
            )
            return [order.pk for order in orders]

        try:
            orders = await database_sync_to_async(run)()
        except OrderError as error:
            raise StreamError(error.code, error.message) from error
        self._reply(
            {"type": "cancel_all_requested", "id": content.get("id"), "orders": orders}
        )

    @staticmethod
    def _validate(body: Any) -> None:
        try:
            body.is_valid(raise_exception=True)
        except ValidationError as error:
            detail = validation_error_body(error.detail)
            raise StreamError(detail["code"], detail["message"]) from error

    def _order_id(self, content: dict[str, Any]) -> int:
        if not self.is_authenticated:
            raise StreamError("unauthorized", "Sign in to trade.")
        order_id = content.get("order_id")
        if not isinstance(order_id, int) or isinstance(order_id, bool):
            raise StreamError("bad_message", "'order_id' must be an integer.")
        return order_id

    async def _cancel(self, content: dict[str, Any]) -> None:
        order_id = self._order_id(content)

        def run() -> dict[str, Any]:
            return order_to_wire(order_cancel(user=self.user, order_id=order_id))

        try:
            order = await database_sync_to_async(run)()
        except OrderError as error:
            raise StreamError(error.code, error.message) from error
        self._reply(
            {"type": "cancel_requested", "id": content.get("id"), "order": order}
        )
