"""The local journal, end to end: the gateway under uvicorn (a subprocess that can be killed), a real
Celery worker and PostgreSQL. A response that carried an x-request-id has its record stored once."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from telemetry.models import RequestLog
from tests.telemetry.conftest import (
    ROOT,
    Worker,
    configure_exporters,
    free_port,
    pg_has_exactly,
    requires_postgres,
    requires_redis,
    wait_for,
    worker_env,
)

pytestmark = [requires_postgres, requires_redis]

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}


class Gateway:
    """`uvicorn gateway_project.asgi:application`, one worker, its output in a log file."""

    def __init__(self, *, env: dict[str, str], log_path: Path, port: int | None = None):
        self.env = env
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Gateway:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "gateway_project.asgi:application", "--port", str(self.port),
                 "--log-level", "warning", "--no-access-log"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_for(self._answers, timeout=30, what="the gateway subprocess")
        return self

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the gateway exited:\n{self.log()[-4000:]}")
        try:
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            time.sleep(0.1)
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def gateway_env(*, broker_url: str, database_url: str, var_dir: Path, provider_url: str, **extra: str) -> dict:
    env = worker_env(broker_url=broker_url, database_url=database_url, var_dir=str(var_dir))
    # The cache stays on the shared Redis: only the broker goes away in these tests.
    env |= {"REDIS_URL": os.environ.get("REDIS_URL", ""), "OPENAI_BASE_URL": provider_url + "/v1"}
    return env | extra


def journal_records(var_dir: Path) -> int:
    """Records in the journal segments on disk (each segment's first line names the fields)."""
    paths = (var_dir / "journal").glob("*/*.seg")
    return sum(max(len(path.read_bytes().rstrip(b"\0").splitlines()) - 1, 0) for path in paths)


async def _load(url: str, key: str, *, clients: int, pause: float, until: threading.Event, ids: list[str]) -> None:
    """`clients` callers in a loop until told to stop; keeps the id of every response that arrived whole."""

    async def one(client: httpx.AsyncClient) -> None:
        while not until.is_set():
            try:
                response = await client.post(
                    url + "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {key}"}
                )
            except httpx.HTTPError:
                await asyncio.sleep(0.05)  # the gateway is down or restarting: in flight, best effort
                continue
            if "x-request-id" in response.headers:
                ids.append(response.headers["x-request-id"])
            await asyncio.sleep(pause)

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(one(client) for _ in range(clients)))


