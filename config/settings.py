"""Relay settings: everything comes from the environment, with embedded defaults for development.

The defaults run the whole product on one machine with nothing installed by hand: SQLite under
``var/``, Celery's file-system broker under ``var/``, the outbox SMS provider. Production sets
``DEBUG=false`` and then must provide ``SECRET_KEY`` and ``RELAY_ENCRYPTION_KEYS``.
"""

import base64
import hashlib
import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("RELAY_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=True)

DEVELOPMENT_SECRET_KEY = "relay-development-key-never-use-in-production"  # noqa: S105
SECRET_KEY = env.str("SECRET_KEY", default=DEVELOPMENT_SECRET_KEY)
if not DEBUG and SECRET_KEY == DEVELOPMENT_SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY is the development key while DEBUG is off: set SECRET_KEY in the environment."
    )


def _development_fernet_key() -> str:
    digest = hashlib.sha256(("fernet:" + DEVELOPMENT_SECRET_KEY).encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()


# Fernet keys that encrypt provider secrets at rest; the first encrypts, all decrypt (rotation).
RELAY_ENCRYPTION_KEYS = env.list("RELAY_ENCRYPTION_KEYS", default=[])
if not RELAY_ENCRYPTION_KEYS:
    if not DEBUG:
        raise ImproperlyConfigured(
            "RELAY_ENCRYPTION_KEYS is not set while DEBUG is off: generate one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key())'`."
        )
    RELAY_ENCRYPTION_KEYS = [_development_fernet_key()]

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Benchmark-only endpoints (config/bench.py): a bare no-op API view, the framework's ceiling.
RELAY_BENCH_ENDPOINTS = env.bool("RELAY_BENCH_ENDPOINTS", default=False)
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "brands",
    "webhooks",
    "projects",
    "participants",
    "optouts",
    "surveys",
    "credits",
    "distributions",
    "transactional",
    "conversations",
]

MIDDLEWARE = [
    # First: the container's health check asks http://127.0.0.1/healthz/, which is neither an
    # allowed host nor https.
    "config.middleware.HealthCheckMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "config.middleware.ApiOptionalSlashMiddleware",
    "django.middleware.common.CommonMiddleware",
    "config.middleware.ApiBodyLimitMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "brands.middleware.CurrentBrandMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

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
                "brands.context_processors.current_brand",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'relay.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while a worker writes; IMMEDIATE takes the write lock at
    # BEGIN so that concurrent writers queue on the timeout instead of failing mid-transaction.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
    )
    # A file, not memory, for the test database: integration tests share it with worker
    # processes. One file per test run, so that parallel runs in one checkout do not collide.
    DATABASES["default"].setdefault(
        "TEST", {"NAME": str(VAR_DIR / f"test_relay_{os.getpid()}.sqlite3")}
    )
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # The same backend; its health check skips connections used within the last second.
        DATABASES["default"]["ENGINE"] = "config.postgresql"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="relay"),
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "projects:list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# The image collects them into itself (RELAY_STATIC_ROOT=/app/staticfiles): the var folder is a
# volume there, which would keep an older build's files and manifest after an upgrade.
STATIC_ROOT = Path(env.str("RELAY_STATIC_ROOT", default=str(VAR_DIR / "staticfiles")))
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if not DEBUG
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
MEDIA_ROOT = VAR_DIR / "media"
FILE_UPLOAD_TEMP_DIR = None
# The largest request body the API reads (JSON, forms; the import upload has its own limit,
# below): larger ones answer 413 before they are read (config.middleware.ApiBodyLimitMiddleware).
# Pages' form posts have the same limit (Django's own setting).
RELAY_API_MAX_BODY_BYTES = env.int("RELAY_API_MAX_BODY_BYTES", default=10 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = RELAY_API_MAX_BODY_BYTES
# Participant imports: uploads above this answer with a clear "larger than 50 MB" message;
# those up to the inline size are validated in the request, larger ones by a worker.
RELAY_IMPORT_MAX_UPLOAD_BYTES = env.int("RELAY_IMPORT_MAX_UPLOAD_BYTES", default=50 * 1024 * 1024)
RELAY_IMPORT_INLINE_MAX_BYTES = env.int("RELAY_IMPORT_INLINE_MAX_BYTES", default=256 * 1024)

if not DEBUG:
    # Behind a TLS-terminating proxy that sets X-Forwarded-Proto (docs/deploy.md). A site whose
    # PUBLIC_BASE_URL is https redirects plain requests there and sends HSTS (a year, this host
    # only: subdomains and preload lists are the domain owner's call).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    _SERVED_OVER_HTTPS = PUBLIC_BASE_URL.startswith("https://")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=_SERVED_OVER_HTTPS)
    SECURE_HSTS_SECONDS = env.int(
        "SECURE_HSTS_SECONDS", default=365 * 24 * 3600 if _SERVED_OVER_HTTPS else 0
    )
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)

EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.filebased.EmailBackend")
EMAIL_FILE_PATH = VAR_DIR / "mail"
# The platform mailer (docs/email.md): with EMAIL_BACKEND=django.core.mail.backends.smtp.
# EmailBackend, email distributions go over SMTP to EMAIL_HOST; otherwise through the backend
# (the file-based default writes them to var/mail).
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", default=False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=30)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="surveys@relay.example")
# Domains any brand may use in From addresses (default: DEFAULT_FROM_EMAIL's).
RELAY_EMAIL_PLATFORM_DOMAINS = env.list("RELAY_EMAIL_PLATFORM_DOMAINS", default=[])
# Emails per brand per 7 days unless the operator sets the brand's own limit (Django admin).
RELAY_EMAIL_WEEKLY_LIMIT = env.int("RELAY_EMAIL_WEEKLY_LIMIT", default=10_000)
# Return-Path of every email: bounces+<token>@RELAY_BOUNCE_DOMAIN (VERP), so that a bounce
# names its message. The inbound bounce endpoint requires RELAY_BOUNCE_SECRET.
RELAY_BOUNCE_DOMAIN = env.str("RELAY_BOUNCE_DOMAIN", default="bounces.relay.example")
RELAY_BOUNCE_SECRET = env.str("RELAY_BOUNCE_SECRET", default="")

# --- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "brands.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["brands.permissions.HasBrandRole"],
    # The API reads JSON (the participant import upload, multipart, says so itself).
    "DEFAULT_PARSER_CLASSES": ["brands.api.parsers.JSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "DEFAULT_PAGINATION_CLASS": "brands.api.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "brands.api.schema.AutoSchema",
    "EXCEPTION_HANDLER": "brands.api.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["brands.throttling.ApiKeyRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"api_key": env.str("API_KEY_RATE", default="6000/min")},
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Relay API",
    "DESCRIPTION": (
        "Survey distribution by SMS and email. Authenticate with `Authorization: Bearer <key>`; "
        'every error answers `{"error": {"code", "message", "fields"}}`.'
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The API key is the API's scheme; browser sessions (the pages' own calls) are not one a
    # client should be told to use.
    "AUTHENTICATION_WHITELIST": ["brands.authentication.ApiKeyAuthentication"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "brands.api.schema.document_errors",
    ],
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery ---------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://")
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=REDIS_URL or None)
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),  # kombu's default is ./control
        "store_processed": False,
    }
else:
    # A task whose worker dies is redelivered after this long (acks_late); keep it above the
    # longest task so that a slow task is not run twice.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)
    }
# Two queues: ``send`` for the pumps (distributions.pump), ``control`` for everything else
# (starting, finishing, recovery, imports, webhook deliveries, provider receipts), so that
# control work never waits behind sending. Run workers for both (Procfile.dev, compose).
CELERY_TASK_DEFAULT_QUEUE = "control"
CELERY_TASK_ROUTES = {
    "distributions.tasks.send_pump_task": {"queue": "send"},
    "conversations.tasks.turns_send_task": {"queue": "send"},
}
# Celery's Django fix-up closes the database connections before and after every task: each
# task paid a new PostgreSQL session (a backend process, its authentication and set-up). A
# worker keeps them instead, by the rules of a web request (``config.celery``: a connection
# that errored or outlived ``CONN_MAX_AGE`` is closed, an idle one is health-checked); the
# fix-up's own recycling is pushed out of the way.
CELERY_DB_REUSE_MAX = 1_000_000_000
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "conversations-send-stale-turns": {
        "task": "conversations.tasks.turns_send_stale_task",
        "schedule": 60.0,
    },
    # Replies whose kick was lost (a dead worker's batch is free again at once: its
    # transaction rolled back): on the control queue, like every task not routed to "send".
    "conversations-apply-replies": {
        "task": "conversations.tasks.replies_apply_task",
        "schedule": 30.0,
    },
    "projects-close-expired": {
        "task": "projects.tasks.projects_apply_availability_task",
        "schedule": 60.0,
    },
    "distributions-dispatch-due": {
        "task": "distributions.tasks.distributions_dispatch_due_task",
        "schedule": 5.0,
    },
    "distributions-recover": {
        "task": "distributions.tasks.distributions_recover_task",
        "schedule": 5.0,
    },
    "distribution-series-run-due": {
        "task": "distributions.tasks.distribution_series_run_due_task",
        "schedule": 30.0,
    },
    "credits-settle": {
        "task": "distributions.tasks.credits_settle_task",
        "schedule": 60.0,
    },
    "webhooks-sweep": {
        "task": "webhooks.tasks.webhooks_sweep_task",
        "schedule": 15.0,
    },
}

