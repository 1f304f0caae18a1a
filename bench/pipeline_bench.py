"""Request-to-searchable lag: how long after a response its log can be found in Postgres and Elasticsearch.

    python bench/pipeline_bench.py [--rate 500] [--seconds 20]

Runs the whole pipeline on this machine: a local upstream, the gateway (one
uvicorn worker), a Celery worker per exporter, Redis, Postgres
(BENCH_DATABASE_URL, default database `tollgate_bench`, emptied first) and osmem-server as the
Elasticsearch-compatible store. Sends plain chat completions at a fixed rate
(open loop: a slow gateway does not slow the sender), then polls both stores
for the returned `x-request-id`s and prints the lag percentiles and anything
missing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import psycopg
from osmem_server import OsmemServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proxy_bench import CHAT_BODY, ROOT, Stack, wait_for_port

PYTHON = sys.executable


def ensure_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


class Poller:
    """Finds when each request id first becomes visible in each store."""

    def __init__(self, database_url: str, es_url: str, index: str):
        self.database_url = database_url
        self.es_url = es_url
        self.index = index
        self.completed: dict[str, float] = {}
        self.seen = {"postgres": {}, "elasticsearch": {}}
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def pending(self, store: str) -> list[str]:
        with self.lock:
            return [rid for rid in self.completed if rid not in self.seen[store]]

    def mark(self, store: str, ids) -> None:
        now = time.monotonic()
        with self.lock:
            for rid in ids:
                self.seen[store].setdefault(rid, now)

    def poll_postgres(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            while not self.stop.is_set():
                ids = self.pending("postgres")
                if ids:
                    rows = conn.execute("SELECT id FROM ai_gateway_request_logs WHERE id = ANY(%s)", (ids,)).fetchall()
                    self.mark("postgres", (row[0] for row in rows))
                time.sleep(0.05)

    async def poll_elasticsearch(self) -> None:
        async with aiohttp.ClientSession() as session:
            while not self.stop.is_set():
                ids = self.pending("elasticsearch")
                for start in range(0, len(ids), 1000):
                    query = {"size": 1000, "_source": False, "query": {"ids": {"values": ids[start : start + 1000]}}}
                    async with session.post(f"{self.es_url}/{self.index}-*/_search", json=query) as response:
                        if response.status == 200:
                            hits = (await response.json())["hits"]["hits"]
                            self.mark("elasticsearch", (hit["_id"] for hit in hits))
                await asyncio.sleep(0.05)

    def lags(self, store: str) -> list[float]:
        return [
            (self.seen[store][rid] - done) * 1000 for rid, done in self.completed.items() if rid in self.seen[store]
        ]


async def send_at_rate(url: str, key: str, rate: int, seconds: int, poller: Poller) -> int:
    errors = 0
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one():
            nonlocal errors
            try:
                async with session.post(url, json=CHAT_BODY, headers={"Authorization": f"Bearer {key}"}) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                    with poller.lock:
                        poller.completed[response.headers["x-request-id"]] = time.monotonic()
            except aiohttp.ClientError:
                errors += 1

        started = time.monotonic()
        tasks = []
        for n in range(rate * seconds):
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return errors


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 10) - 1] if len(values) > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--settle", type=float, default=15.0, help="seconds to wait for stragglers")
    parser.add_argument("--no-search-text", action="store_true", help="index records only, no search documents")
    args = parser.parse_args()

    # The benchmark empties this database first, so it has a variable of its own.
    database_url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tollgate_bench")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/9")
    ensure_database(database_url)
    osmem = OsmemServer.start()
    index = "ai-gateway-metrics-bench"
    os.environ.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        ELASTICSEARCH_URL=osmem.url,
        ENABLE_ELASTICSEARCH="true",
        ELASTICSEARCH_PLAIN_JSON="true",
        ELASTICSEARCH_INDEX=index,
        ELASTICSEARCH_SEARCH_TEXT="false" if args.no_search_text else "true",
    )
    subprocess.run(["redis-cli", "-u", redis_url, "flushdb"], check=True, stdout=subprocess.DEVNULL)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS ai_gateway_request_logs CASCADE")
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    stack = Stack(telemetry=True).start()
    # One worker process per exporter queue, so that each store is fed independently of the other's pace.
    workers = [
        subprocess.Popen(
            [PYTHON, "-m", "celery", "-A", "gateway_project", "worker", "-Q", queue, "-c", "1", "-l", "WARNING",
             "-n", f"{queue}@%h"],
            cwd=ROOT,
            env=stack.env,
        )
        for queue in ("export.postgres", "export.elasticsearch")
    ]  # fmt: skip
    poller = Poller(database_url, osmem.url, index)
    pg_thread = threading.Thread(target=poller.poll_postgres, daemon=True)
    es_thread = threading.Thread(target=lambda: asyncio.run(poller.poll_elasticsearch()), daemon=True)
    try:
        wait_for_port(stack.gateway_port)
        time.sleep(3)  # the worker connects and installs the index template
        pg_thread.start()
        es_thread.start()
        errors = asyncio.run(send_at_rate(stack.gateway_url, stack.key, args.rate, args.seconds, poller))
        deadline = time.monotonic() + args.settle
        while time.monotonic() < deadline and (poller.pending("postgres") or poller.pending("elasticsearch")):
            time.sleep(0.2)
    finally:
        poller.stop.set()
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
        stack.stop()
        osmem.close()

    sent = len(poller.completed)
    print(f"\nsent {sent} requests at {args.rate} req/s for {args.seconds} s, {errors} errors")
    print(f"{'store':14} {'found':>8} {'missing':>8} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    for store in ("postgres", "elasticsearch"):
        lags = poller.lags(store)
        print(
            f"{store:14} {len(lags):8d} {sent - len(lags):8d} {percentile(lags, 50):9.0f} "
            f"{percentile(lags, 95):9.0f} {percentile(lags, 99):9.0f} {max(lags, default=float('nan')):9.0f}"
        )


if __name__ == "__main__":
    main()
