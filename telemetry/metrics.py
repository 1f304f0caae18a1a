"""The gateway's own Prometheus metrics.

Labels never carry user, key or request ids, so their cardinality stays bounded; a model label
is a model the gateway knows of (see `model_label`) or "other", whatever names callers send.
With PROMETHEUS_MULTIPROC_DIR set, prometheus_client aggregates across worker processes.
"""

import logging
import time
from collections.abc import Callable, Iterable
from functools import lru_cache

from prometheus_client import Counter, Gauge, Histogram

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

HTTP_REQUESTS = Counter("http_requests", "HTTP requests served", ["method", "path", "status"])
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds", "Time to produce the response", ["method", "path"], buckets=LATENCY_BUCKETS
)
# Bodies from a few bytes to the default 10 MiB request cap and 50 MiB response cap.
SIZE_BUCKETS = tuple(4**exponent for exponent in range(3, 14))  # 64 B ... 64 MiB
HTTP_REQUEST_SIZE = Histogram("http_request_size_bytes", "Request body size", ["method", "path"], buckets=SIZE_BUCKETS)
HTTP_RESPONSE_SIZE = Histogram(
    "http_response_size_bytes", "Response body size (a stream's once it ends)", ["method", "path"], buckets=SIZE_BUCKETS
)
PROVIDER_REQUESTS = Counter(
    "provider_requests", "Calls to upstream providers", ["provider", "model", "operation", "status"]
)
PROVIDER_REQUEST_DURATION = Histogram(
    "provider_request_duration_seconds",
    "Upstream latency until the response (or the whole stream) ended",
    ["provider", "model", "operation"],
    buckets=LATENCY_BUCKETS,
)
PROVIDER_TOKENS = Counter("provider_tokens", "Tokens used", ["provider", "model", "type"])
PROVIDER_STREAM_TTFB = Histogram(
    "provider_stream_ttfb_seconds", "Upstream time to first streamed byte", ["provider"], buckets=LATENCY_BUCKETS
)
PROVIDER_STREAM_CHUNKS = Counter("provider_stream_chunks", "Streamed chunks relayed", ["provider"])
PROVIDER_STREAM_DURATION = Histogram(
    "provider_stream_duration_seconds",
    "A stream's whole duration, until its last chunk",
    ["provider", "model"],
    buckets=LATENCY_BUCKETS,
)

TELEMETRY_RECORDS_DROPPED = Counter(
    "telemetry_records_dropped", "Request records dropped because the local buffer was full", ["reason"]
)
TELEMETRY_HANDOFF_BACKLOG = Gauge(
    "telemetry_handoff_backlog",
    "Records waiting in the web process to be handed to the queue",
    multiprocess_mode="livesum",
)


OTHER_MODEL = "other"
# Admin-defined models (routes, their upstream models and deployments, price overrides) are
# re-read this often, as routes are; the price catalog ships with the code and is read once.
_KNOWN_MODELS_TTL_SECONDS = 30.0
_admin_models: frozenset[str] = frozenset()
_admin_models_loaded_at = float("-inf")


@lru_cache(maxsize=1)
def _catalog_models() -> dict[str, str]:
    """genai-prices' model ids and the exact names its models answer to, by lower-cased name."""
    from genai_prices import types
    from genai_prices.data_snapshot import get_snapshot

    names: dict[str, str] = {}

    def exact_names(match):
        if isinstance(match, types.ClauseEquals):
            yield match.equals
        elif isinstance(match, types.ClauseOr):
            for clause in match.or_:
                yield from exact_names(clause)

    for provider in get_snapshot().providers:
        for model in provider.models:
            for name in (model.id, *exact_names(model.match)):
                names.setdefault(name.lower(), name.lower())
    return names


# Other apps name the models they configure (the proxy's routes) without telemetry importing them.
_model_name_sources: list[Callable[[], Iterable[str]]] = []


def register_model_names(source: Callable[[], Iterable[str]]) -> None:
    """Count the models `source()` names as known, re-read with the admin's own (price overrides)."""
    _model_name_sources.append(source)


def _load_admin_models() -> frozenset[str]:
    from telemetry.models import PriceOverride

    names = set(PriceOverride.objects.values_list("model", flat=True))
    for source in _model_name_sources:
        names.update(source())
    names.discard("")
    return frozenset(names)


def _refresh_admin_models() -> None:
    global _admin_models, _admin_models_loaded_at
    if time.monotonic() - _admin_models_loaded_at < _KNOWN_MODELS_TTL_SECONDS:
        return
    try:
        names = _load_admin_models()
    except Exception:  # metrics must never cost a request its record; retried after the TTL
        logger.warning(
            "metrics: admin models could not be read; unknown models count as %r", OTHER_MODEL, exc_info=True
        )
        names = _admin_models
    _admin_models_loaded_at = time.monotonic()
    if names != _admin_models:
        _admin_models = names
        _label_of.cache_clear()