# --- Relay ----------------------------------------------------------------------------------
RELAY_SMS_PROVIDERS = [
    "distributions.providers.outbox.OutboxProvider",
    "distributions.providers.twilio.TwilioProvider",
]
RELAY_DEFAULT_SMS_PROVIDER = env.str("RELAY_DEFAULT_SMS_PROVIDER", default="outbox")
RELAY_EMAIL_PROVIDER = "distributions.providers.email.SmtpEmailProvider"
TWILIO_API_BASE_URL = env.str("TWILIO_API_BASE_URL", default="https://api.twilio.com")
TWILIO_ACCOUNT_SID = env.str("TWILIO_ACCOUNT_SID", default="")
TWILIO_AUTH_TOKEN = env.str("TWILIO_AUTH_TOKEN", default="")
# A row left in Sending longer than this (a worker died mid-call) is reconciled with the
# provider. A live worker renews its lease while its rows are in flight; a request to the
# provider takes at most RELAY_PROVIDER_TIMEOUT_SECONDS, which the lease must exceed.
RELAY_SEND_LEASE_SECONDS = env.int("RELAY_SEND_LEASE_SECONDS", default=20)
RELAY_PROVIDER_TIMEOUT_SECONDS = env.float("RELAY_PROVIDER_TIMEOUT_SECONDS", default=8.0)
# Pumps sending at once (distributions.pump): the number of worker slots on the send queue.
RELAY_SEND_PUMPS = env.int("RELAY_SEND_PUMPS", default=2)
# A rate-limited sender's next window is picked up to this long before its bucket allows it
# and handed over at that moment, no sooner (distributions.fairqueue.pick): the pick, checks
# and rendering happen before the moment instead of after it, every window. On PostgreSQL a
# pump prepares its next batches while a window waits for its moment on the hand-over loop
# (distributions.sending.Batch); on SQLite its batches finish one at a time, so the wait would
# hold the pump: off there by default (docs/operations.md). 0 turns it off.
RELAY_SEND_PICK_AHEAD_SECONDS = env.float(
    "RELAY_SEND_PICK_AHEAD_SECONDS",
    default=0.25 if DATABASES["default"]["ENGINE"] == "config.postgresql" else 0.0,
)
RELAY_DEMO_PASSWORD = env.str("RELAY_DEMO_PASSWORD", default="relay-demo")

# Outbound webhooks (docs/webhooks.md). Seconds, except the allow list.
RELAY_WEBHOOKS_TIMEOUT = env.float("RELAY_WEBHOOKS_TIMEOUT", default=5.0)
RELAY_WEBHOOKS_BACKOFF_BASE = env.float("RELAY_WEBHOOKS_BACKOFF_BASE", default=10.0)
RELAY_WEBHOOKS_BACKOFF_MAX = env.float("RELAY_WEBHOOKS_BACKOFF_MAX", default=3600.0)
RELAY_WEBHOOKS_RETRY_WINDOW = env.int("RELAY_WEBHOOKS_RETRY_WINDOW", default=24 * 3600)
RELAY_WEBHOOKS_DISABLE_AFTER = env.int("RELAY_WEBHOOKS_DISABLE_AFTER", default=24 * 3600)
RELAY_WEBHOOKS_SWEEP_GRACE = env.int("RELAY_WEBHOOKS_SWEEP_GRACE", default=30)
# Hosts, addresses or networks (e.g. 127.0.0.1, 10.0.0.0/8) webhooks may reach although they
# are private or this server's own: empty by default, so that nothing internal can be reached.
RELAY_WEBHOOKS_ALLOW_HOSTS = env.list("RELAY_WEBHOOKS_ALLOW_HOSTS", default=[])

# GET /metrics/ (Prometheus, docs/operations.md): a bearer token, or these networks.
RELAY_METRICS_TOKEN = env.str("RELAY_METRICS_TOKEN", default="")
RELAY_METRICS_ALLOW = env.list("RELAY_METRICS_ALLOW", default=["127.0.0.1/32", "::1/128"])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