def _run_load(
    url: str, key: str, *, clients: int, ids: list[str], pause: float = 0.0
) -> tuple[threading.Thread, threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(
        target=lambda: asyncio.run(_load(url, key, clients=clients, pause=pause, until=stop, ids=ids))
    )
    thread.start()
    return thread, stop


@pytest.fixture
def export_worker(pipeline):
    """The session's worker (on REDIS_URL), with the hook table emptied."""
    configure_exporters()
    return pipeline


def test_a_killed_web_worker_loses_no_answered_record(
    caller, export_worker, provider_server, test_database_url, tmp_path
):
    """kill -9 under load; after a restart every response that carried an x-request-id has its record, once."""
    env = gateway_env(
        broker_url=os.environ["REDIS_URL"],
        database_url=test_database_url,
        var_dir=tmp_path,
        provider_url=provider_server.url,
        # Nothing is published before the kill: whatever reaches the store came through the journal.
        TELEMETRY_FLUSH_INTERVAL="60",
    )
    gateway = Gateway(env=env, log_path=tmp_path / "gateway.log").start()
    ids: list[str] = []
    try:
        thread, stop = _run_load(gateway.url, caller.key, clients=16, ids=ids)
        wait_for(lambda: len(ids) >= 300, timeout=60, what="300 answered requests")
        gateway.kill()
        stop.set()
        thread.join()
        answered = list(ids)
        assert not RequestLog.objects.filter(pk__in=answered).exists()
        assert journal_records(tmp_path) >= len(answered)

        restarted = Gateway(env=env, log_path=tmp_path / "gateway.log").start()
        try:
            wait_for(lambda: pg_has_exactly(answered), timeout=60, what="every answered record, once")
            wait_for(lambda: journal_records(tmp_path) == 0, what="the replayed segments to be deleted")
        finally:
            restarted.stop()
    finally:
        gateway.stop()


def test_a_minute_without_redis_and_a_restart_lose_and_duplicate_nothing(
    caller, private_redis, provider_server, test_database_url, var_dir, tmp_path
):
    """The broker is away for 60 s under traffic and the web process is restarted (SIGTERM) meanwhile."""
    configure_exporters()
    from django.db import connection

    from tests.telemetry.hooks import HOOK_TABLE

    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {HOOK_TABLE}")
    worker = Worker(
        env=worker_env(broker_url=private_redis.url, database_url=test_database_url, var_dir=str(var_dir / "60s")),
        queues="export.postgres",
        log_dir=var_dir,
        name="minute-outage-worker",
    ).start()
    env = gateway_env(
        broker_url=private_redis.url, database_url=test_database_url, var_dir=tmp_path, provider_url=provider_server.url
    )
    gateway = Gateway(env=env, log_path=tmp_path / "gateway.log").start()
    ids: list[str] = []
    thread, stop = _run_load(gateway.url, caller.key, clients=2, pause=0.05, ids=ids)
    try:
        wait_for(lambda: len(ids) >= 20, what="traffic before the outage")
        private_redis.stop()
        outage_started = time.monotonic()
        time.sleep(20)
        assert gateway.terminate() in (0, -signal.SIGTERM)
        left = journal_records(tmp_path)
        assert left > 0, "the stopped gateway left nothing in its journal, yet the broker was away"
        gateway = Gateway(env=env, log_path=tmp_path / "gateway.log", port=gateway.port).start()
        time.sleep(max(60 - (time.monotonic() - outage_started), 0))
        private_redis.start()
        time.sleep(2)
        stop.set()
        thread.join()

        wait_for(lambda: pg_has_exactly(ids), timeout=120, what="every answered record, once")
        assert re.search(r"shipping \d+ journal segments left by a stopped process", gateway.log())
        assert worker.process.poll() is None, "the worker exited on the outage"
    finally:
        stop.set()
        thread.join()
        gateway.stop()
        worker.stop()


def test_the_journal_is_bounded_and_counts_what_the_bound_forces_out(
    caller, private_redis, provider_server, test_database_url, var_dir, tmp_path
):
    """With the broker away the journal fills up to GATEWAY_JOURNAL_MAX_BYTES; beyond, records are dropped,
    counted and logged. What it kept arrives once the broker is back."""
    configure_exporters()
    private_redis.stop()
    bound = 64 * 1024
    env = gateway_env(
        broker_url=private_redis.url,
        database_url=test_database_url,
        var_dir=tmp_path,
        provider_url=provider_server.url,
        GATEWAY_JOURNAL_MAX_BYTES=str(bound),
    )
    gateway = Gateway(env=env, log_path=tmp_path / "gateway.log").start()
    worker = None
    try:
        ids = []
        with httpx.Client(base_url=gateway.url) as client:
            for _ in range(150):
                response = client.post(
                    "/v1/chat/completions", json=CHAT, headers={"authorization": f"Bearer {caller.key}"}
                )
                assert response.status_code == 200
                ids.append(response.headers["x-request-id"])
        # A segment being written is allocated ahead: what it holds is what precedes the zero bytes.
        on_disk = sum(len(path.read_bytes().rstrip(b"\0")) for path in (tmp_path / "journal").glob("*/*.seg"))
        assert 0 < on_disk <= bound
        dropped = _metric(gateway.url, "telemetry_journal_dropped_records_total", reason="journal_full")
        kept = journal_records(tmp_path)
        assert dropped > 0 and kept > 0
        assert kept + dropped == len(ids)
        wait_for(lambda: "journal full" in gateway.log(), what="the drop to be logged")

        private_redis.start()
        worker = Worker(
            env=worker_env(broker_url=private_redis.url, database_url=test_database_url, var_dir=str(var_dir / "cap")),
            queues="export.postgres",
            log_dir=var_dir,
            name="bounded-journal-worker",
        ).start()
        wait_for(lambda: RequestLog.objects.filter(pk__in=ids).count() == kept, timeout=60, what="the kept records")
    finally:
        gateway.stop()
        if worker is not None:
            worker.stop()


def _metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0
