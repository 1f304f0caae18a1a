"""Export throughput: records/s of the Postgres and Elasticsearch exporters on one process.

    createdb -h 127.0.0.1 -U postgres telemetry_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/telemetry_bench .venv/bin/python bench/export_bench.py

Generates realistic request-log documents (2-4 KB each, 1 in 5 streamed), then times
`export()` batch after batch: (a) the Postgres exporter against DATABASE_URL (migrated
and emptied first; never point this at a database you care about): without after-insert
hooks, with a trivial one (the cost of the new-rows table) and with the dashboards'
rollup hook; (b) the Elasticsearch exporter bulk-indexing into a local osmem-server,
with and without the companion search documents. "Exporter CPU" is this process's own
time per record; the rest of the wall time is the store's.
"""

from __future__ import annotations

import argparse
import os
import random
import string
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

import django  # noqa: E402

django.setup()

import orjson  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from telemetry.exporters.elasticsearch import ElasticsearchExporter  # noqa: E402
from telemetry.exporters.postgres import PostgresExporter  # noqa: E402
from telemetry.models import RequestLog  # noqa: E402
from telemetry.record import RequestRecord  # noqa: E402

WORDS = ["".join(random.choices(string.ascii_lowercase, k=random.randint(2, 9))) for _ in range(2000)]
MODELS = [
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4.1"),
    ("anthropic", "claude-sonnet-4-5"),
    ("groq", "llama-3.1-8b-instant"),
]


def prose(size: int) -> str:
    words, length = [], 0
    while length < size:
        word = random.choice(WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)


def make_document(index: int, start: datetime) -> dict:
    provider, model = random.choice(MODELS)
    record = RequestRecord(path="/v1/chat/completions", method="POST")
    record.started_at = (start + timedelta(milliseconds=index * 3)).timestamp()
    record.org_id = f"org-{index % 20}"
    record.project_id = f"project-{index % 50}"
    record.project_name = "Project"
    record.user_id = f"user-{index % 1000}"
    record.thread_id = f"thread-{index % 5000}"
    record.trace_id = os.urandom(16).hex()
    record.span_id = os.urandom(8).hex()
    record.model = model
    record.request_json = {
        "model": model,
        "temperature": 0.7,
        "messages": [
            {"role": "system", "content": prose(random.randint(150, 400))},
            {"role": "user", "content": prose(random.randint(400, 1200))},
        ],
    }
    record.request_body = orjson.dumps(record.request_json)
    streamed = index % 5 == 0
    # A streamed answer is stored twice (accumulated and as chunks), so it is kept shorter.
    answer = prose(random.randint(250, 550) if streamed else random.randint(500, 1300))
    if streamed:
        record.stream = True
        record.stream_dialect = "openai"
        record.stream_events = []
        for position in range(0, len(answer), 200):
            delta = {"index": 0, "delta": {"content": answer[position : position + 200]}, "finish_reason": None}
            chunk = {"id": "chatcmpl-b", "object": "chat.completion.chunk", "model": model, "choices": [delta]}
            record.stream_events.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
        record.input_tokens, record.output_tokens = random.randint(100, 800), random.randint(50, 400)
    else:
        record.response_json = {
            "id": f"chatcmpl-{index}",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": random.randint(100, 800), "completion_tokens": random.randint(50, 400)},
        }
    record.response_size = len(answer) + 300
    record.provider_status_code = 200
    record.provider_latency_ms = random.uniform(100, 3000)
    record.finish(200 if random.random() > 0.03 else 502)
    record.latency_ms = record.provider_latency_ms + random.uniform(1, 5)
    document = record.to_document()  # no provider set: pricing (a database read) is skipped...
    attributes = document["attributes"]
    attributes["provider"] = provider  # ...and filled in here as the gateway would have
    attributes["metadata"]["cost"] = round(random.uniform(0.00001, 0.05), 8)
    return document


