"""A real Prometheus (Debian's package; `make prometheus`) scrapes the live gateway, and answers the
example queries operators are told to run, and the shipped Grafana dashboard's, with data."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "tollgate.json"
SCRAPE_INTERVAL = 1.0

# The examples of the observability reference, as written.
REFERENCE_QUERIES = (
    "rate(http_requests_total[5m])",
    "histogram_quantile(0.95, rate(http_request_duration_seconds_bucket[5m]))",
    'rate(http_requests_total{status=~"5.."}[5m])',
    "rate(provider_tokens_total[1m]) * 60",
)
# The reference's "provider latency by model" puts `by` after the function call, which PromQL
# refuses; the aggregation belongs inside, keeping the bucket label `le`.
REFERENCE_UNPARSABLE = (
    "histogram_quantile(0.95, rate(provider_request_duration_seconds_bucket[5m])) by (provider, model)"
)
PROVIDER_LATENCY_BY_MODEL = (
    "histogram_quantile(0.95, sum by (provider, model, le) (rate(provider_request_duration_seconds_bucket[5m])))"
)
# Panels that may rightly show nothing here, and need only parse: metrics of the Celery export
# workers (not run by this test), and counts of dropped records (a series only once one is dropped).
QUIET_METRICS = ("telemetry_export_", "telemetry_dead_letters", "telemetry_records_dropped", "_dropped_records")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def prometheus(live_gateway, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("Prometheus is not installed: run `make prometheus` (Debian's prometheus package)")
    port = _free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": f"{SCRAPE_INTERVAL:g}s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "tollgate",
                        "metrics_path": "/metrics",
                        "static_configs": [{"targets": [f"127.0.0.1:{live_gateway.port}"]}],
                    }
                ],
            }
        )
    )
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    api = Prometheus(f"http://127.0.0.1:{port}")
    try:
        api.wait_until_scraping()
        yield api
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def wait_until_scraping(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                targets = httpx.get(self.url + "/api/v1/targets").json()["data"]["activeTargets"]
            except (httpx.HTTPError, ValueError, KeyError):
                targets = []
            if targets and targets[0]["health"] == "up":
                return
            time.sleep(0.2)
        raise AssertionError("Prometheus did not scrape the gateway")

    def query(self, promql: str) -> httpx.Response:
        return httpx.get(self.url + "/api/v1/query", params={"query": promql})

    def result(self, promql: str) -> list[dict]:
        response = self.query(promql)
        assert response.status_code == 200, f"{promql}: {response.text}"
        return response.json()["data"]["result"]


REQUESTS_PER_WAVE = 6


def _traffic(caller) -> None:
    """Plain answers, a stream, a provider's 503 and a client's 400 (REQUESTS_PER_WAVE), through the live gateway."""
    headers = {"authorization": f"Bearer {caller.key}"}
    url = caller.openai_base_url + "/chat/completions"
    with httpx.Client(timeout=30, headers=headers) as client:
        for _ in range(3):
            assert client.post(
                url, json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
            ).is_success
        streamed = client.post(
            url, json={"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        )
        assert streamed.is_success and streamed.text.endswith("data: [DONE]\n\n")
        failed = client.post(url, json={"model": "status-503", "messages": [{"role": "user", "content": "hi"}]})
        assert failed.status_code == 503
        refused = client.post(url, content=b"{not json", headers={"content-type": "application/json"})
        assert refused.status_code == 400


def _two_scraped_waves(caller, published) -> None:
    """Two waves of traffic, each scraped, so every rate has an increase to measure."""
    for wave in (1, 2):
        _traffic(caller)
        published.wait_for_count(REQUESTS_PER_WAVE * wave)  # provider metrics are observed at the hand-off
        time.sleep(SCRAPE_INTERVAL * 2.5)


def _has_data(result: list[dict]) -> bool:
    # A number, not just a series: a series other tests left without new samples has a NaN quantile.
    return any(sample["value"][1] not in ("NaN", "+Inf", "-Inf") for sample in result)


def test_every_example_query_returns_data(caller, published, prometheus):
    _two_scraped_waves(caller, published)

    for promql in (*REFERENCE_QUERIES, PROVIDER_LATENCY_BY_MODEL):
        result = prometheus.result(promql)
        assert _has_data(result), f"{promql} returned {result}"

    refused = prometheus.query(REFERENCE_UNPARSABLE)
    assert refused.status_code == 400 and refused.json()["errorType"] == "bad_data"

    by_model = prometheus.result(PROVIDER_LATENCY_BY_MODEL)
    assert {(s["metric"]["provider"], s["metric"]["model"]) for s in by_model} >= {("openai", "gpt-4o-mini")}
    errors = prometheus.result('rate(http_requests_total{status=~"5.."}[5m])')
    # Other tests on the same live gateway leave 5xx statuses of their own; this one's 503s must be there.
    assert "503" in {s["metric"]["status"] for s in errors}

    for promql in (
        "histogram_quantile(0.95, sum by (le) (rate(http_request_size_bytes_bucket[5m])))",
        "histogram_quantile(0.95, sum by (le) (rate(http_response_size_bytes_bucket[5m])))",
        "histogram_quantile(0.95, sum by (provider, model, le) (rate(provider_stream_duration_seconds_bucket[5m])))",
    ):
        assert _has_data(prometheus.result(promql)), promql


def test_every_dashboard_query_parses_and_the_request_path_ones_return_data(caller, published, prometheus):
    _two_scraped_waves(caller, published)

    dashboard = json.loads(DASHBOARD.read_text())
    queries = [
        target["expr"].replace("$__rate_interval", "5m")
        for panel in dashboard["panels"]
        for target in panel.get("targets", ())
    ]
    assert len(queries) >= 8
    for promql in queries:
        result = prometheus.result(promql)
        if not any(name in promql for name in QUIET_METRICS):
            assert result, f"{promql} returned no data"
