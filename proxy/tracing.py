"""W3C trace context and the request's spans: a server span per request, a client span per provider attempt.

With tracing off (no OTLP endpoint) a request only gets its ids, made here from the caller's
`traceparent`, as cheap as before tracing existed. With it on, the OpenTelemetry SDK makes the ids:
the record's trace_id and span_id are the server span's, and the traceparent sent upstream names
the attempt's client span. Spans are started on the request path and ended by the telemetry
hand-off thread once the record's document is built (so a stream's spans carry its token counts),
with the end times the request measured; the SDK's batch processor exports them from its own thread.
"""

from __future__ import annotations

import re
import secrets
import time

from gateway_project import tracer as process_tracer

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

# gen_ai.system values of the GenAI semantic conventions, where the gateway's provider name differs.
_GEN_AI_SYSTEMS = {"azure": "az.ai.openai", "mistral": "mistral_ai", "gemini": "gcp.gemini"}
_GEN_AI_OPERATIONS = {
    "chat/completions": "chat",
    "messages": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "responses": "generate_content",
}


def trace_context(traceparent: str | None) -> tuple[str, str, str]:
    """(trace id, this request's span id, the traceparent to send upstream), without the SDK."""
    match = _TRACEPARENT.match((traceparent or "").strip().lower())
    if match and match.group(2) != "0" * 32 and match.group(3) != "0" * 16:
        trace_id, flags = match.group(2), match.group(4)
    else:
        trace_id, flags = secrets.token_hex(16), "01"
    span_id = secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-{flags}"


def request_started(record, request) -> str:
    """Give the record its trace ids (and, when sampled, its server span); the traceparent for upstream."""
    tracer = process_tracer.tracer()
    if tracer is None:
        record.trace_id, record.span_id, upstream = trace_context(request.headers.get("traceparent"))
        return upstream
    trace = RequestTrace(tracer, record, request)
    context = trace.server.get_span_context()
    record.trace_id, record.span_id = f"{context.trace_id:032x}", f"{context.span_id:016x}"
    if context.trace_flags.sampled:
        record.trace = trace
        return _traceparent(context)
    # Not sampled: no spans to end or export; upstream gets a span id of its own, unsampled.
    return f"00-{record.trace_id}-{secrets.token_hex(8)}-00"


def attempt_started(record, *, provider: str, method: str, url: str) -> str | None:
    """Start the client span of one provider attempt; the traceparent naming it, or None when untraced."""
    trace = record.trace
    return trace.attempt_started(record, provider=provider, method=method, url=url) if trace is not None else None


def attempt_answered(record, status: int) -> None:
    """The provider's status line arrived for the attempt in progress."""
    if record.trace is not None:
        record.trace.attempts[-1].status = status


def attempt_ended(record, error: str | None = None) -> None:
    """The attempt in progress is over: its body was read, or it failed with `error`."""
    trace = record.trace
    if trace is not None and trace.attempts:
        attempt = trace.attempts[-1]
        if attempt.ended_ns is None:
            attempt.ended_ns = time.time_ns()
        if error is not None:
            attempt.error = error


def _traceparent(context) -> str:
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


class _Attempt:
    __slots__ = ("ended_ns", "error", "span", "status")

    def __init__(self, span):
        self.span = span
        self.status: int | None = None
        self.error: str | None = None
        self.ended_ns: int | None = None


