"""The process's OpenTelemetry tracer: built from settings once, or None while tracing is off.

Spans go to a BatchSpanProcessor, whose own thread encodes and exports them over OTLP; a request
only hands its finished spans to the processor's queue. With no OTLP endpoint set nothing here is
imported, so a gateway without tracing pays nothing for it.
"""

from __future__ import annotations

import threading

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from telemetry.record import SERVICE_VERSION

_lock = threading.Lock()
_provider = None
_tracer = None
_configured = False


def tracer():
    """The SDK tracer, or None when tracing is off (no endpoint, or OTEL_SDK_DISABLED)."""
    if _configured:
        return _tracer
    return configure()


def configure():
    """Build the tracer provider from settings; later calls return the same tracer."""
    global _provider, _tracer, _configured
    with _lock:
        if not _configured:
            if settings.TRACING_ENABLED:
                _provider = _tracer_provider()
                _tracer = _provider.get_tracer("tollgate.proxy", SERVICE_VERSION)
            _configured = True
    return _tracer


def shutdown() -> None:
    """Export what is queued and stop the processor's thread (the server's graceful stop)."""
    global _provider, _tracer, _configured
    with _lock:
        if _provider is not None:
            _provider.shutdown()
        _provider = _tracer = None
        _configured = False


def force_flush(timeout_millis: int = 10_000) -> bool:
    """Export every span ended so far; True once the exporter has them."""
    provider = _provider
    return provider.force_flush(timeout_millis) if provider is not None else True


def _tracer_provider():
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(
        {
            "service.name": settings.OTEL_SERVICE_NAME,
            "service.version": SERVICE_VERSION,
            "deployment.environment": settings.GATEWAY_ENVIRONMENT,
        }
    )
    # The ASGI lifespan calls `shutdown()` on a graceful stop; the exit hook covers any other process.
    provider = TracerProvider(sampler=sampler(), resource=resource, shutdown_on_exit=True)
    provider.add_span_processor(BatchSpanProcessor(_exporter()))
    return provider


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
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=traces_url())
