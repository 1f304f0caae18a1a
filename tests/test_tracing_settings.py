"""The OpenTelemetry variables are checked when the gateway starts: a bad one is refused by name."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOW = (
    "import django; django.setup(); from django.conf import settings; from gateway_project import tracer; "
    "url = tracer.traces_url() if settings.TRACING_ENABLED else '-'; "
    "print(settings.TRACING_ENABLED, url, type(tracer.sampler()).__name__)"
)


def start(**env) -> subprocess.CompletedProcess:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    environment |= {"DJANGO_SETTINGS_MODULE": "gateway_project.settings"} | env
    return subprocess.run([sys.executable, "-c", SHOW], cwd=ROOT, env=environment, capture_output=True, text=True)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER must be one of always, never, probability"),
        ({"OTEL_TRACES_SAMPLER_ARG": "1.5"}, "OTEL_TRACES_SAMPLER_ARG must be a probability from 0 to 1, got '1.5'"),
        (
            {"OTEL_TRACES_SAMPLER_ARG": "often"},
            "OTEL_TRACES_SAMPLER_ARG must be a probability from 0 to 1, got 'often'",
        ),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL must be http/protobuf or grpc"),
    ],
)
def test_a_bad_value_is_refused_by_name(env, message):
    result = start(**env)
    assert result.returncode != 0
    assert message in result.stderr


def test_tracing_is_off_without_an_endpoint_and_on_with_one():
    off = start(OTEL_TRACES_SAMPLER="always")
    assert off.returncode == 0, off.stderr
    assert off.stdout.split() == ["False", "-", "ParentBased"]
    on = start(OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318/", OTEL_TRACES_SAMPLER="probability")
    assert on.stdout.split() == ["True", "http://collector:4318/v1/traces", "ParentBasedTraceIdRatio"]
    given = start(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://collector:4318/custom", OTEL_TRACES_SAMPLER="always_off")
    assert given.stdout.split() == ["True", "http://collector:4318/custom", "StaticSampler"]
    disabled = start(OTEL_EXPORTER_OTLP_ENDPOINT="http://collector:4318", OTEL_SDK_DISABLED="true")
    assert disabled.stdout.split()[0] == "False"
