"""Settings, read once from the environment.

With no service URLs set the gateway runs on embedded defaults: SQLite, a
filesystem Celery broker and no Elasticsearch. Each service is switched to the
real one by its URL (`DATABASE_URL`, `REDIS_URL`, `ELASTICSEARCH_URL`).
"""

import os
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
env.read_env(BASE_DIR / ".env")
VAR_DIR = Path(env.str("GATEWAY_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _positive(name, value):
    if value <= 0:
        raise ImproperlyConfigured(f"{name} must be greater than zero, got {value!r}")
    return value


# Without SECRET_KEY / ALLOWED_HOSTS: see "Deployment safety" at the end.
SECRET_KEY = env.str("SECRET_KEY", default="")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_prometheus",
    "proxy",
    "telemetry",
    "dashboards",
    "budgets",
]

# The proxy routes are served by a lean handler with PROXY_MIDDLEWARE only
# (see gateway_project/asgi.py): sync middleware costs a thread hop per request.
MIDDLEWARE = [
    "telemetry.middleware.http_metrics_middleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "dashboards.middleware.time_zone_middleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
PROXY_MIDDLEWARE = ["telemetry.middleware.http_metrics_middleware"]
PROXY_PATH_PREFIXES = ("/v1/", "/healthz", "/readyz")

ROOT_URLCONF = "gateway_project.urls"
ASGI_APPLICATION = "gateway_project.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # Overrides of other apps' templates (the admin's base_site.html, which adds the gateway's admin CSS).
        "DIRS": [BASE_DIR / "gateway_project" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboards.context_processors.time_zone",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'tollgate.sqlite3'}")}
# `make run` seeds demo data only into this embedded default, never into a database someone named.
DATABASE_IS_EMBEDDED = not env.str("DATABASE_URL", default="")
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded database, written by the worker while the web process reads it: in WAL mode
    # readers and the writer do not block each other, and a commit waits for no fsync (a power
    # cut may take the last commits back, never corrupt the file; the journal is not fsynced either).
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "init_command", env.str("SQLITE_INIT_COMMAND", default="PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL")
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/dashboards/"

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
# Admin shows times with their zone ("2026-12-01 11:20 UTC"); see gateway_project/formats/.
FORMAT_MODULE_PATH = ["gateway_project.formats"]

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise expects it before `collectstatic` has run
# Whitenoise serves the dashboards' static files (Chart.js included) from the app itself.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "proxy.errors.provider_exception_handler",
}

# --- Serving --------------------------------------------------------------------

# Read by `make run` and the container's uvicorn command: one event loop per worker process.
PORT = env.int("PORT", default=8000)
WEB_CONCURRENCY = _positive("WEB_CONCURRENCY", env.int("WEB_CONCURRENCY", default=1))

# --- The proxy -----------------------------------------------------------------

