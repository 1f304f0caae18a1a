"""Tracing's own CPU cost per request, measured in one process: steadier than throughput on a busy machine.

    python bench/tracing_bench.py [--requests 20000]

Runs what the gateway does for tracing on each request (the record's ids and sampling decision,
one provider attempt, the spans emitted once the record's document exists) with tracing off,
sampling at probability 0.1 and always on, and lets the SDK's batch processor export every span
over OTLP/HTTP to a receiver in another process that discards them. Prints the process's CPU time
per request, the export thread's included, beside `proxy_bench.py --otlp`'s gateway CPU per request.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.test import RequestFactory  # noqa: E402
from django.urls import resolve  # noqa: E402

from gateway_project import tracer  # noqa: E402
from proxy import tracing  # noqa: E402
from telemetry.record import RequestRecord  # noqa: E402

CONFIGS = (("tracing off", None, 1.0), ("probability 0.1", "probability", 0.1), ("always on", "always", 1.0))
DOCUMENT = {"attributes": {"metadata": {"tokens": {"input": 12, "output": 20}}, "response": {}}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one_request(request) -> None:
    record = RequestRecord(path="/v1/chat/completions", method="POST")
    record.model = record.upstream_model = "gpt-4o-mini"
    tracing.request_started(record, request)
    tracing.attempt_started(record, provider="openai", method="POST")
    tracing.attempt_answered(record, 200)
    tracing.attempt_ended(record)
    record.finish(200)
    if record.trace is not None:  # what the hand-off does once the document is built
        trace, record.trace = record.trace, None
        trace.end(record, DOCUMENT)


def cpu_per_request(endpoint: str, sampler: str | None, rate: float, count: int) -> float:
    tracer.shutdown()
    settings.TRACING_ENABLED = sampler is not None
    settings.OTEL_EXPORTER_OTLP_ENDPOINT = endpoint
    settings.OTEL_TRACES_SAMPLER = sampler or "always"
    settings.OTEL_TRACES_SAMPLER_ARG = rate
    tracer.configure()
    request = RequestFactory().post("/v1/chat/completions", data=b"{}", content_type="application/json")
    request.resolver_match = resolve("/v1/chat/completions")
    for _ in range(1000):  # warm up
        one_request(request)
    assert tracer.force_flush()
    started = time.process_time()
    for _ in range(count):
        one_request(request)
    assert tracer.force_flush()
    return (time.process_time() - started) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, "-m", "tests.otlp_receiver", "--port", str(port), "--discard"], cwd=ROOT
    )
    try:
        time.sleep(1.0)
        endpoint = f"http://127.0.0.1:{port}"
        figures: dict[str, list[float]] = {name: [] for name, _, _ in CONFIGS}
        for _ in range(args.rounds):
            for name, sampler, rate in CONFIGS:
                figures[name].append(cpu_per_request(endpoint, sampler, rate, args.requests))
    finally:
        tracer.shutdown()
        receiver.terminate()
        receiver.wait(timeout=15)
    baseline = min(figures["tracing off"])
    print(f"\nTracing's CPU per request, {args.requests} requests x {args.rounds} rounds (best round)")
    print(f"{'configuration':18} {'us/request':>11} {'added':>9}")
    for name, values in figures.items():
        best = min(values)
        print(f"{name:18} {best:11.1f} {best - baseline:+9.1f}")


if __name__ == "__main__":
    main()
