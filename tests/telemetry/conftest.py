"""Fixtures for the export pipeline: real Celery workers, Redis, PostgreSQL and osmem-server.

Run with `DATABASE_URL=postgres://postgres@127.0.0.1:5432/telemetry REDIS_URL=redis://127.0.0.1:6379/5`:
the workers are subprocesses that use pytest-django's test database (`test_<NAME>`) and the
Redis database of REDIS_URL, which is flushed when the session starts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from telemetry import selectors
from telemetry.exporters.elasticsearch import ElasticsearchExporter
from telemetry.models import ExporterSetting
from telemetry.record import RequestRecord
from tests.telemetry.hooks import HOOK_PATH, HOOK_TABLE

ROOT = Path(__file__).resolve().parents[2]
ES_INDEX = "ai-gateway-metrics"

requires_postgres = pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
    reason="the export pipeline tests run against PostgreSQL (set DATABASE_URL)",
)
requires_redis = pytest.mark.skipif(
    not settings.CELERY_BROKER_URL.startswith("redis://"), reason="the workers need Redis (set REDIS_URL)"
)


def wait_for(predicate, *, timeout: float = 30.0, interval: float = 0.1, what: str = "the condition"):
    """Poll until `predicate()` is truthy and return it; fail after `timeout` seconds."""
    value = wait_until(predicate, timeout=timeout, interval=interval)
    if not value:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")
    return value


def wait_until(predicate, *, timeout: float, interval: float = 0.05):
    """Poll until `predicate()` is truthy and return it, or its last falsy value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- Documents ---------------------------------------------------------------------


def plain_record(**fields) -> RequestRecord:
    record = RequestRecord(path="/v1/chat/completions", method="POST")
    record.org_id = fields.pop("org_id", "acme")
    record.project_id = fields.pop("project_id", "search")
    record.project_name = "Search"
    record.user_id = fields.pop("user_id", "user-1")
    record.provider = fields.pop("provider", None)
    record.model = "gpt-4o-mini"
    record.request_json = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"What is the capital of France? ({uuid.uuid4().hex[:6]})"}],
    }
    record.request_body = json.dumps(record.request_json).encode()
    record.response_json = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 14, "completion_tokens": 2, "total_tokens": 16},
    }
    record.response_size = 220
    record.provider_status_code = 200
    record.provider_latency_ms = 180.4
    for name, value in fields.items():
        setattr(record, name, value)
    record.finish(200)
    return record


