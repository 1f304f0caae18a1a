"""W3C trace context and the request's spans: a server span per request, a client span per provider attempt.

With tracing off (no OTLP endpoint) a request only gets its ids, made here from the caller's
`traceparent`, as cheap as before tracing existed. With it on, the OpenTelemetry SDK makes the ids:
the record's trace_id and span_id are the server span's, and the traceparent sent upstream names
the attempt's client span. The request path only decides sampling, makes ids and notes times; the
telemetry hand-off thread emits the spans once the record's document is built (so a stream's spans
carry its token counts), and the SDK's batch processor exports them from its own thread.
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
    """Give the record its trace ids (and, when sampled, its spans to come); the traceparent for upstream."""
    sink = process_tracer.tracer()
    if sink is None:
        record.trace_id, record.span_id, upstream = trace_context(request.headers.get("traceparent"))
        return upstream
    parent = _parent(request.headers.get("traceparent"), request.headers.get("tracestate"))
    trace_id = parent.trace_id if parent is not None else sink.new_trace_id()
    span_id = sink.new_span_id()
    match = request.resolver_match
    route = "/" + match.route if match is not None and match.route else request.path
    name = f"{request.method} {route}"
    record.trace_id, record.span_id = f"{trace_id:032x}", f"{span_id:016x}"
    if not _sampled(sink, parent, trace_id, name):
        # No spans to record, and upstream is told so.
        return f"00-{record.trace_id}-{record.span_id}-00"
    record.trace = RequestTrace(sink, parent, trace_id, span_id, name)
    record.trace.attributes.update({"http.method": request.method, "http.route": route, "http.request_id": record.id})
    return f"00-{record.trace_id}-{record.span_id}-01"


def attempt_started(record, *, provider: str, method: str) -> str | None:
    """Start the client span of one provider attempt; the traceparent naming it, or None when untraced."""
    trace = record.trace
    return trace.attempt_started(record, provider=provider, method=method) if trace is not None else None


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


def _parent(traceparent: str | None, tracestate: str | None):
    """The caller's span context, or None when it sent no valid traceparent."""
    if not traceparent:
        return None
    match = _TRACEPARENT.match(traceparent.strip().lower())
    if not match or match.group(1) == "ff" or match.group(2) == "0" * 32 or match.group(3) == "0" * 16:
        return None
    from opentelemetry.trace import SpanContext, TraceFlags, TraceState

    return SpanContext(
        int(match.group(2), 16),
        int(match.group(3), 16),
        is_remote=True,
        trace_flags=TraceFlags(int(match.group(4), 16)),
        trace_state=TraceState.from_header([tracestate]) if tracestate else None,
    )


def _sampled(sink, parent, trace_id: int, name: str) -> bool:
    from opentelemetry import trace

    context = trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent is not None else None
    return sink.sampler.should_sample(context, trace_id, name, trace.SpanKind.SERVER).decision.is_sampled()


class _Attempt:
    __slots__ = ("attributes", "ended_ns", "error", "name", "span_id", "started_ns", "status")

    def __init__(self, name: str, span_id: int, attributes: dict):
        self.name = name
        self.span_id = span_id
        self.attributes = attributes
        self.started_ns = time.time_ns()
        self.status: int | None = None
        self.error: str | None = None
        self.ended_ns: int | None = None


