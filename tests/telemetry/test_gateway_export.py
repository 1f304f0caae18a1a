"""End to end: requests through the live gateway, exported by real workers to Postgres and Elasticsearch."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from telemetry import handoff
from telemetry.models import RequestLog
from tests.telemetry.conftest import (
    ROOT,
    Worker,
    configure_exporters,
    es_has_exactly,
    es_hits,
    free_port,
    pg_has_exactly,
    requires_postgres,
    requires_redis,
    wait_for,
    worker_env,
)

pytestmark = [requires_postgres, requires_redis]

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}


class TeePublisher:
    """Hands documents to the real queue and keeps a copy: the record exactly as the proxy built it."""

    def __init__(self):
        self.kept: dict[str, dict] = {}
        self.celery = handoff.CeleryPublisher()

    def publish(self, documents):
        self.celery.publish(documents)
        for document in documents:
            self.kept[document["attributes"]["id"]] = document


@pytest.fixture
def tee(pipeline):
    previous = handoff.pipeline.publisher
    handoff.pipeline.flush_sync()
    handoff.pipeline.publisher = tee = TeePublisher()
    yield tee
    handoff.pipeline.flush_sync()
    handoff.pipeline.publisher = previous


def test_both_stores_hold_exactly_what_the_proxy_built(caller, tee, osmem_clone):
    configure_exporters(es_url=osmem_clone.url)
    headers = {"authorization": f"Bearer {caller.key}", "x-project-id": "search", "x-user-id": "u-9"}
    plain = httpx.post(caller.openai_base_url + "/chat/completions", json=CHAT, headers=headers)
    streamed = httpx.post(caller.openai_base_url + "/chat/completions", json=CHAT | {"stream": True}, headers=headers)
    assert plain.status_code == streamed.status_code == 200
    ids = [plain.headers["x-request-id"], streamed.headers["x-request-id"]]

    wait_for(lambda: set(ids) <= set(tee.kept), what="the gateway to hand both records off")
    wait_for(lambda: pg_has_exactly(ids) and es_has_exactly(osmem_clone.url, ids), what="both records in both stores")
    hits = es_hits(osmem_clone.url, ids)
    for record_id in ids:
        built = tee.kept[record_id]
        assert RequestLog.objects.get(pk=record_id).log_data == built
        assert hits[record_id] == [built]
    assert tee.kept[ids[1]]["attributes"]["response"]["streamed_data"]
    row = RequestLog.objects.get(pk=ids[0])
    assert (row.org_id, row.project_id, row.user_id, row.provider, row.status_code) == (
        "acme",
        "search",
        "u-9",
        "openai",
        200,
    )


def test_requests_keep_succeeding_while_redis_is_down(
    caller, tee, private_redis, publish_to, test_database_url, var_dir
):
    """Redis goes away for a few seconds: every request is answered, every record arrives afterwards."""
    configure_exporters()
    publish_to(private_redis.url)
    worker = Worker(
        env=worker_env(broker_url=private_redis.url, database_url=test_database_url, var_dir=str(var_dir / "e2e")),
        queues="export.postgres",
        log_dir=var_dir,
        name="gateway-outage-worker",
    ).start()

    async def traffic() -> tuple[list[str], list[int]]:
        ids, statuses = [], []
        async with httpx.AsyncClient(timeout=30) as client:
            for tick in range(60):
                if tick == 10:
                    private_redis.stop()
                if tick == 50:
                    private_redis.start()
                response = await client.post(
                    caller.openai_base_url + "/chat/completions",
                    json=CHAT,
                    headers={"authorization": f"Bearer {caller.key}"},
                )
                statuses.append(response.status_code)
                ids.append(response.headers["x-request-id"])
                await asyncio.sleep(0.1)
        return ids, statuses

    try:
        ids, statuses = asyncio.run(traffic())
        assert statuses == [200] * len(statuses)
        try:
            # No supervisor: the same worker reconnects by itself.
            wait_for(lambda: pg_has_exactly(ids), timeout=60, what="every record after Redis came back")
            assert worker.process.poll() is None, "the worker exited on the broker outage"
        except AssertionError as failure:
            missing = set(ids) - set(RequestLog.objects.filter(pk__in=ids).values_list("pk", flat=True))
            raise AssertionError(f"{failure}; {len(missing)} missing; worker log:\n{worker.log()[-6000:]}") from None
    finally:
        worker.stop()


def test_a_gracefully_stopped_gateway_hands_off_every_record(
    caller, pipeline, provider_server, test_database_url, var_dir
):
    """SIGTERM right after a burst of requests: the records still in the web process are flushed, none lost."""
    configure_exporters()
    port = free_port()
    env = worker_env(
        broker_url=os.environ.get("REDIS_URL", ""), database_url=test_database_url, var_dir=str(var_dir / "web")
    )
    env |= {
        "REDIS_URL": env["CELERY_BROKER_URL"],
        "OPENAI_BASE_URL": provider_server.url + "/v1",
        # A long interval: without the shutdown flush the burst would still be in the web process.
        "TELEMETRY_FLUSH_INTERVAL": "30",
    }
    gateway = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "gateway_project.asgi:application", "--port", str(port), "--log-level",
         "warning"],
        cwd=ROOT,
        env=env,
    )  # fmt: skip
    try:
        wait_for(lambda: _answers(port), timeout=30, what="the gateway subprocess")
        ids = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(25):
                response = client.post(
                    "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {caller.key}"}
                )
                assert response.status_code == 200
                ids.append(response.headers["x-request-id"])
        gateway.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal so that the exit status tells why it stopped.
        assert gateway.wait(timeout=30) in (0, -signal.SIGTERM)
        wait_for(lambda: pg_has_exactly(ids), timeout=60, what="every record of the stopped gateway")
    finally:
        if gateway.poll() is None:
            gateway.kill()


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        time.sleep(0.1)
        return False