def streaming_record() -> RequestRecord:
    record = plain_record()
    record.stream = True
    record.stream_dialect = "openai"
    record.response_json = None
    record.stream_events = []
    chunks = [
        {"id": "chatcmpl-2", "object": "chat.completion.chunk", "model": "gpt-4o-mini", "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        {"id": "chatcmpl-2", "object": "chat.completion.chunk", "model": "gpt-4o-mini", "choices": [
            {"index": 0, "delta": {"content": "Par"}, "finish_reason": None}]},
        {"id": "chatcmpl-2", "object": "chat.completion.chunk", "model": "gpt-4o-mini", "choices": [
            {"index": 0, "delta": {"content": "is."}, "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 14, "completion_tokens": 2, "total_tokens": 16}},
    ]  # fmt: skip
    for chunk in chunks:
        record.capture_stream_event(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    record.capture_stream_event(b"data: [DONE]\n\n")
    return record


def documents(count: int, **fields) -> list[dict]:
    return [plain_record(**fields).to_document() for _ in range(count)]


def ids_of(docs: list[dict]) -> list[str]:
    return [doc["attributes"]["id"] for doc in docs]


# --- Stores ------------------------------------------------------------------------


def es_client(url: str):
    return ElasticsearchExporter("reader", url=url, plain_json=True).client


def es_hits(url: str, ids: list[str]) -> dict[str, list[dict]]:
    """Every stored copy of each record id in the record indices, by id."""
    client = es_client(url)
    try:
        pattern = f"{ES_INDEX}-*"
        client.indices.refresh(index=pattern, allow_no_indices=True, ignore_unavailable=True)
        found: dict[str, list[dict]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            response = client.search(
                index=pattern,
                query={"ids": {"values": chunk}},
                size=len(chunk) * 2,
                allow_no_indices=True,
                ignore_unavailable=True,
            )
            for hit in response["hits"]["hits"]:
                found.setdefault(hit["_id"], []).append(hit["_source"])
        return found
    finally:
        client.close()


def es_has_exactly(url: str, ids: list[str]) -> bool:
    hits = es_hits(url, ids)
    return set(hits) == set(ids) and all(len(copies) == 1 for copies in hits.values())


def pg_ids(ids: list[str]) -> set[str]:
    from telemetry.models import RequestLog

    return set(RequestLog.objects.filter(pk__in=ids).values_list("pk", flat=True))


def hook_counts(ids: list[str]) -> Counter:
    """How many times the after-insert hook saw each record (in the worker processes)."""
    counts: Counter = Counter()
    with connection.cursor() as cursor:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            cursor.execute(f"SELECT id FROM {HOOK_TABLE} WHERE id IN ({', '.join(['%s'] * len(chunk))})", chunk)
            counts.update(row[0] for row in cursor.fetchall())
    return counts


def pg_has_exactly(ids: list[str]) -> bool:
    counts = hook_counts(ids)
    return pg_ids(ids) == set(ids) and set(counts) == set(ids) and all(n == 1 for n in counts.values())


def configure_exporters(*, es_url: str | None = None, batch_size: int = 100) -> None:
    """The exporter settings rows, as the admin would leave them."""
    ExporterSetting.objects.update_or_create(
        name="postgres",
        defaults={
            "enabled": True,
            "backend": "telemetry.exporters.postgres.PostgresExporter",
            "index_or_table": settings.POSTGRES_LOG_TABLE,
            "batch_size": batch_size,
        },
    )
    if es_url is None:
        ExporterSetting.objects.filter(name="elasticsearch").delete()
    else:
        ExporterSetting.objects.update_or_create(
            name="elasticsearch",
            defaults={
                "enabled": True,
                "backend": "telemetry.exporters.elasticsearch.ElasticsearchExporter",
                "url": es_url,
                "index_or_table": ES_INDEX,
                "options": {"plain_json": True},
                "batch_size": batch_size,
            },
        )
    selectors.exporter_configs_forget()


# --- Workers -----------------------------------------------------------------------


class Worker:
    """A `celery worker` subprocess with its log in a file."""

    def __init__(self, *, env: dict[str, str], queues: str, log_dir: Path, name: str):
        self.env = env
        self.queues = queues
        self.log_path = log_dir / f"{name}.log"
        self.name = name
        self.process: subprocess.Popen | None = None
        self._log_offset = 0

    def start(self) -> Worker:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the subprocess for its lifetime
        command = [
            sys.executable, "-m", "celery", "-A", "gateway_project", "worker",
            "-Q", self.queues, "-c", "2", "-l", "INFO", "-n", f"{self.name}-{uuid.uuid4().hex[:6]}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        wait_for(lambda: " ready." in self.log() or self.process.poll() is not None, timeout=60, what="the worker")
        if self.process.poll() is not None:
            raise RuntimeError(f"the worker exited:\n{self.log()}")
        return self

    def log(self) -> str:
        """What the worker logged since it was last started."""
        with open(self.log_path, "rb") as handle:
            handle.seek(self._log_offset)
            return handle.read().decode("utf-8", "replace")

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def ensure_running(self) -> Worker:
        if self.process is None or self.process.poll() is not None:
            self.start()
        return self


def worker_env(*, broker_url: str, database_url: str, var_dir: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "GATEWAY_VAR_DIR": var_dir,
        "TELEMETRY_EXPORTER_SETTINGS_TTL": "1",
        "TELEMETRY_EXPORT_RETRY_BACKOFF": "0.2",
        "TELEMETRY_EXPORT_RETRY_BACKOFF_MAX": "2",
        # Short, so that the batches of a killed worker come back within the test.
        "CELERY_VISIBILITY_TIMEOUT": "5",
        "CELERY_UNACKED_RESTORE_INTERVAL": "1",
        "CELERY_WORKER_PREFETCH_MULTIPLIER": "1",
        "TELEMETRY_POSTGRES_AFTER_INSERT": HOOK_PATH,
        "LOG_LEVEL": "INFO",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def var_dir():
    path = Path(tempfile.mkdtemp(prefix="telemetry-tests-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def test_database_url(django_db_setup, django_db_blocker) -> str:
    """The URL of pytest-django's test database, for the worker subprocesses."""
    db = settings.DATABASES["default"]
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        # Written by the after-insert hook the workers run, to count how often each row was new.
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {HOOK_TABLE} (id varchar(64) NOT NULL)")
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def _flush_broker_db(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.fixture(scope="session")
def worker(test_database_url, var_dir):
    """One worker for both exporters' queues, shared by the tests (a test may kill and restart it)."""
    _flush_broker_db(settings.CELERY_BROKER_URL)
    process = Worker(
        env=worker_env(
            broker_url=settings.CELERY_BROKER_URL, database_url=test_database_url, var_dir=str(var_dir / "main")
        ),
        queues="export.postgres,export.elasticsearch",
        log_dir=var_dir,
        name="export-worker",
    ).start()
    yield process
    process.stop()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed and "pipeline" in item.fixturenames:
        worker = item.funcargs["pipeline"]
        report.sections.append(("export worker log (last 200 lines)", "\n".join(worker.log().splitlines()[-200:])))
    return report


@pytest.fixture
def pipeline(transactional_db, worker, settings):
    """A running worker, a clean hook table and this process's exporter settings cache emptied."""
    settings.TELEMETRY_EXPORTER_SETTINGS_TTL = 1.0
    worker.ensure_running()
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {HOOK_TABLE}")
    selectors.exporter_configs_forget()
    yield worker
    # A task the test left behind (a retry waiting for its countdown, say) would otherwise run
    # during the next test, against that test's exporter settings and stores.
    if not wait_until(lambda: broker_idle(settings.CELERY_BROKER_URL), timeout=2.0):
        worker.kill()
        _flush_broker_db(settings.CELERY_BROKER_URL)
    selectors.exporter_configs_forget()


def broker_idle(url: str) -> bool:
    """Whether every export queue is empty and the worker holds no message it has not acknowledged."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        queued = sum(client.llen(queue) for queue in client.scan_iter(match="export.*", _type="list"))
        return not queued and not client.hlen("unacked")
    finally:
        client.close()


@pytest.fixture
def direct_exporters(transactional_db, settings):
    """In-process export, with the same after-insert hook as the workers."""
    settings.TELEMETRY_POSTGRES_AFTER_INSERT = [HOOK_PATH]
    settings.TELEMETRY_EXPORTER_SETTINGS_TTL = 1.0
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {HOOK_TABLE} (id varchar(64) NOT NULL)")
        cursor.execute(f"DELETE FROM {HOOK_TABLE}")
    from telemetry.exporters import exporters

    exporters.close_all()
    selectors.exporter_configs_forget()
    yield
    exporters.close_all()
    selectors.exporter_configs_forget()


class RedisServer:
    """A private redis-server with an append-only file, so that a restart keeps queued batches."""

    def __init__(self, directory: Path):
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self._answers, timeout=10, what="redis-server")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def _answers(self) -> bool:
        import redis

        try:
            return redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
        except redis.ConnectionError:
            return False


@pytest.fixture
def private_redis(var_dir):
    directory = var_dir / f"redis-{uuid.uuid4().hex[:6]}"
    directory.mkdir()
    server = RedisServer(directory).start()
    yield server
    server.stop()


@pytest.fixture
def publish_to():
    """Point this process's Celery publishing at another broker for one test."""
    from gateway_project.celery import app

    original = app.conf.broker_url

    def switch(url: str) -> None:
        app.conf.broker_url = url
        # Pools are built from the broker URL on first use; dropping them makes the next publish use `url`.
        app._pool = None
        app.amqp._producer_pool = None

    yield switch
    switch(original)


@pytest.fixture
def locked_log_table(test_database_url):
    """A separate connection able to hold a lock on the log table while a worker writes."""
    conn = psycopg.connect(test_database_url.replace("postgres://", "postgresql://"))
    yield conn
    conn.rollback()
    conn.close()