def forget_known_models() -> None:
    """Re-read admin-defined models at the next label lookup."""
    global _admin_models_loaded_at
    _admin_models_loaded_at = float("-inf")


# Bounded: a flood of made-up names evicts old entries rather than growing the process.
@lru_cache(maxsize=4096)
def _label_of(model: str) -> str:
    if model in _admin_models:
        return model
    if known := _catalog_models().get(model.lower()):
        return known
    # "openai/gpt-4o" routes by its prefix to the model after it.
    _, slash, rest = model.partition("/")
    return _label_of(rest) if slash and rest else OTHER_MODEL


def model_label(model: str) -> str:
    """The model's name when the gateway knows it (genai-prices' catalog, admin model routes and
    their upstream models or deployments, price overrides), otherwise "other"."""
    if not model:
        return OTHER_MODEL
    _refresh_admin_models()
    return _label_of(model)


@lru_cache(maxsize=8192)
def _child(metric, *labels):
    # `.labels()` validates on every call; label values here are bounded, so children are looked up once.
    return metric.labels(*labels)


def observe_request(document: dict) -> None:
    """Provider metrics from a finished request's document (run by the handoff thread, not the request)."""
    attributes = document["attributes"]
    provider = attributes.get("provider")
    if not provider:
        return
    metadata = attributes["metadata"]
    model = model_label(attributes.get("model") or "")
    operation = metadata.get("path", "").rsplit("/v1/", 1)[-1] or "unknown"
    _child(PROVIDER_REQUESTS, provider, model, operation, metadata.get("status", "unknown")).inc()
    if metadata.get("provider_latency") is not None:
        # A stream's upstream call lasts until its last chunk, which is when the request ends.
        upstream_ms = metadata.get("latency") if metadata.get("stream") else metadata["provider_latency"]
        _child(PROVIDER_REQUEST_DURATION, provider, model, operation).observe((upstream_ms or 0) / 1000.0)
    tokens = metadata.get("tokens") or {}
    if tokens.get("input"):
        _child(PROVIDER_TOKENS, provider, model, "input").inc(tokens["input"])
    if tokens.get("output"):
        _child(PROVIDER_TOKENS, provider, model, "output").inc(tokens["output"])
    if metadata.get("stream"):
        if metadata.get("provider_latency") is not None:
            _child(PROVIDER_STREAM_TTFB, provider).observe(metadata["provider_latency"] / 1000.0)
            _child(PROVIDER_STREAM_DURATION, provider, model).observe((metadata.get("latency") or 0) / 1000.0)
        response = attributes.get("response")
        streamed = response.get("streamed_data") if isinstance(response, dict) else None
        if streamed:
            _child(PROVIDER_STREAM_CHUNKS, provider).inc(len(streamed))


# Export, observed in the Celery workers. Labels: the exporter's name (a handful) and a fixed set of kinds.
EXPORT_LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
TELEMETRY_EXPORT_RECORDS = Counter(
    "telemetry_export_records", "Records handled by an exporter", ["exporter", "outcome"]
)  # outcome: exported
TELEMETRY_EXPORT_FAILURES = Counter(
    "telemetry_export_failures", "Records an export attempt did not store", ["exporter", "kind"]
)  # kind: transient (retried) | permanent (dead-lettered) | configuration (retried)
TELEMETRY_DEAD_LETTERS = Counter(
    "telemetry_dead_letters", "Records an exporter refused for good, kept as dead letters", ["exporter"]
)
TELEMETRY_EXPORT_LAG = Histogram(
    "telemetry_export_lag_seconds",
    "From a record's timestamp to its successful export",
    ["exporter"],
    buckets=EXPORT_LAG_BUCKETS,
)
TELEMETRY_EXPORT_DURATION = Histogram(
    "telemetry_export_duration_seconds", "Time an exporter took for one batch", ["exporter"], buckets=LATENCY_BUCKETS
)
TELEMETRY_EXPORT_BACKLOG = Gauge(
    "telemetry_export_backlog",
    "Export batches waiting in an exporter's queue",
    ["queue"],
    multiprocess_mode="mostrecent",
)

TELEMETRY_JOURNAL_DROPPED = Counter(
    "telemetry_journal_dropped_records",
    "Request records the local journal could not keep",
    ["reason"],
)  # reason: journal_full (GATEWAY_JOURNAL_MAX_BYTES reached) | unreadable (a line a crash left torn)
TELEMETRY_JOURNAL_BYTES = Gauge(
    "telemetry_journal_bytes", "Bytes of request records in the local journal", multiprocess_mode="livesum"
)
