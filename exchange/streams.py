"""Stream topics, their gapless sequence numbers, and publishing after commit.

A topic (``book.XSX:XS01``, ``trades.XSX:XS01``, ``orders.acct.7``) has one
:class:`~exchange.models.StreamSequence` row, advanced in the transaction that makes
the change, so the sequence a snapshot carries matches what it shows. Messages are
handed to the channel layer only after that transaction commits, in order, from a
single sender per process. A failed send is retried a few times, then dropped with
an error logged; the committed sequence (which stream heartbeats report) lets
subscribers see the loss and resync.
"""

import asyncio
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction

from exchange.models import StreamSequence

logger = logging.getLogger(__name__)

Message = tuple[str, dict[str, Any]]  # (topic, message)

#: Seconds to wait before each retry of a failed channel-layer send (about 1.3 s in
#: all, during which later messages wait: they must not overtake it).
PUBLISH_RETRY_DELAYS = (0.05, 0.25, 1.0)


def group_name(topic: str) -> str:
    """Channel-layer group for a topic (group names cannot contain ``:``)."""
    return topic.replace(":", "-")


def stream_advance(counts: Mapping[str, int]) -> dict[str, int]:
    """Reserve ``counts[topic]`` sequence numbers per topic; return each first one.

    One upsert, rows taken in topic order. Precondition: inside a transaction,
    after any balance locks (the global lock order is balances, then stream
    sequences, each sorted).
    """
    topics = sorted(topic for topic, count in counts.items() if count)
    if not topics:
        return {}
    table = connection.ops.quote_name(StreamSequence._meta.db_table)
    values = ", ".join(["(%s, %s)"] * len(topics))
    params: list[str | int] = []
    for topic in topics:
        params += [topic, counts[topic]]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (topic, seq) VALUES {values} "  # noqa: S608 (no user input)
            f"ON CONFLICT (topic) DO UPDATE SET seq = {table}.seq + excluded.seq "
            "RETURNING topic, seq",
            params,
        )
        last = dict(cursor.fetchall())
    return {topic: last[topic] - counts[topic] + 1 for topic in topics}


def stream_current(topics: Iterable[str]) -> dict[str, int]:
    """The last published sequence of each topic (0 if never published)."""
    topics = list(topics)
    found = dict(
        StreamSequence.objects.filter(topic__in=topics).values_list("topic", "seq")
    )
    return {topic: found.get(topic, 0) for topic in topics}


class _Sender:
    """Sends messages to the channel layer in submission order from one event loop.

    The in-memory layer only works from the event loop its consumers run on (the
    embedded profile registers the server's loop); any other layer gets a private
    loop in a daemon thread.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[list[Message]] | None = None
        self._lock = threading.Lock()
        self._is_layer_up = True

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            if self._loop is None:
                self._start(loop)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        ready = threading.Event()

        def create_queue() -> None:
            self._queue = asyncio.Queue()
            loop.create_task(self._drain())
            ready.set()

        loop.call_soon_threadsafe(create_queue)
        if not _in_loop(loop):
            ready.wait(5)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop | None:
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                self._loop = None
                if isinstance(get_channel_layer(), InMemoryChannelLayer):
                    return None  # no consumer has connected: nobody to deliver to
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="stream-sender", daemon=True
                ).start()
                self._start(loop)
            return self._loop

    def submit(self, messages: list[Message]) -> None:
        loop = self._ensure_loop()
        if loop is None or not messages:
            return
        if _in_loop(loop):
            assert self._queue is not None
            self._queue.put_nowait(messages)
        else:
            loop.call_soon_threadsafe(self._put, messages)

    def _put(self, messages: list[Message]) -> None:
        assert self._queue is not None
        self._queue.put_nowait(messages)

    async def _drain(self) -> None:
        assert self._queue is not None
        layer = get_channel_layer()
        if layer is None:  # the settings always configure one
            raise ImproperlyConfigured("CHANNEL_LAYERS has no default layer")
        while True:
            messages = await self._queue.get()
            for topic, message in messages:
                await self._send(layer, topic, message)

    async def _send(self, layer: Any, topic: str, message: dict[str, Any]) -> None:
        """Send one message, retrying a failed send after each of
        :data:`PUBLISH_RETRY_DELAYS`; then drop it (logged): its sequence number is
        committed, so subscribers see the gap (in the next update or heartbeat) and
        resync. Once a message has been dropped, later ones get one attempt each
        until a send succeeds again, so a layer that is down cannot build an
        unbounded backlog here. Retries keep the submission order."""
        delays = PUBLISH_RETRY_DELAYS if self._is_layer_up else ()
        for attempt, delay in enumerate((*delays, None), start=1):
            try:
                await layer.group_send(group_name(topic), message)
            except Exception as error:  # a broken layer must not stop later messages
                if delay is None:
                    self._is_layer_up = False
                    logger.error(
                        "publishing %s seq %s failed %d time(s) (%r); dropped: "
                        "subscribers resync from the committed sequence",
                        topic,
                        message.get("seq"),
                        attempt,
                        error,
                    )
                    return
                logger.warning(
                    "publishing %s seq %s failed (%r); retrying in %s s",
                    topic,
                    message.get("seq"),
                    error,
                    delay,
                )
                await asyncio.sleep(delay)
            else:
                self._is_layer_up = True
                return


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


_sender = _Sender()


def attach_event_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Deliver from the server's loop (needed by the in-memory channel layer)."""
    if isinstance(get_channel_layer(), InMemoryChannelLayer):
        _sender.attach(loop)


def stream_message(topic: str, seq: int, data: Any, **extra: Any) -> Message:
    return (
        topic,
        {"type": "stream.message", "topic": topic, "seq": seq, "data": data, **extra},
    )


def publish_on_commit(messages: list[Message]) -> None:
    """Publish ``messages`` in order once the current transaction commits."""
    if messages:
        transaction.on_commit(lambda: _sender.submit(messages))