def timed_export(exporter, docs: list[dict], batch_size: int) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) to export the documents batch by batch."""
    started, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(docs), batch_size):
        result = exporter.export(docs[start : start + batch_size])
        if result.failed or result.retry:
            raise SystemExit(f"export failed: {result.transient_error or next(iter(result.failed.values()))}")
    return time.perf_counter() - started, time.process_time() - cpu


def count_new_rows(cursor, table: str) -> None:
    """The cheapest after-insert hook: measures what the new-rows table itself costs."""
    cursor.execute(f"SELECT count(*) FROM {table}")


def report(label: str, count: int, timing: tuple[float, float], batch_size: int | None = None) -> None:
    elapsed, cpu = timing
    batch = f", batch {batch_size}" if batch_size else ""
    print(
        f"{label:<62} {count / elapsed:>8,.0f} records/s  "
        f"({count:,} in {elapsed:.2f} s{batch}; exporter CPU {cpu / count * 1e6:.0f} us/record)"
    )


def bench_postgres(docs: list[dict], batch_size: int, hook: str | None) -> None:
    if connection.vendor != "postgresql":
        print("postgres: skipped (DATABASE_URL is not PostgreSQL)")
        return
    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {RequestLog._meta.db_table}")
        cursor.execute("CHECKPOINT")
    exporter = PostgresExporter("postgres", after_insert=[hook] if hook else [])
    label = f"postgres + hook {hook.removeprefix('__main__.')}" if hook else "postgres"
    try:
        timing = timed_export(exporter, docs, batch_size)
    except SystemExit as exc:
        print(f"{label}: {exc}")
        return
    report(label, len(docs), timing, batch_size)
    assert RequestLog.objects.count() == len(docs)
    # The same records again, as a retried batch: every one is a conflict, skipped.
    again = docs[: batch_size * 10]
    report(f"{label}, retried (all stored already)", len(again), timed_export(exporter, again, batch_size))


def bench_elasticsearch(docs: list[dict], batch_size: int, search_text: bool) -> None:
    from osmem_server import OsmemServer

    server = OsmemServer.start(freeze=False, japanese=False)
    try:
        exporter = ElasticsearchExporter(
            "elasticsearch", url=server.url, plain_json=True, batch_size=batch_size, search_text=search_text
        )
        timing = timed_export(exporter, docs, batch_size)
        label = "elasticsearch (osmem)" + (", with search documents" if search_text else ", records only")
        report(label, len(docs), timing, batch_size)
        exporter.shutdown()
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--pg-batch", type=int, default=1000)
    parser.add_argument("--es-batch", type=int, default=500)
    parser.add_argument(
        "--es-records", type=int, default=10_000, help="osmem is an in-memory test server, slow to index"
    )
    parser.add_argument("--skip-es", action="store_true")
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument(
        "--hook",
        default="dashboards.rollups.apply_new_rows",
        help="after-insert hook for the second Postgres run ('' to skip that run)",
    )
    args = parser.parse_args()

    import logging

    logging.getLogger("elastic_transport").setLevel(logging.WARNING)
    random.seed(7)
    start = datetime.now(UTC) - timedelta(hours=2)
    began = time.perf_counter()
    docs = [make_document(index, start) for index in range(args.records)]
    sizes = sorted(len(orjson.dumps(doc)) for doc in docs)
    print(
        f"{len(docs):,} documents built in {time.perf_counter() - began:.1f} s; size min {sizes[0]:,} B, "
        f"median {sizes[len(sizes) // 2]:,} B, max {sizes[-1]:,} B"
    )
    if not args.skip_pg:
        bench_postgres(docs, args.pg_batch, hook=None)
        bench_postgres(docs, args.pg_batch, hook="__main__.count_new_rows")
        if args.hook:
            bench_postgres(docs, args.pg_batch, hook=args.hook)
    if not args.skip_es:
        es_docs = docs[: args.es_records]
        bench_elasticsearch(es_docs, args.es_batch, search_text=False)
        bench_elasticsearch(es_docs, args.es_batch, search_text=True)


if __name__ == "__main__":
    main()
