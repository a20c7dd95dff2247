"""The WebSocket stream at ``/ws/v1/``.

Client messages are JSON objects with an ``op``:
``{"op": "subscribe", "topics": [...]}``, ``{"op": "unsubscribe", "topics": [...]}``
and ``{"op": "ping"}``. Each subscribed topic first gets a ``snapshot`` carrying the
topic's sequence number, then ``update`` messages with consecutive sequence numbers.
If the server sees a gap (an update lost upstream, e.g. dropped for a slow client)
it sends a fresh snapshot. Private topics (``orders``, ``balances``, ``holdings``)
cover every account the user may see; their sequences run per account, so their
snapshot carries ``seqs`` by account and each update names its ``account``.
Trading over the socket (``place``, ``cancel``) calls the same OMS services as REST.
"""

import asyncio
import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from rest_framework.exceptions import ValidationError

from config.api import validation_error_body
from exchange.streams import attach_event_loop, group_name
from marketdata.topics import TOPICS, StreamError, TopicHandler, unknown
from oms.api import OrderRequestSerializer
from oms.services import OrderError, order_cancel, order_place
from oms.wire import order_to_wire

logger = logging.getLogger(__name__)

MAX_TOPICS = 200


class StreamConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        attach_event_loop(asyncio.get_running_loop())
        self.user = self.scope.get("user")
        # client topic -> {upstream topic: last seq sent}
        self.subscriptions: dict[str, dict[str, int]] = {}
        # upstream topic -> client topic
        self.routes: dict[str, str] = {}
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for upstream in list(self.routes):
            await self.channel_layer.group_discard(
                group_name(upstream), self.channel_name
            )

    @property
    def is_authenticated(self) -> bool:
        return bool(self.user is not None and self.user.is_authenticated)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        try:
            if not isinstance(content, dict):
                raise StreamError("bad_message", "Send a JSON object with an 'op'.")
            op = content.get("op")
            if op == "ping":
                await self.send_json({"type": "pong", "id": content.get("id")})
            elif op == "subscribe":
                for topic in self._topics(content):
                    await self._subscribe(topic)
            elif op == "unsubscribe":
                for topic in self._topics(content):
                    await self._unsubscribe(topic)
            elif op == "place":
                await self._place(content)
            elif op == "cancel":
                await self._cancel(content)
            else:
                raise StreamError("unknown_op", f"Unknown op {op!r}.")
        except StreamError as error:
            await self.send_json(
                {
                    "type": "error",
                    "code": error.code,
                    "message": error.message,
                    "id": content.get("id") if isinstance(content, dict) else None,
                }
            )

    async def decode_json(self, text_data: str) -> Any:
        try:
            return await super().decode_json(text_data)
        except ValueError:
            return None  # answered as a bad message

    def _topics(self, content: dict[str, Any]) -> list[str]:
        topics = content.get("topics")
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            raise StreamError("bad_topics", "'topics' must be a list of strings.")
        if len(self.subscriptions) + len(topics) > MAX_TOPICS:
            raise StreamError(
                "too_many_topics", f"At most {MAX_TOPICS} topics per connection."
            )
        return topics

    # -- subscriptions ---------------------------------------------------------------

    async def _subscribe(self, topic: str) -> None:
        if topic in self.subscriptions:
            await self._send_snapshot(topic)
            return
        upstreams = await self._upstreams(topic)
        self.subscriptions[topic] = {upstream: 0 for upstream in upstreams}
        for upstream in upstreams:
            self.routes[upstream] = topic
            await self.channel_layer.group_add(group_name(upstream), self.channel_name)
        await self._send_snapshot(topic)

    async def _unsubscribe(self, topic: str) -> None:
        upstreams = self.subscriptions.pop(topic, {})
        for upstream in upstreams:
            self.routes.pop(upstream, None)
            await self.channel_layer.group_discard(
                group_name(upstream), self.channel_name
            )
        await self.send_json({"type": "unsubscribed", "topic": topic})

    def _handler(self, topic: str) -> tuple[TopicHandler, str]:
        kind, _, argument = topic.partition(".")
        handler = TOPICS.get(kind)
        if handler is None:
            raise unknown(topic)
        return handler, argument

    async def _upstreams(self, topic: str) -> list[str]:
        handler, argument = self._handler(topic)
        return await database_sync_to_async(handler.upstreams)(self.user, argument)

    async def _send_snapshot(self, topic: str) -> None:
        handler, argument = self._handler(topic)
        upstreams = self.subscriptions[topic]
        snapshot = await database_sync_to_async(handler.snapshot)(
            self.user, argument, list(upstreams)
        )
        message: dict[str, Any] = {"type": "snapshot", "topic": topic}
        if snapshot.seqs is not None:
            for upstream in upstreams:
                upstreams[upstream] = snapshot.seqs[upstream.rsplit(".", 1)[1]]
            message["seqs"] = snapshot.seqs
        else:
            assert snapshot.seq is not None
            for upstream in upstreams:
                upstreams[upstream] = snapshot.seq
            message["seq"] = snapshot.seq
        message["data"] = snapshot.data
        await self.send_json(message)

    # -- updates from the channel layer ---------------------------------------------

    async def stream_message(self, message: dict[str, Any]) -> None:
        upstream = message["topic"]
        topic = self.routes.get(upstream)
        if topic is None:
            return
        last = self.subscriptions[topic][upstream]
        seq = message["seq"]
        if seq <= last:
            return  # already covered by the snapshot
        if seq != last + 1:
            logger.info(
                "gap on %s: %s after %s; resending the snapshot", upstream, seq, last
            )
            await self._send_snapshot(topic)
            return
        self.subscriptions[topic][upstream] = seq
        update: dict[str, Any] = {
            "type": "update",
            "topic": topic,
            "seq": seq,
            "data": message["data"],
        }
        if "account" in message:
            update["account"] = message["account"]
        await self.send_json(update)

    # -- trading -----------------------------------------------------------------------

    async def _place(self, content: dict[str, Any]) -> None:
        if not self.is_authenticated:
            raise StreamError("unauthorized", "Sign in to trade.")
        body = OrderRequestSerializer(data=content.get("order"))
        try:
            body.is_valid(raise_exception=True)
        except ValidationError as error:
            detail = validation_error_body(error.detail)
            raise StreamError(detail["code"], detail["message"]) from error

        def run() -> dict[str, Any]:
            return order_to_wire(order_place(user=self.user, spec=body.to_spec()).order)

        try:
            order = await database_sync_to_async(run)()
        except OrderError as error:
            raise StreamError(error.code, error.message) from error
        await self.send_json(
            {"type": "placed", "id": content.get("id"), "order": order}
        )

    async def _cancel(self, content: dict[str, Any]) -> None:
        if not self.is_authenticated:
            raise StreamError("unauthorized", "Sign in to trade.")
        order_id = content.get("order_id")
        if not isinstance(order_id, int):
            raise StreamError("bad_message", "'order_id' must be an integer.")

        def run() -> dict[str, Any]:
            return order_to_wire(order_cancel(user=self.user, order_id=order_id))

        try:
            order = await database_sync_to_async(run)()
        except OrderError as error:
            raise StreamError(error.code, error.message) from error
        await self.send_json(
            {"type": "cancel_requested", "id": content.get("id"), "order": order}
        )