class RequestTrace:
    """A sampled request's spans, held by its record until the hand-off thread ends them."""

    __slots__ = ("attempts", "server", "server_context", "tracer")

    def __init__(self, tracer, record, request):
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.tracer = tracer
        parent = None
        if "traceparent" in request.headers:
            carrier = {"traceparent": request.headers["traceparent"]}
            if "tracestate" in request.headers:
                carrier["tracestate"] = request.headers["tracestate"]
            parent = TraceContextTextMapPropagator().extract(carrier)
        match = request.resolver_match
        route = "/" + match.route if match is not None and match.route else request.path
        self.server = tracer.start_span(
            f"{request.method} {route}",
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={"http.method": request.method, "http.route": route, "http.request_id": record.id},
        )
        self.server_context = trace.set_span_in_context(self.server) if self.server.is_recording() else None
        self.attempts: list[_Attempt] = []

    def attempt_started(self, record, *, provider: str, method: str, url: str) -> str:
        from opentelemetry.trace import SpanKind

        now = time.time_ns()
        if self.attempts and self.attempts[-1].ended_ns is None:
            self.attempts[-1].ended_ns = now  # the attempt before this one ended when this one began
        model = record.upstream_model or record.model or ""
        operation = record.path.rsplit("/v1/", 1)[-1]
        attributes = {
            "provider.name": provider,
            "provider.model": model,
            "gen_ai.system": _GEN_AI_SYSTEMS.get(provider, provider),
            "gen_ai.request.model": record.model or model,
            "http.method": method,
            "http.url": url,
            "provider.attempt": len(self.attempts) + 1,
        }
        if operation in _GEN_AI_OPERATIONS:
            attributes["gen_ai.operation.name"] = _GEN_AI_OPERATIONS[operation]
        name = "provider.generate_stream" if record.stream else "provider.generate"
        span = self.tracer.start_span(
            name, context=self.server_context, kind=SpanKind.CLIENT, attributes=attributes, start_time=now
        )
        self.attempts.append(_Attempt(span))
        return _traceparent(span.get_span_context())

    def end(self, record, document: dict | None) -> None:
        """End every span with the times the request measured; `document` adds what only it knows (tokens)."""
        from opentelemetry.trace import Status, StatusCode

        server = self.server
        server_end = server.start_time + int((record.latency_ms or record.elapsed_ms()) * 1_000_000)
        metadata = document["attributes"]["metadata"] if document is not None else {}
        tokens = metadata.get("tokens") or {}
        input_tokens = tokens.get("input", record.input_tokens)
        output_tokens = tokens.get("output", record.output_tokens)
        for position, attempt in enumerate(self.attempts, start=1):
            span = attempt.span
            if attempt.status is not None:
                span.set_attribute("http.status_code", attempt.status)
            failed = attempt.error or (attempt.status is not None and attempt.status >= 400)
            if position == len(self.attempts):
                self._describe_answer(span, record, document, input_tokens, output_tokens)
                failed = failed or (record.provider_error_type and record.error_type != "provider_error")
                attempt.error = attempt.error or (record.provider_error_type if failed else None)
            if failed:
                error = attempt.error or f"http_{attempt.status}"
                span.set_attribute("error.type", error)
                span.set_status(Status(StatusCode.ERROR, error))
            span.end(end_time=min(attempt.ended_ns or server_end, server_end))
        server.set_attribute("http.status_code", record.status_code)
        if record.error_type:
            server.set_attribute("error.type", record.error_type)
        if record.status_code >= 500:
            server.set_status(Status(StatusCode.ERROR, record.error_type or f"http_{record.status_code}"))
        server.end(end_time=server_end)

    @staticmethod
    def _describe_answer(span, record, document, input_tokens, output_tokens) -> None:
        if input_tokens is not None:
            span.set_attribute("provider.input_tokens", input_tokens)
            span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
        if output_tokens is not None:
            span.set_attribute("provider.output_tokens", output_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", output_tokens)
        if record.upstream_model:
            span.set_attribute("gen_ai.response.model", record.upstream_model)
        if record.provider_request_id:
            span.set_attribute("gen_ai.response.id", record.provider_request_id)
        if record.stream:
            response = document["attributes"].get("response") if document is not None else None
            streamed = response.get("streamed_data") if isinstance(response, dict) else None
            chunks = len(streamed) if streamed is not None else len(record.stream_events or ())
            span.set_attribute("provider.chunk_count", chunks)
            if record.provider_latency_ms is not None:
                span.set_attribute("provider.ttfb_seconds", record.provider_latency_ms / 1000.0)