GATEWAY_MAX_BODY_BYTES = _positive(
    "GATEWAY_MAX_BODY_BYTES", env.int("GATEWAY_MAX_BODY_BYTES", default=10 * 1024 * 1024)
)
# The proxy checks the size itself, so that an oversized body gets a 413 in the provider's format.
DATA_UPLOAD_MAX_MEMORY_SIZE = None
# A client gets this long to send its whole body, then a 408: a trickling body holds a slot otherwise.
GATEWAY_BODY_READ_TIMEOUT = _positive("GATEWAY_BODY_READ_TIMEOUT", env.float("GATEWAY_BODY_READ_TIMEOUT", default=30.0))
# Requests (streams included) one worker process serves at once; past it, a 503 in the route's format.
GATEWAY_MAX_CONCURRENT_REQUESTS = _positive(
    "GATEWAY_MAX_CONCURRENT_REQUESTS", env.int("GATEWAY_MAX_CONCURRENT_REQUESTS", default=1000)
)
GATEWAY_DEFAULT_PROVIDER = env.str("GATEWAY_DEFAULT_PROVIDER", default="openai")
# A configuration file (the gateway's own format or a LiteLLM config.yaml) `make run` applies at start.
GATEWAY_CONFIG_FILE = env.str("GATEWAY_CONFIG_FILE", default="")
GATEWAY_UPSTREAM_TIMEOUT = _positive("GATEWAY_UPSTREAM_TIMEOUT", env.float("GATEWAY_UPSTREAM_TIMEOUT", default=600.0))
GATEWAY_UPSTREAM_CONNECT_TIMEOUT = _positive(
    "GATEWAY_UPSTREAM_CONNECT_TIMEOUT", env.float("GATEWAY_UPSTREAM_CONNECT_TIMEOUT", default=10.0)
)
GATEWAY_UPSTREAM_MAX_CONNECTIONS = _positive(
    "GATEWAY_UPSTREAM_MAX_CONNECTIONS", env.int("GATEWAY_UPSTREAM_MAX_CONNECTIONS", default=512)
)
GATEWAY_STREAM_CAPTURE_MAX_BYTES = env.int("GATEWAY_STREAM_CAPTURE_MAX_BYTES", default=1024 * 1024)
# Decompressed bytes of one provider answer, streamed or not: a gzip bomb must not become the caller's problem.
GATEWAY_MAX_RESPONSE_BYTES = _positive(
    "GATEWAY_MAX_RESPONSE_BYTES", env.int("GATEWAY_MAX_RESPONSE_BYTES", default=50 * 1024 * 1024)
)
# A stream's total time, and the longest silence between its chunks, before the gateway ends it.
GATEWAY_STREAM_TIMEOUT = _positive("GATEWAY_STREAM_TIMEOUT", env.float("GATEWAY_STREAM_TIMEOUT", default=1800.0))
GATEWAY_STREAM_IDLE_TIMEOUT = _positive(
    "GATEWAY_STREAM_IDLE_TIMEOUT", env.float("GATEWAY_STREAM_IDLE_TIMEOUT", default=300.0)
)
# How long to keep reading a finished stream whose client left, for the usage it is billed by (0: never).
GATEWAY_STREAM_USAGE_GRACE = env.float("GATEWAY_STREAM_USAGE_GRACE", default=5.0)
if GATEWAY_STREAM_USAGE_GRACE < 0:
    raise ImproperlyConfigured(f"GATEWAY_STREAM_USAGE_GRACE must not be negative, got {GATEWAY_STREAM_USAGE_GRACE!r}")
GATEWAY_KEY_CACHE_SECONDS = _positive("GATEWAY_KEY_CACHE_SECONDS", env.float("GATEWAY_KEY_CACHE_SECONDS", default=30.0))
# Unknown keys remembered for a few seconds, in a cache of their own so that a flood of them never evicts valid keys.
GATEWAY_KEY_NEGATIVE_CACHE_MAX = _positive(
    "GATEWAY_KEY_NEGATIVE_CACHE_MAX", env.int("GATEWAY_KEY_NEGATIVE_CACHE_MAX", default=10_000)
)
# A key's last-used time is written at most this often (seconds), off the request path.
GATEWAY_KEY_LAST_USED_INTERVAL = _positive(
    "GATEWAY_KEY_LAST_USED_INTERVAL", env.float("GATEWAY_KEY_LAST_USED_INTERVAL", default=60.0)
)
# The router: the longest Retry-After a retry waits for (a longer one sends the request elsewhere, or
# its 429 back), and the first pause before a deployment is tried again in one request (doubling each time).
GATEWAY_RETRY_AFTER_MAX_SECONDS = env.float("GATEWAY_RETRY_AFTER_MAX_SECONDS", default=10.0)
if GATEWAY_RETRY_AFTER_MAX_SECONDS < 0:
    raise ImproperlyConfigured(
        f"GATEWAY_RETRY_AFTER_MAX_SECONDS must not be negative, got {GATEWAY_RETRY_AFTER_MAX_SECONDS!r}"
    )
GATEWAY_RETRY_BACKOFF_SECONDS = env.float("GATEWAY_RETRY_BACKOFF_SECONDS", default=0.5)
if GATEWAY_RETRY_BACKOFF_SECONDS < 0:
    raise ImproperlyConfigured(
        f"GATEWAY_RETRY_BACKOFF_SECONDS must not be negative, got {GATEWAY_RETRY_BACKOFF_SECONDS!r}"
    )
GATEWAY_USER_ID_MAX_LENGTH = env.int("GATEWAY_USER_ID_MAX_LENGTH", default=256)
GATEWAY_ENVIRONMENT = env.str("GATEWAY_ENVIRONMENT", default="development")
# Fernet key for provider credentials at rest; derived from SECRET_KEY when unset.
GATEWAY_ENCRYPTION_KEY = env.str("GATEWAY_ENCRYPTION_KEY", default="")
AZURE_API_VERSION = env.str("AZURE_API_VERSION", default="2024-10-21")

