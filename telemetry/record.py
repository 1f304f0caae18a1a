"""The request record: one per request, built during the request, finalised off the hot path.

The proxy fills a `RequestRecord` with raw bytes and timings only. `to_document()`
(run by the handoff thread, never by the request) parses, prices and redacts it
into the `ai_gateway_request_log` OpenTelemetry-format document.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from django.conf import settings

from telemetry import pricing, storable

SERVICE_NAME = "tollgate"
SERVICE_VERSION = "0.1.0"
LOG_NAME = "ai_gateway_request_log"
_RAW_TEXT_LIMIT = 4096

# Request keys whose values are message content; dropped under metadata-only logging.
_CONTENT_KEYS = frozenset({"messages", "input", "prompt", "system", "instructions", "tools", "functions"})
# Where text is, in requests and (accumulated) responses of both protocols; used only to estimate usage.
_PROMPT_KEYS = ("messages", "prompt", "input", "system", "instructions")
_TEXT_KEYS = ("content", "text", "arguments", "partial_json", "thinking", "refusal", "delta", "function", "tool_calls")
_ANSWER_KEYS = ("choices", "content", "output")
# A common rule of thumb for English text with GPT and Claude tokenizers.
_CHARS_PER_TOKEN = 4


def new_record_id() -> str:
    """128 random bits as 32 hex digits, like a UUID4's hex but without building a UUID object."""
    return os.urandom(16).hex()


@dataclass(slots=True)
class RequestRecord:
    path: str
    method: str
    id: str = field(default_factory=new_record_id)
    started_at: float = field(default_factory=time.time)
    started_perf: float = field(default_factory=time.perf_counter)
    # Who: filled once the gateway key has been checked.
    org_id: str | None = None
    project_id: str | None = None
    project_name: str | None = None
    user_id: str | None = None
    experiment_id: str | None = None
    thread_id: str | None = None
    content_logging: str = "full"
    gateway_key_id: int | None = None  # the key's database id, never the key
    trace_id: str | None = None
    span_id: str | None = None
    # A sampled request's spans (proxy.tracing.RequestTrace), ended by the hand-off once the document is
    # built; only in the process that served the request, never journaled.
    trace: object | None = field(default=None, repr=False, compare=False, metadata={"journaled": False})
    # What: the routed provider and the model the client asked for.
    provider: str | None = None
    model: str | None = None
    upstream_model: str | None = None
    stream: bool = False
    request_body: bytes = b""
    # Set when `request_body` is not the whole body (a rejected one keeps a prefix at most).
    request_size: int | None = None
    request_json: dict | None = None
    response_body: bytes | None = None
    response_json: dict | None = None
    stream_dialect: str | None = None
    stream_events: list[bytes] | None = None
    stream_captured_bytes: int = 0
    stream_truncated: bool = False
    # Decoded bytes read from the provider's stream, so an estimate can allow for a truncated capture.
    upstream_bytes: int = 0
    client_disconnected: bool = False
    response_size: int = 0
    # Outcome
    status_code: int = 0
    provider_status_code: int = 0
    error_type: str | None = None
    provider_error_type: str | None = None
    provider_request_id: str | None = None
    # What went wrong, in words, where the gateway itself ended the request or stream.
    error_message: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    # The provider's own usage object, where the client was sent another shape (a translated response).
    usage: dict | None = None
    ttfb_ms: float | None = None
    latency_ms: float | None = None
    provider_latency_ms: float | None = None
    # The limit or budget that refused the request ("project_budget", "key_rpm"), if one did.
    limit_refused: str | None = None

    # Routing: the group and deployment that answered (the final attempt), and every attempt made.
    model_group: str | None = None
    deployment: str | None = None
    fallback_used: bool = False
    attempts: list[dict] = field(default_factory=list)

    # --- Filled by the proxy, step by step --------------------------------------

    def authenticated(self, grant) -> None:
        """The gateway key checked (an `auth.KeyGrant`): the org is known even if attribution fails."""
        self.org_id = grant.org_slug
        self.gateway_key_id = grant.key_id

    def attribute(self, attribution) -> None:
        """Who the request is for (an `auth.Attribution`): user, experiment, thread, project, logging level."""
        self.user_id = attribution.user_id
        self.experiment_id = attribution.experiment_id
        self.thread_id = attribution.thread_id
        project = attribution.project
        if project is not None:
            self.project_id = project.slug
            self.project_name = project.name
        self.content_logging = attribution.content_logging

    def body_unread(self, size: int, prefix: bytes = b"") -> None:
        """The body was refused before it was read whole: its size and, unless metadata only, its start."""
        self.request_size = size
        if prefix and self.content_logging != "metadata":
            self.request_body = prefix

    def routed(self, route) -> None:
        """The provider and the model name it is sent (a `routing.Route` or the router's first `Target`)."""
        self.provider = route.provider.name
        self.upstream_model = route.upstream_model or None

    def attempt_started(
        self, *, provider: str, upstream_model: str, deployment: str | None, model_group: str | None, fallback: bool
    ) -> None:
        """A call to one upstream begins: from here the provider fields describe this attempt, not an earlier one."""
        self.provider = provider
        self.upstream_model = upstream_model or None
        self.deployment = deployment
        self.model_group = model_group
        self.fallback_used = self.fallback_used or fallback
        self.provider_status_code = 0
        self.provider_request_id = None
        self.provider_latency_ms = None
        self.provider_error_type = None
        self.error_type = None
        self.error_message = None
        self.response_body = None
        self.response_json = None
        self.usage = None

    def attempt_ended(self, *, latency_ms: float, status: int | None = None, error: str | None = None) -> None:
        """The attempt's outcome: the status the client would have been sent (None: no answer) and why it failed."""
        self.attempts.append(
            {
                "deployment": self.deployment,
                "provider": self.provider,
                "status": status,
                "error": error,
                "latency_ms": round(latency_ms),
            }
        )

    def attempt_stream_ended(self, *, error: str | None, latency_ms: float) -> None:
        """The stream the last attempt returned is over: how it ended, and how long it took in all."""
        if self.attempts:
            self.attempts[-1]["error"] = error
            self.attempts[-1]["latency_ms"] = round(latency_ms)

    def upstream_answered(self, status: int, request_id: str | None, latency_ms: float) -> None:
        """The provider's status line and headers arrived."""
        self.provider_status_code = status
        self.provider_request_id = request_id
        self.provider_latency_ms = latency_ms

    def upstream_read(self, latency_ms: float) -> None:
        """The provider's whole (non-streamed) body arrived."""
        self.provider_latency_ms = latency_ms

    def upstream_failed(self, kind: str, message: str | None = None, latency_ms: float | None = None) -> None:
        """The gateway got no usable answer: `kind` is the provider error type the log shows."""
        self.provider_error_type = kind
        if message is not None:
            self.error_message = message
        if latency_ms is not None:
            self.provider_latency_ms = latency_ms

    def upstream_refused(self, provider_error_type: str) -> None:
        """The provider answered with an error of its own (4xx/5xx), passed on to the client."""
        self.provider_error_type = provider_error_type
        self.error_type = "provider_error"

    def answered(self, *, json: dict | None = None, body: bytes | None = None) -> None:
        """What the client was sent, parsed where the gateway parsed it anyway."""
        if json is not None:
            self.response_json = json
        if body is not None:
            self.response_body = body

    def rejected(self, error_type: str, body: bytes) -> None:
        """The gateway answered with an error of its own."""
        self.error_type = error_type
        self.response_body = body

    def limit_refused_by(self, limit: str) -> None:
        """A rate limit or budget refused the request (a 429 from the gateway itself)."""
        self.limit_refused = limit

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started_perf) * 1000.0

    def capture_stream_event(self, event: bytes) -> None:
        """Keep a streamed event for the log, up to GATEWAY_STREAM_CAPTURE_MAX_BYTES."""
        if self.stream_truncated:
            return
        size = len(event)
        if self.stream_captured_bytes + size > settings.GATEWAY_STREAM_CAPTURE_MAX_BYTES:
            self.stream_truncated = True
            return
        self.stream_captured_bytes += size
        self.stream_events.append(event)

    def mark_first_byte(self) -> None:
        if self.ttfb_ms is None:
            self.ttfb_ms = self.elapsed_ms()

    def finish(self, status_code: int) -> None:
        self.status_code = status_code
        self.latency_ms = self.elapsed_ms()
        if self.ttfb_ms is None:
            self.ttfb_ms = self.latency_ms

    # --- Off the hot path -------------------------------------------------------

    def to_document(self) -> dict:
        return self.to_encoded_document()[0]

    def to_encoded_document(self) -> tuple[dict, bytes]:
        """The storable document and its JSON, encoded once for every step after this one."""
        from telemetry.streams import accumulate_stream

        request = self.request_json if self.request_json is not None else _decode_body(self.request_body)
        streamed: list[dict] | None = None
        usage_estimated = False
        reported_usage = None
        if self.stream_events is not None:
            streamed, response, reported_usage, provider_request_id = accumulate_stream(
                self.stream_dialect, self.stream_events
            )
            self.provider_request_id = self.provider_request_id or provider_request_id
            if self.response_body is not None:  # an error body sent instead of a stream
                response = self.response_json if self.response_json is not None else _decode_body(self.response_body)
            elif self.input_tokens is None and not reported_usage and self.usage is None:
                # The stream ended before its usage (the client left, the provider cut it): bill an estimate.
                estimated = self._estimated_usage(request, response)
                if estimated is not None:
                    self.input_tokens, self.output_tokens = estimated
                    usage_estimated = True
        else:
            response = self.response_json if self.response_json is not None else _decode_body(self.response_body)
            if isinstance(response, dict):
                reported_usage = response.get("usage")
                self.provider_request_id = self.provider_request_id or _str_or_none(response.get("id"))
        usage = self._token_usage(reported_usage)
        timestamp = datetime.fromtimestamp(self.started_at, tz=UTC)
        priced_model = self.upstream_model or self.model
        cost = (
            pricing.request_cost(provider=self.provider or "", model=priced_model or "", at=timestamp, usage=usage)
            if self.provider and priced_model
            else None
        )
        failed = self.status_code >= 400 or self.error_type is not None
        provider_failed = self.provider_status_code >= 400 or self.provider_error_type is not None
        redacted = self.content_logging == "metadata"
        if redacted:
            request, response, streamed = _redact(request, response, streamed)
        if streamed is not None:
            response = response if isinstance(response, dict) else {"body": response}
            response["streamed_data"] = streamed
        document = {
            "timestamp": timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "resource": {
                "service.name": SERVICE_NAME,
                "service.version": SERVICE_VERSION,
                "deployment.environment": settings.GATEWAY_ENVIRONMENT,
            },
            "name": LOG_NAME,
            "attributes": {
                "id": self.id,
                "thread_id": self.thread_id,
                "org_id": self.org_id,
                "user_id": self.user_id,
                "project_id": self.project_id,
                "experiment_id": self.experiment_id,
                "provider": self.provider,
                "model": self.model,
                "trace_id": self.trace_id,
                "span_id": self.span_id,
                "request": request,
                "response": response,
                "metadata": {
                    "project_id": self.project_id,
                    "project_name": self.project_name,
                    "latency": _ms(self.latency_ms),
                    "ttfb": _ms(self.ttfb_ms),
                    "tokens": usage.as_metadata(),
                    "cost": cost,
                    "cost_unknown": cost is None and usage.total > 0,
                    "status": "error" if failed else "success",
                    "path": self.path,
                    "method": self.method,
                    "request_size": len(self.request_body) if self.request_size is None else self.request_size,
                    "response_size": self.response_size,
                    "provider_latency": _ms(self.provider_latency_ms),
                    "status_code": self.status_code,
                    "provider_status_code": self.provider_status_code,
                    "error_count": 1 if failed else 0,
                    "error_type": self.error_type,
                    "provider_error_count": 1 if provider_failed else 0,
                    "provider_error_type": self.provider_error_type,
                    "provider_request_id": self.provider_request_id,
                    "upstream_model": self.upstream_model,
                    "stream": self.stream,
                    "streamed_data_truncated": self.stream_truncated,
                    "client_disconnected": self.client_disconnected,
                    "content_redacted": redacted,
                    "usage_estimated": usage_estimated,
                    "error_message": self.error_message,
                    "gateway_key_id": self.gateway_key_id,
                    "limit_refused": self.limit_refused,
                    "model_group": self.model_group,
                    "deployment": self.deployment,
                    "fallback_used": self.fallback_used,
                    "attempts": self.attempts,
                },
            },
        }
        return storable.storable_encoded(document, max_bytes=settings.TELEMETRY_MAX_DOCUMENT_BYTES)

    def billed(self) -> tuple[pricing.TokenUsage, float | None]:
        """The usage and USD cost the document will record, worked out without building it (budgets settle by it)."""
        from telemetry.streams import accumulate_stream

        reported = None
        if self.stream_events is not None:
            _, response, reported, _ = accumulate_stream(self.stream_dialect, self.stream_events)
            if self.response_body is None and self.input_tokens is None and not reported and self.usage is None:
                request = self.request_json if self.request_json is not None else _decode_body(self.request_body)
                estimated = self._estimated_usage(request, response)
                if estimated is not None:
                    usage = pricing.TokenUsage(input=estimated[0], output=estimated[1])
                    return usage, self._cost(usage)
        else:
            response = self.response_json if self.response_json is not None else _decode_body(self.response_body)
            if isinstance(response, dict):
                reported = response.get("usage")
        usage = self._token_usage(reported)
        return usage, self._cost(usage)

    def _cost(self, usage: pricing.TokenUsage) -> float | None:
        priced_model = self.upstream_model or self.model
        if not (self.provider and priced_model):
            return None
        at = datetime.fromtimestamp(self.started_at, tz=UTC)
        return pricing.request_cost(provider=self.provider, model=priced_model, at=at, usage=usage)

    def _token_usage(self, reported) -> pricing.TokenUsage:
        """Counts from the provider's usage object, read as genai-prices reads it."""
        if self.usage is not None:
            reported = self.usage
        elif self.input_tokens is not None:
            return pricing.TokenUsage(input=self.input_tokens, output=self.output_tokens or 0)
        anthropic = self.stream_dialect == "anthropic" or self.path.endswith("/messages")
        return pricing.token_usage(reported, anthropic=anthropic) or pricing.TokenUsage()

    def _estimated_usage(self, request, response) -> tuple[int, int] | None:
        prompt_chars = sum(_text_chars(request.get(key)) for key in _PROMPT_KEYS) if isinstance(request, dict) else 0
        answer_chars = sum(_text_chars(response.get(key)) for key in _ANSWER_KEYS) if isinstance(response, dict) else 0
        if self.stream_truncated and self.stream_captured_bytes:
            # Only part of the stream was kept: scale up by the share of it that was.
            captured = self.stream_captured_bytes
            answer_chars = answer_chars * max(self.upstream_bytes, captured) // captured
        if not prompt_chars and not answer_chars:
            return None
        return _tokens_for(prompt_chars), _tokens_for(answer_chars)


