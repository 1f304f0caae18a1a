"""Traces exported over OTLP/HTTP to a real receiver, decoded with opentelemetry-proto.

The live gateway runs in this process, so each test points its tracer at the receiver with the
sampler it needs; without an endpoint (the rest of the suite) tracing stays off.
"""

import httpx
import pytest

from gateway_project import tracer
from tests.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.django_db(transaction=True)

SERVER, CLIENT = 2, 3  # the OTLP SpanKind values
STATUS_ERROR = 2
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def receiver():
    receiver = OtlpReceiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def traced(receiver, settings):
    """Point the gateway's tracer at the receiver with the given sampler."""

    def configure(sampler: str, rate: float = 1.0):
        tracer.shutdown()
        settings.TRACING_ENABLED = True
        settings.OTEL_EXPORTER_OTLP_ENDPOINT = receiver.url
        settings.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = ""
        settings.OTEL_EXPORTER_OTLP_PROTOCOL = "http/protobuf"
        settings.OTEL_TRACES_SAMPLER = sampler
        settings.OTEL_TRACES_SAMPLER_ARG = rate
        settings.OTEL_SERVICE_NAME = "tollgate-under-test"
        tracer.configure()
        receiver.clear()
        return receiver

    yield configure
    tracer.shutdown()
    settings.TRACING_ENABLED = False
    tracer.configure()


def chat(caller, *, model="gpt-4o-mini", traceparent=None, stream=False):
    headers = {"authorization": f"Bearer {caller.key}"}
    if traceparent:
        headers["traceparent"] = traceparent
    body = {"model": model, "messages": [{"role": "user", "content": "trace me"}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    response = httpx.post(caller.openai_base_url + "/chat/completions", json=body, headers=headers, timeout=30)
    response.read()
    return response


def finished(published, response) -> dict:
    """The request's record, once the hand-off has built it (and so ended its spans), with spans exported."""
    attributes = published.wait_for(response.headers["x-request-id"])["attributes"]
    assert tracer.force_flush()
    return attributes


def upstream_traceparent(provider_server) -> list[str]:
    return provider_server.requests[-1].headers["traceparent"].split("-")


def test_a_callers_sampled_trace_runs_through_server_span_provider_span_and_record(
    caller, traced, published, provider_server
):
    # Probability 0: only the caller's sampled traceparent gets this request traced.
    receiver = traced("probability", 0.0)
    response = chat(caller, traceparent=f"00-{CALLER_TRACE}-{CALLER_SPAN}-01")
    assert response.status_code == 200
    record = finished(published, response)

    spans = receiver.wait_for_spans(CALLER_TRACE, 2)
    server = next(span for span in spans if span.kind == SERVER)
    provider = next(span for span in spans if span.kind == CLIENT)
    assert record["trace_id"] == server.trace_id == provider.trace_id == CALLER_TRACE
    assert record["span_id"] == server.span_id
    assert server.parent_span_id == CALLER_SPAN
    assert provider.parent_span_id == server.span_id
    assert upstream_traceparent(provider_server) == ["00", CALLER_TRACE, provider.span_id, "01"]

    assert server.name == "POST /v1/chat/completions"
    assert server.attributes == {
        "http.method": "POST",
        "http.route": "/v1/chat/completions",
        "http.request_id": response.headers["x-request-id"],
        "http.status_code": 200,
    }
    tokens = record["metadata"]["tokens"]
    assert tokens["input"] > 0 and tokens["output"] == 20
    assert provider.name == "provider.generate"
    assert provider.attributes == {
        "provider.name": "openai",
        "provider.model": "gpt-4o-mini",
        "provider.attempt": 1,
        "provider.input_tokens": tokens["input"],
        "provider.output_tokens": tokens["output"],
        "gen_ai.system": "openai",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": tokens["input"],
        "gen_ai.usage.output_tokens": tokens["output"],
        "http.method": "POST",
        "http.status_code": 200,
    }
    assert server.start_ns <= provider.start_ns < provider.end_ns <= server.end_ns
    assert server.resource["service.name"] == "tollgate-under-test"


def test_a_stream_span_carries_its_chunks_time_to_first_byte_and_tokens(caller, traced, published):
    receiver = traced("always")
    response = chat(caller, stream=True)
    assert response.status_code == 200
    record = finished(published, response)

    spans = receiver.wait_for_spans(record["trace_id"], 2)
    provider = next(span for span in spans if span.kind == CLIENT)
    assert provider.name == "provider.generate_stream"
    assert provider.attributes["provider.chunk_count"] == len(record["response"]["streamed_data"]) > 20
    ttfb = provider.attributes["provider.ttfb_seconds"]
    assert 0 < ttfb == pytest.approx(record["metadata"]["provider_latency"] / 1000, abs=0.001)
    assert provider.attributes["gen_ai.usage.output_tokens"] == record["metadata"]["tokens"]["output"] == 20
    assert provider.attributes["gen_ai.usage.input_tokens"] == record["metadata"]["tokens"]["input"]


def test_always_traces_a_request_without_a_traceparent(caller, traced, published, provider_server):
    receiver = traced("always")
    response = chat(caller)
    record = finished(published, response)
    spans = receiver.wait_for_spans(record["trace_id"], 2)
    server = next(span for span in spans if span.kind == SERVER)
    assert server.span_id == record["span_id"] and server.parent_span_id == ""
    _version, trace_id, span_id, flags = upstream_traceparent(provider_server)
    assert (trace_id, flags) == (record["trace_id"], "01")
    assert span_id == next(span.span_id for span in spans if span.kind == CLIENT)


def test_never_exports_nothing_but_the_record_keeps_its_ids_and_a_sampled_caller_is_honoured(
    caller, traced, published, provider_server
):
    receiver = traced("never")
    response = chat(caller)
    record = finished(published, response)
    assert len(record["trace_id"]) == 32 and len(record["span_id"]) == 16
    _version, trace_id, _span_id, flags = upstream_traceparent(provider_server)
    assert (trace_id, flags) == (record["trace_id"], "00")

    # Parent-based: a caller who sampled its trace gets it, even here. Its spans arriving shows
    # the exporter works, so the first request's absence is no accident of timing.
    followed = chat(caller, traceparent=f"00-{CALLER_TRACE}-{CALLER_SPAN}-01")
    finished(published, followed)
    assert len(receiver.wait_for_spans(CALLER_TRACE, 2)) == 2
    assert receiver.spans_of(record["trace_id"]) == []
    assert {span.trace_id for span in receiver.spans} == {CALLER_TRACE}


def test_a_callers_unsampled_traceparent_is_honoured_too(caller, traced, published, provider_server):
    receiver = traced("always")
    response = chat(caller, traceparent=f"00-{CALLER_TRACE}-{CALLER_SPAN}-00")
    record = finished(published, response)
    assert record["trace_id"] == CALLER_TRACE
    assert upstream_traceparent(provider_server)[3] == "00"
    sampled = finished(published, chat(caller))
    assert len(receiver.wait_for_spans(sampled["trace_id"], 2)) == 2
    assert receiver.spans_of(CALLER_TRACE) == []


def test_a_failed_provider_call_is_an_error_span(caller, traced, published):
    receiver = traced("always")
    response = chat(caller, model="status-503")
    assert response.status_code == 503
    record = finished(published, response)
    spans = receiver.wait_for_spans(record["trace_id"], 2)
    server = next(span for span in spans if span.kind == SERVER)
    provider = next(span for span in spans if span.kind == CLIENT)
    assert server.attributes["http.status_code"] == 503 and server.status_code == STATUS_ERROR
    assert provider.attributes["http.status_code"] == 503 and provider.status_code == STATUS_ERROR
    assert provider.attributes["error.type"] == record["metadata"]["provider_error_type"]


def test_a_request_refused_before_any_provider_call_has_its_server_span_only(caller, traced, published):
    receiver = traced("always")
    response = httpx.post(
        caller.openai_base_url + "/chat/completions",
        content=b"{not json",
        headers={"authorization": f"Bearer {caller.key}", "content-type": "application/json"},
    )
    assert response.status_code == 400
    record = finished(published, response)
    [server] = receiver.wait_for_spans(record["trace_id"], 1)
    assert server.kind == SERVER and server.attributes["http.status_code"] == 400
    assert server.attributes["error.type"] == "invalid_json"