# --- Budgets and rate limits ------------------------------------------------------

# SQLite (the embedded mode) cannot make a budget's or limit's target unique where some of its fields
# are empty; the services look a target up before writing it, so one target keeps one row all the same.
SILENCED_SYSTEM_CHECKS = ["models.W047"]
# The Redis holding the counters (REDIS_URL unless set). Without one, nothing is enforced.
GATEWAY_LIMITS_REDIS_URL = env.str("GATEWAY_LIMITS_REDIS_URL", default="") or REDIS_URL
# Redis unreachable: "open" serves requests and adds their spend once it is back; "closed" answers 503.
GATEWAY_LIMITS_FAIL_MODE = env.str("GATEWAY_LIMITS_FAIL_MODE", default="open")
if GATEWAY_LIMITS_FAIL_MODE not in ("open", "closed"):
    raise ImproperlyConfigured(f"GATEWAY_LIMITS_FAIL_MODE must be open or closed, got {GATEWAY_LIMITS_FAIL_MODE!r}")
# How long a request waits on Redis for its limits before the fail mode applies, and how long the
# gateway then leaves Redis alone before trying again.
GATEWAY_LIMITS_REDIS_TIMEOUT = _positive(
    "GATEWAY_LIMITS_REDIS_TIMEOUT", env.float("GATEWAY_LIMITS_REDIS_TIMEOUT", default=2.0)
)
GATEWAY_LIMITS_RETRY_SECONDS = _positive(
    "GATEWAY_LIMITS_RETRY_SECONDS", env.float("GATEWAY_LIMITS_RETRY_SECONDS", default=1.0)
)
GATEWAY_LIMITS_REDIS_MAX_CONNECTIONS = _positive(
    "GATEWAY_LIMITS_REDIS_MAX_CONNECTIONS", env.int("GATEWAY_LIMITS_REDIS_MAX_CONNECTIONS", default=64)
)
# Finished requests are settled in one Redis call per this many seconds, off the requests' path.
GATEWAY_LIMITS_SETTLE_INTERVAL = _positive(
    "GATEWAY_LIMITS_SETTLE_INTERVAL", env.float("GATEWAY_LIMITS_SETTLE_INTERVAL", default=0.05)
)
# The most requests one Redis admission counts room for, for this process to admit alone in the same
# second, far from every limit (budgets.leases); 0 or 1: every request goes to Redis.
GATEWAY_LIMITS_LEASE_REQUESTS = env.int("GATEWAY_LIMITS_LEASE_REQUESTS", default=32)
if GATEWAY_LIMITS_LEASE_REQUESTS < 0:
    raise ImproperlyConfigured("GATEWAY_LIMITS_LEASE_REQUESTS must not be negative")
