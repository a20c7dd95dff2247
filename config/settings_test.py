"""Test settings: the services profile against the machine's PostgreSQL and Redis."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/xchange")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("MATCHER_IN_PROCESS", "false")

from config.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_TASK_ALWAYS_EAGER = True
REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] = []  # noqa: F405
MATCHER_POLL_SECONDS = 0.2

# Parallel test workers (and test runs on other databases) share one Redis: keep
# their channel-layer groups apart.
CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = "-".join(  # noqa: F405
    [
        "test",
        DATABASES["default"]["NAME"],  # noqa: F405
        os.environ.get("PYTEST_XDIST_WORKER", "main"),
    ]
)

# Static files are not collected for tests; WhiteNoise would warn on every request.
MIDDLEWARE = [m for m in MIDDLEWARE if not m.startswith("whitenoise.")]  # noqa: F405