def _text_chars(value) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_chars(item) for item in value)
    if isinstance(value, dict):
        return sum(_text_chars(value[key]) for key in _TEXT_KEYS if key in value)
    return 0


def _tokens_for(chars: int) -> int:
    return -(-chars // _CHARS_PER_TOKEN)


def _ms(value: float | None) -> int | None:
    return None if value is None else round(value)


def _str_or_none(value) -> str | None:
    return value if isinstance(value, str) else None


def _decode_body(body: bytes | None):
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return {"raw": body[:_RAW_TEXT_LIMIT].decode("utf-8", "replace")}


def _redact(request, response, streamed):
    """Metadata-only logging: keep shapes and parameters, drop what people wrote and read."""
    if isinstance(request, dict):
        request = {key: ("[redacted]" if key in _CONTENT_KEYS else value) for key, value in request.items()}
    elif request is not None:
        request = "[redacted]"
    if isinstance(response, dict):
        kept = ("id", "object", "model", "usage", "created", "type", "role", "stop_reason", "error")
        response = {key: response[key] for key in kept if key in response} | {"content": "[redacted]"}
        if "error" in response and isinstance(response["error"], dict):
            response["error"] = {k: v for k, v in response["error"].items() if k != "message"}
    elif response is not None:
        response = "[redacted]"
    if streamed is not None:
        streamed = []
    return request, response, streamed
