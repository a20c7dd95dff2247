"""Liveness and readiness probes."""

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from exchange.matching import market_owned
from exchange.models import Market


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving requests."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to trade: the database answers, the channel layer answers, and every
    market has a matching worker. 503 with the failing checks otherwise."""
    checks: dict[str, object] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as error:  # any failure makes the probe fail, never the server
        checks["database"] = f"error: {error.__class__.__name__}"
        return JsonResponse({"status": "unavailable", "checks": checks}, status=503)
    if settings.REDIS_URL:
        try:
            redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2).ping()
            checks["channel_layer"] = "ok"
        except redis.RedisError as error:
            checks["channel_layer"] = f"error: {error.__class__.__name__}"
    else:
        checks["channel_layer"] = "ok (in-memory)"
    matchers = {
        code: market_owned(code)
        for code in Market.objects.values_list("code", flat=True)
    }
    checks["matchers"] = {
        code: "ok" if owned else "no owner" for code, owned in matchers.items()
    }
    ready = all(
        value == "ok" or str(value).startswith("ok ")
        for key, value in checks.items()
        if key != "matchers"
    ) and all(matchers.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )
