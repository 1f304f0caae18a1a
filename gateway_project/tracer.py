"""The process's span pipeline, built from settings once, or None while tracing is off.

A request's spans are recorded as the OpenTelemetry SDK's ReadableSpan once the request is over
(proxy/tracing.py) and handed to a BatchSpanProcessor, whose own thread encodes and exports them
over OTLP. The SDK's live Span objects are skipped: their attribute validation under locks and the
copy made when each ends cost about 40 us per span, measured, a noticeable share of a request;
sampling, ids, the span data, batching and export are the SDK's. With no OTLP endpoint set nothing
here is imported, so a gateway without tracing pays nothing for it.
"""

from __future__ import annotations

import atexit
import threading

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from telemetry.record import SERVICE_VERSION

_lock = threading.Lock()
_sink: SpanSink | None = None
_configured = False


class SpanSink:
    """What a request's spans need: the sampler, new ids, the resource, and the processor they go to."""

    def __init__(self, *, sampler, resource, processor):
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.sampler = sampler
        self.resource = resource
        self.processor = processor
        self.scope = InstrumentationScope("tollgate.proxy", SERVICE_VERSION)
        ids = RandomIdGenerator()
        self.new_trace_id = ids.generate_trace_id
        self.new_span_id = ids.generate_span_id

    def emit(self, span) -> None:
        """Queue a finished span for export (never blocks; a full queue drops it, as the SDK does)."""
        self.processor.on_end(span)

    def force_flush(self, timeout_millis: int) -> bool:
        return self.processor.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.processor.shutdown()


def tracer() -> SpanSink | None:
    """The span pipeline, or None when tracing is off (no endpoint, or OTEL_SDK_DISABLED)."""
    if _configured:
        return _sink
    return configure()


def configure() -> SpanSink | None:
    """Build the pipeline from settings; later calls return the same one."""
    global _sink, _configured
    with _lock:
        if not _configured:
            if settings.TRACING_ENABLED:
                _sink = _span_sink()
                # The ASGI lifespan shuts it down on a graceful stop; this covers any other exit.
                atexit.register(_sink.shutdown)
            _configured = True
    return _sink


def shutdown() -> None:
    """Export what is queued and stop the processor's thread (the server's graceful stop)."""
    global _sink, _configured
    with _lock:
        if _sink is not None:
            atexit.unregister(_sink.shutdown)
            _sink.shutdown()
        _sink = None
        _configured = False


def force_flush(timeout_millis: int = 10_000) -> bool:
    """Export every span emitted so far; True once the exporter has them."""
    sink = _sink
    return sink.force_flush(timeout_millis) if sink is not None else True


def _span_sink() -> SpanSink:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(
        {
            "service.name": settings.OTEL_SERVICE_NAME,
            "service.version": SERVICE_VERSION,
            "deployment.environment": settings.GATEWAY_ENVIRONMENT,
        }
    )
    return SpanSink(sampler=sampler(), resource=resource, processor=BatchSpanProcessor(_exporter()))


def sampler():
    """The sampler OTEL_TRACES_SAMPLER names, with OTEL_TRACES_SAMPLER_ARG as its probability."""
    from opentelemetry.sdk.trace import sampling

    name, rate = settings.OTEL_TRACES_SAMPLER, settings.OTEL_TRACES_SAMPLER_ARG
    samplers = {
        "always": lambda: sampling.ParentBased(sampling.ALWAYS_ON),
        "never": lambda: sampling.ParentBased(sampling.ALWAYS_OFF),
        "probability": lambda: sampling.ParentBasedTraceIdRatio(rate),
        "always_on": lambda: sampling.ALWAYS_ON,
        "always_off": lambda: sampling.ALWAYS_OFF,
        "traceidratio": lambda: sampling.TraceIdRatioBased(rate),
        "parentbased_always_on": lambda: sampling.ParentBased(sampling.ALWAYS_ON),
        "parentbased_always_off": lambda: sampling.ParentBased(sampling.ALWAYS_OFF),
        "parentbased_traceidratio": lambda: sampling.ParentBasedTraceIdRatio(rate),
    }
    return samplers[name]()


def traces_url() -> str:
    """Where spans are sent: the traces endpoint as given, or the OTLP endpoint's /v1/traces (HTTP)."""
    if settings.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT:
        return settings.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
    base = settings.OTEL_EXPORTER_OTLP_ENDPOINT
    if settings.OTEL_EXPORTER_OTLP_PROTOCOL == "grpc":
        return base
    return base.rstrip("/") + "/v1/traces"


def _exporter():
    if settings.OTEL_EXPORTER_OTLP_PROTOCOL == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise ImproperlyConfigured(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the opentelemetry-exporter-otlp-proto-grpc package; "
                "install it, or use http/protobuf (the default)."
            ) from exc
        return OTLPSpanExporter(endpoint=traces_url())
    from gateway_project.otlp_wire import WireOTLPSpanExporter

    return WireOTLPSpanExporter(endpoint=traces_url())
