"""WebSocket handshake authentication by OAuth2 bearer token.

The token comes from the ``Authorization: Bearer`` header or, since browsers cannot
set headers on a WebSocket, the ``access_token`` query parameter. Without a token
the session cookie (``AuthMiddlewareStack``) decides; an invalid or expired token
refuses the handshake.
"""

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from oauth2_provider.models import get_access_token_model

from config.auth import token_user

if TYPE_CHECKING:
    from asgiref.typing import ASGIReceiveCallable, ASGISendCallable
    from channels.consumer import _ChannelScope
    from channels.utils import _ChannelApplication

_ASGI3 = Callable[
    [Mapping[str, Any], "ASGIReceiveCallable", "ASGISendCallable"], Awaitable[None]
]


def _asgi3(app: "_ChannelApplication") -> _ASGI3:
    """``app`` as the three-argument ASGI 3 callable it is.

    channels' stubs also admit ASGI 2 (one-argument) applications, which channels 4
    no longer runs; every application here is ASGI 3, so the call is typed as one.
    """
    return cast(_ASGI3, app)


def _bearer(scope: "_ChannelScope") -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    tokens = query.get("access_token")
    return tokens[0] if tokens else None


@database_sync_to_async
def _user_for_token(raw: str) -> Any:
    checksum = hashlib.sha256(raw.encode("utf-8")).hexdigest()
    token = (
        get_access_token_model()
        .objects.select_related("user", "application__user")
        .filter(token_checksum=checksum)
        .first()
    )
    if token is None or not token.is_valid(["read"]):
        return None
    return token_user(token)


class TokenAuthMiddleware(BaseMiddleware):
    async def __call__(
        self,
        scope: "_ChannelScope",
        receive: "ASGIReceiveCallable",
        send: "ASGISendCallable",
    ) -> Any:
        raw = _bearer(scope)
        if raw is not None:
            user = await _user_for_token(raw)
            if user is None:
                await send({"type": "websocket.close", "code": 4401, "reason": None})
                return None
            bearer_scope = {**scope, "user": user, "auth": "bearer"}
            return await _asgi3(self.inner)(bearer_scope, receive, send)
        return await _asgi3(AuthMiddlewareStack(self.inner))(scope, receive, send)


__all__ = ["TokenAuthMiddleware"]
