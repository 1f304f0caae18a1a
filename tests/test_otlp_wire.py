"""The gateway's OTLP encoder writes the bytes the SDK's own encoder would."""

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from gateway_project.otlp_wire import encode_request

RESOURCE = Resource.create({"service.name": "tollgate", "service.version": "0.1.0", "deployment.environment": "t"})
SCOPE = InstrumentationScope("tollgate.proxy", "0.1.0")
SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def span(name, span_id, *, parent=None, kind=SpanKind.CLIENT, attributes=None, status=None, state=None, scope=SCOPE):
    return ReadableSpan(
        name,
        context=SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, span_id, False, SAMPLED, state),
        parent=parent,
        resource=RESOURCE,
        attributes=attributes or {},
        kind=kind,
        status=status or Status(StatusCode.UNSET),
        start_time=1_764_590_000_000_000_000,
        end_time=1_764_590_000_123_456_789,
        instrumentation_scope=scope,
    )


def test_every_kind_of_span_and_value_encodes_as_the_sdk_does():
    caller = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, True, SAMPLED)
    server = span(
        "POST /v1/chat/completions",
        0x1A2B3C4D5E6F7A8B,
        parent=caller,
        kind=SpanKind.SERVER,
        attributes={"http.method": "POST", "http.status_code": 502, "error.type": "upstream_unreachable"},
        status=Status(StatusCode.ERROR, "upstream_unreachable"),
        state=TraceState([("vendor", "value")]),
    )
    provider = span(
        "provider.generate_stream",
        0x0102030405060708,
        parent=server.context,
        attributes={
            "provider.name": "openai",
            "provider.chunk_count": 23,
            "provider.ttfb_seconds": 0.0123,
            "gen_ai.usage.input_tokens": 0,
            "offset": -5,
            "cached": True,
            "refused": False,
            "ids": ["a", "b"],
            "text": "naïve ☃",
        },
    )
    root = span("GET /v1/models", 0xFFFFFFFFFFFFFFFF, kind=SpanKind.SERVER)
    other_scope = span("provider.list_models", 0x11, parent=root.context, scope=InstrumentationScope("other"))
    spans = [server, provider, root, other_scope]

    decoded = ExportTraceServiceRequest()
    decoded.ParseFromString(encode_request(spans))
    assert decoded == encode_spans(spans)
    assert len(decoded.resource_spans[0].scope_spans[0].spans) == 3
