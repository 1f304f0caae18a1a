"""The gateway's own Prometheus metrics.

Labels never carry user, key or request ids, so their cardinality stays bounded.
With PROMETHEUS_MULTIPROC_DIR set, prometheus_client aggregates across worker processes.
"""

from functools import lru_cache

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

HTTP_REQUESTS = Counter("http_requests", "HTTP requests served", ["method", "path", "status"])
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds", "Time to produce the response", ["method", "path"], buckets=LATENCY_BUCKETS
)
PROVIDER_REQUESTS = Counter(
    "provider_requests", "Calls to upstream providers", ["provider", "model", "operation", "status"]
)
PROVIDER_REQUEST_DURATION = Histogram(
    "provider_request_duration_seconds",
    "Upstream latency until the response (or the whole stream) ended",
    ["provider", "operation"],
    buckets=LATENCY_BUCKETS,
)
PROVIDER_TOKENS = Counter("provider_tokens", "Tokens used", ["provider", "model", "type"])
PROVIDER_STREAM_TTFB = Histogram(
    "provider_stream_ttfb_seconds", "Upstream time to first streamed byte", ["provider"], buckets=LATENCY_BUCKETS
)
PROVIDER_STREAM_CHUNKS = Counter("provider_stream_chunks", "Streamed chunks relayed", ["provider"])

TELEMETRY_RECORDS_DROPPED = Counter(
    "telemetry_records_dropped", "Request records dropped because the local buffer was full", ["reason"]
)
TELEMETRY_HANDOFF_BACKLOG = Gauge(
    "telemetry_handoff_backlog",
    "Records waiting in the web process to be handed to the queue",
    multiprocess_mode="livesum",
)


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
    model = attributes.get("model") or ""
    operation = metadata.get("path", "").rsplit("/v1/", 1)[-1] or "unknown"
    _child(PROVIDER_REQUESTS, provider, model, operation, metadata.get("status", "unknown")).inc()
    if metadata.get("provider_latency") is not None:
        # A stream's upstream call lasts until its last chunk, which is when the request ends.
        upstream_ms = metadata.get("latency") if metadata.get("stream") else metadata["provider_latency"]
        _child(PROVIDER_REQUEST_DURATION, provider, operation).observe((upstream_ms or 0) / 1000.0)
    tokens = metadata.get("tokens") or {}
    if tokens.get("input"):
        _child(PROVIDER_TOKENS, provider, model, "input").inc(tokens["input"])
    if tokens.get("output"):
        _child(PROVIDER_TOKENS, provider, model, "output").inc(tokens["output"])
    if metadata.get("stream"):
        if metadata.get("provider_latency") is not None:
            _child(PROVIDER_STREAM_TTFB, provider).observe(metadata["provider_latency"] / 1000.0)
        response = attributes.get("response")
        streamed = response.get("streamed_data") if isinstance(response, dict) else None
        if streamed:
            _child(PROVIDER_STREAM_CHUNKS, provider).inc(len(streamed))


# Export, observed in the Celery workers. Labels: the exporter's name (a handful) and a fixed set of kinds.
EXPORT_LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
TELEMETRY_EXPORT_RECORDS = Counter(
    "telemetry_export_records", "Records handled by an exporter", ["exporter", "outcome"]
)  # outcome: exported | discarded (the exporter was disabled)
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
