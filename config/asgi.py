"""ASGI entry point: HTTP (Django) and the WebSocket stream at ``/ws/v1/``."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from django.conf import settings  # noqa: E402

if settings.PROFILE == "embedded":
    # One process serves everything, static files (the admin's) included.
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    django_asgi_app = ASGIStaticFilesHandler(django_asgi_app)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from config.ws_auth import TokenAuthMiddleware  # noqa: E402
from marketdata.consumers import StreamConsumer  # noqa: E402

# django-stubs types path() for views only, while channels routes ASGI consumers
# through it (types-channels' _ExtendedURLPattern cannot be built otherwise).
websocket_urls = URLRouter(
    [path("ws/v1/", StreamConsumer.as_asgi())]  # type: ignore[list-item, arg-type]
)

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(TokenAuthMiddleware(websocket_urls)),
    }
)