class RequestTrace:
    """A sampled request's spans in the making, held by its record until the hand-off thread emits them."""

    __slots__ = ("attempts", "attributes", "name", "parent", "sink", "span_id", "started_ns", "trace_id")

    def __init__(self, sink, parent, trace_id: int, span_id: int, name: str):
        self.sink = sink
        self.parent = parent
        self.trace_id = trace_id
        self.span_id = span_id
        self.name = name
        self.started_ns = time.time_ns()
        self.attributes: dict = {}
        self.attempts: list[_Attempt] = []

    def attempt_started(self, record, *, provider: str, method: str) -> str:
        if self.attempts and self.attempts[-1].ended_ns is None:
            self.attempts[-1].ended_ns = time.time_ns()  # the attempt before this one ended when this one began
        model = record.upstream_model or record.model or ""
        attributes = {
            "provider.name": provider,
            "provider.model": model,
            "provider.attempt": len(self.attempts) + 1,
            "gen_ai.system": _GEN_AI_SYSTEMS.get(provider, provider),
            "gen_ai.request.model": record.model or model,
            "http.method": method,
        }
        operation = _GEN_AI_OPERATIONS.get(record.path.rsplit("/v1/", 1)[-1])
        if operation is not None:
            attributes["gen_ai.operation.name"] = operation
        name = "provider.generate_stream" if record.stream else "provider.generate"
        attempt = _Attempt(name, self.sink.new_span_id(), attributes)
        self.attempts.append(attempt)
        return f"00-{self.trace_id:032x}-{attempt.span_id:016x}-01"

    def end(self, record, document: dict | None) -> None:
        """Emit every span with the times the request measured; `document` adds what only it knows (tokens)."""
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        sink = self.sink
        flags = TraceFlags(TraceFlags.SAMPLED)
        state = self.parent.trace_state if self.parent is not None else None
        server = SpanContext(self.trace_id, self.span_id, is_remote=False, trace_flags=flags, trace_state=state)
        server_end = self.started_ns + int((record.latency_ms or record.elapsed_ms()) * 1_000_000)
        metadata = document["attributes"]["metadata"] if document is not None else {}
        tokens = metadata.get("tokens") or {}
        for position, attempt in enumerate(self.attempts, start=1):
            attributes = attempt.attributes
            if attempt.status is not None:
                attributes["http.status_code"] = attempt.status
            failed = attempt.error is not None or (attempt.status is not None and attempt.status >= 400)
            if position == len(self.attempts):
                _describe_answer(attributes, record, document, tokens)
                if record.provider_error_type and record.error_type != "provider_error":
                    failed = True  # the answer itself failed: cut short, too large, unreadable
                    attempt.error = attempt.error or record.provider_error_type
            status = Status(StatusCode.UNSET)
            if failed:
                error = attempt.error or record.provider_error_type or f"http_{attempt.status}"
                attributes["error.type"] = error
                status = Status(StatusCode.ERROR, error)
            context = SpanContext(self.trace_id, attempt.span_id, is_remote=False, trace_flags=flags, trace_state=state)
            sink.emit(
                ReadableSpan(
                    attempt.name,
                    context=context,
                    parent=server,
                    resource=sink.resource,
                    attributes=attributes,
                    kind=SpanKind.CLIENT,
                    status=status,
                    start_time=attempt.started_ns,
                    end_time=min(attempt.ended_ns or server_end, server_end),
                    instrumentation_scope=sink.scope,
                )
            )
        attributes = self.attributes
        attributes["http.status_code"] = record.status_code
        status = Status(StatusCode.UNSET)
        if record.error_type:
            attributes["error.type"] = record.error_type
        if record.status_code >= 500:
            status = Status(StatusCode.ERROR, record.error_type or f"http_{record.status_code}")
        sink.emit(
            ReadableSpan(
                self.name,
                context=server,
                parent=self.parent,
                resource=sink.resource,
                attributes=attributes,
                kind=SpanKind.SERVER,
                status=status,
                start_time=self.started_ns,
                end_time=server_end,
                instrumentation_scope=sink.scope,
            )
        )


def _describe_answer(attributes: dict, record, document: dict | None, tokens: dict) -> None:
    input_tokens = tokens.get("input", record.input_tokens)
    output_tokens = tokens.get("output", record.output_tokens)
    if input_tokens is not None:
        attributes["provider.input_tokens"] = attributes["gen_ai.usage.input_tokens"] = input_tokens
    if output_tokens is not None:
        attributes["provider.output_tokens"] = attributes["gen_ai.usage.output_tokens"] = output_tokens
    if record.upstream_model:
        attributes["gen_ai.response.model"] = record.upstream_model
    if record.stream:
        response = document["attributes"].get("response") if document is not None else None
        streamed = response.get("streamed_data") if isinstance(response, dict) else None
        attributes["provider.chunk_count"] = len(streamed) if streamed is not None else len(record.stream_events or ())
        if record.provider_latency_ms is not None:
            attributes["provider.ttfb_seconds"] = record.provider_latency_ms / 1000.0