# The output tokens a budget reserves for a request that sets no max_tokens.
GATEWAY_BUDGET_DEFAULT_OUTPUT_TOKENS = _positive(
    "GATEWAY_BUDGET_DEFAULT_OUTPUT_TOKENS", env.int("GATEWAY_BUDGET_DEFAULT_OUTPUT_TOKENS", default=4096)
)
# Percentages of a budget whose crossing sends an alert, once per period.
GATEWAY_BUDGET_ALERT_THRESHOLDS = sorted(
    _positive("GATEWAY_BUDGET_ALERT_THRESHOLDS", int(value))
    for value in env.list("GATEWAY_BUDGET_ALERT_THRESHOLDS", default=["50", "80", "100"])
)
GATEWAY_BUDGET_ALERT_WEBHOOK_URL = env.str("GATEWAY_BUDGET_ALERT_WEBHOOK_URL", default="")
# Signs each webhook body: header x-tollgate-signature: sha256=<HMAC-SHA256 of the body, hex>.
GATEWAY_BUDGET_ALERT_WEBHOOK_SECRET = env.str("GATEWAY_BUDGET_ALERT_WEBHOOK_SECRET", default="")
# Alert emails go to the org's owners and to these addresses.
GATEWAY_BUDGET_ALERT_EMAILS = env.list("GATEWAY_BUDGET_ALERT_EMAILS", default=[])
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_FILE_PATH = env.str("EMAIL_FILE_PATH", default=str(VAR_DIR / "emails"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="tollgate@localhost")

# --- Telemetry -----------------------------------------------------------------

# How often the web process hands its buffered records to the queue; this bounds
# what a hard kill of a web worker can lose.
TELEMETRY_FLUSH_INTERVAL = _positive("TELEMETRY_FLUSH_INTERVAL", env.float("TELEMETRY_FLUSH_INTERVAL", default=0.1))
TELEMETRY_LOCAL_BUFFER_MAX = _positive(
    "TELEMETRY_LOCAL_BUFFER_MAX", env.int("TELEMETRY_LOCAL_BUFFER_MAX", default=200_000)
)
TELEMETRY_PUBLISHER = env.str("TELEMETRY_PUBLISHER", default="telemetry.handoff.CeleryPublisher")
TELEMETRY_ENABLED = env.bool("TELEMETRY_ENABLED", default=True)
# A record's document is cut down to this many bytes of JSON (payloads truncated, never the record dropped).
TELEMETRY_MAX_DOCUMENT_BYTES = _positive(
    "TELEMETRY_MAX_DOCUMENT_BYTES", env.int("TELEMETRY_MAX_DOCUMENT_BYTES", default=1024 * 1024)
)
# The hand-off publishes at most this many bytes of documents per broker message.
TELEMETRY_PUBLISH_MAX_BYTES = _positive(
    "TELEMETRY_PUBLISH_MAX_BYTES", env.int("TELEMETRY_PUBLISH_MAX_BYTES", default=4 * 1024 * 1024)
)
# Every finished record is written to a local journal before it counts as handed off, so that a
# killed web process or a broker outage across a restart loses nothing (see telemetry.journal).
GATEWAY_JOURNAL_ENABLED = env.bool("GATEWAY_JOURNAL_ENABLED", default=True)
GATEWAY_JOURNAL_DIR = Path(env.str("GATEWAY_JOURNAL_DIR", default=str(VAR_DIR / "journal")))
GATEWAY_JOURNAL_MAX_BYTES = _positive(
    "GATEWAY_JOURNAL_MAX_BYTES", env.int("GATEWAY_JOURNAL_MAX_BYTES", default=1024 * 1024 * 1024)
)

ENABLED_EXPORTERS = env.list("ENABLED_EXPORTERS", default=["postgres"])
ENABLE_ELASTICSEARCH = env.bool("ENABLE_ELASTICSEARCH", default=False)
ELASTICSEARCH_URL = env.str("ELASTICSEARCH_URL", default="")
if ENABLE_ELASTICSEARCH or ELASTICSEARCH_URL:
    if "elasticsearch" not in ENABLED_EXPORTERS:
        ENABLED_EXPORTERS = [*ENABLED_EXPORTERS, "elasticsearch"]
    ELASTICSEARCH_URL = ELASTICSEARCH_URL or "http://localhost:9200"
ELASTICSEARCH_USERNAME = env.str("ELASTICSEARCH_USERNAME", default="")
ELASTICSEARCH_PASSWORD = env.str("ELASTICSEARCH_PASSWORD", default="")
ELASTICSEARCH_API_KEY = env.str("ELASTICSEARCH_API_KEY", default="")
ELASTICSEARCH_INDEX = env.str("ELASTICSEARCH_INDEX", default="ai-gateway-metrics")
ELASTICSEARCH_CA_CERTS = env.str("ELASTICSEARCH_CA_CERTS", default="")
ELASTICSEARCH_VERIFY_CERTS = env.bool("ELASTICSEARCH_VERIFY_CERTS", default=True)
ELASTICSEARCH_PLAIN_JSON = env.bool("ELASTICSEARCH_PLAIN_JSON", default=False)
ELASTICSEARCH_RETENTION_DAYS = env.int("ELASTICSEARCH_RETENTION_DAYS", default=0)
# Request and response text indexed (but not stored in _source) makes content searchable.
ELASTICSEARCH_SEARCH_TEXT = env.bool("ELASTICSEARCH_SEARCH_TEXT", default=True)
POSTGRES_LOG_TABLE = env.str("POSTGRES_LOG_TABLE", default="ai_gateway_request_logs")
# The request-log table is partitioned by month (telemetry.partitions): months are made this
# many ahead of the current one, and with a retention months wholly older than it are dropped.
POSTGRES_PARTITIONS_AHEAD = env.int("POSTGRES_PARTITIONS_AHEAD", default=2)
POSTGRES_RETENTION_DAYS = env.int("POSTGRES_RETENTION_DAYS", default=0)
for _name in ("POSTGRES_PARTITIONS_AHEAD", "POSTGRES_RETENTION_DAYS"):
    if globals()[_name] < 0:
        raise ImproperlyConfigured(f"{_name} must be zero or more, got {globals()[_name]!r}")

# Exporters by name, like CACHES: a dotted BACKEND path, its OPTIONS, and how many records
# go into one export task. These are only the initial values: on first use each enabled
# exporter gets an ExporterSetting row, which the admin edits from then on.
TELEMETRY_EXPORTERS = {
    "postgres": {
        "BACKEND": "telemetry.exporters.postgres.PostgresExporter",
        "OPTIONS": {"table": POSTGRES_LOG_TABLE},
        "BATCH_SIZE": _positive("POSTGRES_EXPORT_BATCH_SIZE", env.int("POSTGRES_EXPORT_BATCH_SIZE", default=1000)),
    },
    "elasticsearch": {
        "BACKEND": "telemetry.exporters.elasticsearch.ElasticsearchExporter",
        "OPTIONS": {
            "url": ELASTICSEARCH_URL or "http://localhost:9200",
            "index": ELASTICSEARCH_INDEX,
            "username": ELASTICSEARCH_USERNAME,
            "password": ELASTICSEARCH_PASSWORD,
            "api_key": ELASTICSEARCH_API_KEY,
            "ca_certs": ELASTICSEARCH_CA_CERTS,
            "verify_certs": ELASTICSEARCH_VERIFY_CERTS,
            "plain_json": ELASTICSEARCH_PLAIN_JSON,
            "retention_days": ELASTICSEARCH_RETENTION_DAYS,
            "search_text": ELASTICSEARCH_SEARCH_TEXT,
        },
        "BATCH_SIZE": _positive(
            "ELASTICSEARCH_EXPORT_BATCH_SIZE", env.int("ELASTICSEARCH_EXPORT_BATCH_SIZE", default=500)
        ),
    },
}
# Prometheus metrics are always served at /metrics; the name is accepted and needs no exporter.
ENABLED_EXPORTERS = [_name for _name in ENABLED_EXPORTERS if _name != "prometheus"]
for _name in ENABLED_EXPORTERS:
    if _name not in TELEMETRY_EXPORTERS:
        raise ImproperlyConfigured(
            f"ENABLED_EXPORTERS names {_name!r}, which is not one of {sorted(TELEMETRY_EXPORTERS)}"
        )
# How long a process trusts its copy of the ExporterSetting rows: an admin change reaches
# running workers within this many seconds.
TELEMETRY_EXPORTER_SETTINGS_TTL = _positive(
    "TELEMETRY_EXPORTER_SETTINGS_TTL", env.float("TELEMETRY_EXPORTER_SETTINGS_TTL", default=30.0)
)
# A batch an exporter could not take for a transient reason is retried after
# BACKOFF * 2**attempt seconds, capped at BACKOFF_MAX, for as long as it takes.
TELEMETRY_EXPORT_RETRY_BACKOFF = _positive(
    "TELEMETRY_EXPORT_RETRY_BACKOFF", env.float("TELEMETRY_EXPORT_RETRY_BACKOFF", default=1.0)
)
TELEMETRY_EXPORT_RETRY_BACKOFF_MAX = _positive(
    "TELEMETRY_EXPORT_RETRY_BACKOFF_MAX", env.float("TELEMETRY_EXPORT_RETRY_BACKOFF_MAX", default=60.0)
)
# Dotted paths of fn(cursor, table) called inside the Postgres exporter's insert transaction
# with a temporary table of the rows that were new (see telemetry.exporters.postgres).
# The dashboards' rollups are updated in the same transaction as the rows they count.
TELEMETRY_POSTGRES_AFTER_INSERT = env.list(
    "TELEMETRY_POSTGRES_AFTER_INSERT", default=["dashboards.rollups.apply_new_rows"]
)
# The Elasticsearch client logs every request at INFO; the exporter logs what needs attention.
LOGGING.setdefault("loggers", {})["elastic_transport"] = {"level": "WARNING"}

# --- Celery --------------------------------------------------------------------

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # A task whose worker died is handed out again after this long.
    "visibility_timeout": _positive("CELERY_VISIBILITY_TIMEOUT", env.int("CELERY_VISIBILITY_TIMEOUT", default=300)),
    # How often workers look for such tasks; the Redis transport's default sweep (100 s)
    # would leave a short visibility timeout waiting far longer than it says.
    "unacked_restore_interval": _positive(
        "CELERY_UNACKED_RESTORE_INTERVAL", env.int("CELERY_UNACKED_RESTORE_INTERVAL", default=10)
    ),
    "unacked_restore_throttle": 1,
    # A publish to a dead broker fails at once (or within the socket timeout) instead of
    # retrying: the telemetry hand-off keeps its records and tries again on its own. Workers
    # reconnect by CELERY_BROKER_CONNECTION_MAX_RETRIES, which this does not touch.
    "max_retries": 0,
    "socket_connect_timeout": env.float("CELERY_BROKER_SOCKET_TIMEOUT", default=5.0),
    "socket_timeout": env.float("CELERY_BROKER_SOCKET_TIMEOUT", default=5.0),
}
if CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] <= TELEMETRY_EXPORT_RETRY_BACKOFF_MAX:
    # A retried export waits in the worker, unacknowledged, for up to the backoff: a shorter
    # visibility timeout would hand the same batch to a second worker meanwhile.
    raise ImproperlyConfigured("CELERY_VISIBILITY_TIMEOUT must be longer than TELEMETRY_EXPORT_RETRY_BACKOFF_MAX")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS |= {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # kombu's Redis transport, made to keep a worker alive when its broker connection drops.
    CELERY_BROKER_TRANSPORT = "gateway_project.broker:Transport"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = env.int("CELERY_WORKER_PREFETCH_MULTIPLIER", default=4)
CELERY_TASK_SERIALIZER = "orjson"
CELERY_TASK_COMPRESSION = "zlib-fast"
CELERY_ACCEPT_CONTENT = ["orjson", "json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# A worker outlives a broker outage of any length rather than exiting after 100 attempts.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# Telemetry export tasks go to one queue per exporter, "export.<name>" (see telemetry.tasks):
# `celery -A gateway_project worker -Q export.postgres,export.elasticsearch`.
# `celery -A gateway_project beat` runs the periodic tasks, on the default queue ("celery").
CELERY_BEAT_SCHEDULE = {
    # Months of the request-log table made ahead, and dropped past POSTGRES_RETENTION_DAYS.
    "request-log-partitions": {"task": "telemetry.maintain_log_partitions", "schedule": 3600.0},
}

# /metrics: when a token is set, scrapers must send `Authorization: Bearer <token>`.
GATEWAY_METRICS_TOKEN = env.str("GATEWAY_METRICS_TOKEN", default="")

# --- Tracing and logs -------------------------------------------------------------------

# OpenTelemetry's own variables (https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/).
# Tracing is off until an OTLP endpoint is set; the SDK reads OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT,
# _COMPRESSION and OTEL_BSP_* itself.
OTEL_SDK_DISABLED = env.bool("OTEL_SDK_DISABLED", default=False)
OTEL_EXPORTER_OTLP_ENDPOINT = env.str("OTEL_EXPORTER_OTLP_ENDPOINT", default="").strip()
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = env.str("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", default="").strip()
OTEL_EXPORTER_OTLP_PROTOCOL = env.str(
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", default=env.str("OTEL_EXPORTER_OTLP_PROTOCOL", default="http/protobuf")
).strip()
if OTEL_EXPORTER_OTLP_PROTOCOL not in ("http/protobuf", "grpc"):
    raise ImproperlyConfigured(
        f"OTEL_EXPORTER_OTLP_PROTOCOL must be http/protobuf or grpc, got {OTEL_EXPORTER_OTLP_PROTOCOL!r}"
    )
# The reference's words (always, never, probability) are parent-based: a caller's sampled
# traceparent is honoured. OpenTelemetry's own sampler names are accepted as well.
OTEL_TRACES_SAMPLERS = (
    "always",
    "never",
    "probability",
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
OTEL_TRACES_SAMPLER = env.str("OTEL_TRACES_SAMPLER", default="parentbased_always_on").strip().lower()
if OTEL_TRACES_SAMPLER not in OTEL_TRACES_SAMPLERS:
    raise ImproperlyConfigured(
        f"OTEL_TRACES_SAMPLER must be one of {', '.join(OTEL_TRACES_SAMPLERS)}, got {OTEL_TRACES_SAMPLER!r}"
    )
try:
    OTEL_TRACES_SAMPLER_ARG = float(env.str("OTEL_TRACES_SAMPLER_ARG", default="1.0"))
except ValueError:
    OTEL_TRACES_SAMPLER_ARG = -1.0
if not 0.0 <= OTEL_TRACES_SAMPLER_ARG <= 1.0:
    raise ImproperlyConfigured(
        f"OTEL_TRACES_SAMPLER_ARG must be a probability from 0 to 1, got {env.str('OTEL_TRACES_SAMPLER_ARG')!r}"
    )
OTEL_SERVICE_NAME = env.str("OTEL_SERVICE_NAME", default="tollgate").strip() or "tollgate"
TRACING_ENABLED = bool(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT) and not OTEL_SDK_DISABLED

# Application logs as text lines, or as one JSON object per line carrying request_id, trace_id and span_id.
GATEWAY_LOG_FORMAT = env.str("GATEWAY_LOG_FORMAT", default="text").strip().lower()
if GATEWAY_LOG_FORMAT not in ("text", "json"):
    raise ImproperlyConfigured(f"GATEWAY_LOG_FORMAT must be text or json, got {GATEWAY_LOG_FORMAT!r}")
if GATEWAY_LOG_FORMAT == "json":
    LOGGING["formatters"]["json"] = {"()": "gateway_project.logs.JsonFormatter"}
    LOGGING["handlers"]["console"]["formatter"] = "json"

# Django 6 makes https the default scheme of URL form fields; opt in now.
FORMS_URLFIELD_ASSUME_HTTPS = True

# --- Accounts and deployment safety --------------------------------------------------

# A deployment is any run with a service URL set or bound beyond loopback. It must be given its
# own SECRET_KEY, GATEWAY_ENCRYPTION_KEY and ALLOWED_HOSTS: gateway_project.safety refuses to
# start it otherwise. A local run (`make run`) keeps a generated key in var/ and serves loopback.
HOST = env.str("HOST", default="127.0.0.1")
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
GATEWAY_DEPLOYED = any(env.str(name, default="") for name in ("DATABASE_URL", "REDIS_URL", "ELASTICSEARCH_URL")) or (
    HOST not in ("localhost", "::1", "[::1]") and not HOST.startswith("127.")
)
DEVELOPMENT_SECRET_KEY = "tollgate-development-secret-key-change-me"


def _local_secret_key(path: Path) -> str:
    """A random key made on first use and kept in var/, readable by its owner only."""
    import secrets

    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as file:
        file.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


if not SECRET_KEY:
    SECRET_KEY = DEVELOPMENT_SECRET_KEY if GATEWAY_DEPLOYED else _local_secret_key(VAR_DIR / "secret_key")
if not env.str("ALLOWED_HOSTS", default="") and not GATEWAY_DEPLOYED:
    ALLOWED_HOSTS = LOOPBACK_HOSTS

# Where people reach the gateway, e.g. https://gateway.example.com: password-reset links are built
# from it, never from a request's Host header. Unset: there is no password-reset page.
GATEWAY_PUBLIC_URL = env.str("GATEWAY_PUBLIC_URL", default="").rstrip("/")

# Login throttling (django-axes) on /accounts/login/ and /admin/login/: after AXES_FAILURE_LIMIT
# failures a username is locked out from that client address for AXES_COOLOFF_TIME. Attempts are
# kept in the database, so every worker process sees them.
INSTALLED_APPS += ["axes"]
MIDDLEWARE += ["axes.middleware.AxesMiddleware"]  # last, as django-axes requires
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = _positive("LOGIN_FAILURE_LIMIT", env.int("LOGIN_FAILURE_LIMIT", default=5))
AXES_COOLOFF_TIME = timedelta(
    minutes=_positive("LOGIN_LOCKOUT_MINUTES", env.float("LOGIN_LOCKOUT_MINUTES", default=15.0))
)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# The client address is the connection's: a forwarded-for header is whatever the client wrote.
AXES_IPWARE_META_PRECEDENCE_ORDER = ("REMOTE_ADDR",)
