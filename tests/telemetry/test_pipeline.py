"""The whole export path with real Celery workers: records survive store, broker and worker failures.

Every check polls with a deadline; "exactly once" means every record is in the store, none twice,
and (for PostgreSQL) the after-insert hook saw each row as new exactly once.
"""

from __future__ import annotations

import asyncio
import copy
import time

from django.conf import settings
from django.db import connection
from osmem_server import OsmemServer
from prometheus_client import REGISTRY

from telemetry import services
from telemetry.handoff import HandoffPipeline
from telemetry.models import DeadLetter, ExporterSetting, RequestLog
from telemetry.tasks import enqueue_batch
from tests.telemetry.conftest import (
    Worker,
    broker_idle,
    configure_exporters,
    documents,
    es_has_exactly,
    es_hits,
    ids_of,
    pg_has_exactly,
    pg_ids,
    plain_record,
    requires_postgres,
    requires_redis,
    streaming_record,
    wait_for,
    worker_env,
)

pytestmark = [requires_postgres, requires_redis]


def enqueue_in_batches(docs: list[dict], size: int = 50) -> None:
    for start in range(0, len(docs), size):
        enqueue_batch(docs[start : start + size])


def test_worker_exports_the_exact_documents(pipeline, osmem_clone):
    configure_exporters(es_url=osmem_clone.url)
    plain = plain_record(provider="openai").to_document()
    streamed = streaming_record().to_document()

    enqueue_batch([plain, streamed])

    ids = ids_of([plain, streamed])
    wait_for(lambda: pg_has_exactly(ids) and es_has_exactly(osmem_clone.url, ids), what="both records in both stores")
    hits = es_hits(osmem_clone.url, ids)
    for document in (plain, streamed):
        assert RequestLog.objects.get(pk=document["attributes"]["id"]).log_data == document
        assert hits[document["attributes"]["id"]] == [document]


def test_worker_exports_documents_published_as_the_handoffs_json(pipeline, osmem_clone):
    configure_exporters(es_url=osmem_clone.url)
    pairs = [plain_record(provider="openai").to_encoded_document(), streaming_record().to_encoded_document()]
    docs = [document for document, _ in pairs]

    enqueue_batch(docs, [encoded for _, encoded in pairs])

    ids = ids_of(docs)
    wait_for(lambda: pg_has_exactly(ids) and es_has_exactly(osmem_clone.url, ids), what="both records in both stores")
    hits = es_hits(osmem_clone.url, ids)
    for document in docs:
        assert RequestLog.objects.get(pk=document["attributes"]["id"]).log_data == document
        assert hits[document["attributes"]["id"]] == [document]


def test_task_bodies_published_as_text_before_are_still_read():
    # Messages queued by a version that published the orjson body as text, read after an upgrade.
    from kombu.serialization import dumps, loads

    body = (("postgres", [{"attributes": {"id": "a"}}]), {}, {})
    content_type, content_encoding, data = dumps(body, serializer="orjson")

    assert (content_type, content_encoding) == ("application/x-orjson", "binary")
    assert isinstance(data, bytes)
    as_text = data.decode()
    assert loads(as_text, content_type, "utf-8") == loads(data, content_type, content_encoding)
    assert loads(data, content_type, content_encoding) == [["postgres", [{"attributes": {"id": "a"}}]], {}, {}]


def test_a_batch_enqueued_twice_is_stored_once(pipeline, osmem_clone):
    configure_exporters(es_url=osmem_clone.url)
    batch = documents(40)

    enqueue_batch(batch)
    enqueue_batch(batch)

    ids = ids_of(batch)
    wait_for(lambda: pg_has_exactly(ids) and es_has_exactly(osmem_clone.url, ids), what="one copy of each record")
    # Both tasks of each exporter have run (none queued, none held by the worker) and still one copy each.
    wait_for(lambda: broker_idle(settings.CELERY_BROKER_URL), what="the worker to finish both tasks")
    assert pg_has_exactly(ids) and es_has_exactly(osmem_clone.url, ids)


def test_each_exporter_gets_its_own_queue_and_its_backlog_is_measured(pipeline):
    from telemetry import selectors

    configure_exporters()
    # A new exporter is a class and a settings row; no worker serves its queue in this test.
    ExporterSetting.objects.create(
        name="archive", backend="tests.telemetry.test_exporters.ListExporter", batch_size=10, options={"label": "cold"}
    )
    selectors.exporter_configs_forget()
    batch = documents(35)
    try:
        enqueue_batch(batch)
        assert selectors.export_queue_backlog(queue="export.archive") == 4
        wait_for(lambda: pg_has_exactly(ids_of(batch)), what="the postgres queue, served meanwhile")
    finally:
        import redis

        redis.Redis.from_url(settings.CELERY_BROKER_URL).delete("export.archive")


def test_poison_record_lands_in_dead_letters_and_the_rest_of_its_batch_is_stored(pipeline, osmem_clone):
    configure_exporters(es_url=osmem_clone.url)
    batch = documents(20)
    poison = copy.deepcopy(batch[7])
    poison["attributes"]["id"] = "poison" + poison["attributes"]["id"][6:]
    poison["attributes"]["metadata"]["latency"] = "slow"

    enqueue_batch([*batch, poison])

    good = ids_of(batch)
    wait_for(lambda: pg_has_exactly(good) and es_has_exactly(osmem_clone.url, good), what="the good records")
    wait_for(lambda: DeadLetter.objects.filter(record_id=poison["attributes"]["id"]).count() == 2, what="dead letters")
    assert not es_hits(osmem_clone.url, [poison["attributes"]["id"]])
    assert not pg_ids([poison["attributes"]["id"]])

    fixed = copy.deepcopy(poison)
    fixed["attributes"]["metadata"]["latency"] = 1500
    for letter in DeadLetter.objects.all():
        services.dead_letter_update_document(dead_letter=letter, document=fixed)
    assert services.dead_letter_retry(dead_letters=DeadLetter.objects.all()).exported == 2
    assert RequestLog.objects.get(pk=fixed["attributes"]["id"]).log_data == fixed
    assert es_hits(osmem_clone.url, [fixed["attributes"]["id"]])[fixed["attributes"]["id"]] == [fixed]


def test_records_sent_while_elasticsearch_is_down_are_stored_once_it_is_back(pipeline):
    server = OsmemServer.start(freeze=False)
    port = server.url.rsplit(":", 1)[1]
    try:
        configure_exporters(es_url=server.url)
        before = documents(60)
        enqueue_in_batches(before)
        wait_for(lambda: es_has_exactly(server.url, ids_of(before)), what="records before the outage")

        server.close()
        logged = len(pipeline.log())
        during = documents(150)
        enqueue_in_batches(during)
        wait_for(
            lambda: "export to elasticsearch failed" in pipeline.log()[logged:], what="the worker to meet the outage"
        )

        server = OsmemServer.start(freeze=False, addr=f"127.0.0.1:{port}")
        after = documents(40)
        enqueue_in_batches(after)

        ids = ids_of(during + after)
        wait_for(lambda: es_has_exactly(server.url, ids), timeout=60, what="every record once after the outage")
        wait_for(lambda: pg_has_exactly(ids_of(before + during + after)), what="every record in PostgreSQL")
    finally:
        server.close()


def test_records_sent_while_postgres_refuses_them_are_stored_once_it_is_back(pipeline, osmem_clone):
    configure_exporters(es_url=osmem_clone.url)
    table = settings.POSTGRES_LOG_TABLE
    before = documents(30)
    enqueue_batch(before)
    wait_for(lambda: pg_has_exactly(ids_of(before)), what="records before the outage")

    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_offline")
    logged = len(pipeline.log())
    try:
        during = documents(120)
        enqueue_in_batches(during)
        wait_for(lambda: "export to postgres failed" in pipeline.log()[logged:], what="the worker to meet the outage")
        # Elasticsearch is not held up by the other store's outage.
        wait_for(lambda: es_has_exactly(osmem_clone.url, ids_of(during)), what="records in Elasticsearch meanwhile")
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table}_offline RENAME TO {table}")

    after = documents(30)
    enqueue_batch(after)
    wait_for(lambda: pg_has_exactly(ids_of(before + during + after)), timeout=60, what="every record once")


def test_a_worker_killed_mid_batch_loses_and_duplicates_nothing(pipeline, locked_log_table):
    configure_exporters()
    batch = documents(300)
    # SHARE mode lets the worker create its staging table and COPY, then holds its INSERT:
    # the batch is half written, uncommitted, when the worker dies.
    locked_log_table.execute(f"LOCK TABLE {settings.POSTGRES_LOG_TABLE} IN SHARE MODE")

    enqueue_in_batches(batch, size=100)
    wait_for(_worker_waits_on_lock, what="the worker to be mid-batch")
    pipeline.kill()
    locked_log_table.rollback()
    assert not pg_ids(ids_of(batch))

    pipeline.start()
    wait_for(lambda: pg_has_exactly(ids_of(batch)), timeout=60, what="every record once after the restart")


def _worker_waits_on_lock() -> bool:
    # Asked on another connection than the lock's: statistics views stay frozen within a transaction.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE %s",
            ["%INSERT INTO%"],
        )
        return cursor.fetchone()[0] > 0


def test_an_exporter_setting_change_reaches_a_running_worker(pipeline, osmem_server):
    first, second = osmem_server.clone(), osmem_server.clone()
    try:
        configure_exporters(es_url=first.url)
        early = documents(20)
        enqueue_batch(early)
        wait_for(lambda: es_has_exactly(first.url, ids_of(early)), what="records in the first cluster")

        setting = ExporterSetting.objects.get(name="elasticsearch")
        services.exporter_setting_update(setting=setting, url=second.url)
        sent: list[dict] = []

        def next_batch_goes_to_second() -> bool:
            batch = documents(5)
            sent.extend(batch)
            enqueue_batch(batch)
            ids = ids_of(batch)
            wait_for(lambda: set(_clusters_holding(ids, first, second)) == set(ids), what="the batch to be exported")
            return set(es_hits(second.url, ids)) == set(ids)

        # Every pool process reads the settings again within the TTL; then all records go to the new cluster.
        wait_for(next_batch_goes_to_second, timeout=30, interval=0, what="records to reach the new cluster")
        holders = _clusters_holding(ids_of(sent), first, second)
        assert set(holders) == set(ids_of(sent))
        assert all(len(clusters) == 1 for clusters in holders.values()), "a record went to both clusters"
    finally:
        first.close()
        second.close()


def _clusters_holding(ids: list[str], *clusters) -> dict[str, list[str]]:
    holders: dict[str, list[str]] = {}
    for cluster in clusters:
        for rid, copies in es_hits(cluster.url, ids).items():
            holders.setdefault(rid, []).extend([cluster.url] * len(copies))
    return holders


def test_handoff_keeps_records_while_redis_is_down(
    transactional_db, settings, private_redis, publish_to, test_database_url, var_dir
):
    """Redis stops for a few seconds while requests keep coming: nothing is dropped or lost."""
    configure_exporters()
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE telemetry_test_hook_rows")
    # The hand-off thread reads the exporter settings once; it never needs the database afterwards.
    settings.TELEMETRY_EXPORTER_SETTINGS_TTL = 300.0
    from telemetry import selectors

    selectors.exporter_configs_forget()
    selectors.exporter_configs()
    publish_to(private_redis.url)
    worker = Worker(
        env=worker_env(broker_url=private_redis.url, database_url=test_database_url, var_dir=str(var_dir / "redis")),
        queues="export.postgres",
        log_dir=var_dir,
        name="redis-outage-worker",
    ).start()
    dropped = {reason: _dropped(reason) for reason in ("local_buffer_full", "unserialisable")}
    try:
        ids, held_back = asyncio.run(_traffic_through_an_outage(private_redis))
        # No supervisor: the same worker reconnects by itself.
        wait_for(lambda: pg_has_exactly(ids), timeout=60, what="every record once after the outage")
        assert worker.process.poll() is None, "the worker exited on the broker outage"
    finally:
        worker.stop()
    # The outage was real: the hand-off had to keep records while Redis was away.
    assert held_back > 100
    assert {reason: _dropped(reason) for reason in dropped} == dropped


async def _traffic_through_an_outage(redis_server) -> tuple[list[str], int]:
    """Five records every 50 ms for 6 s; Redis is down from 1 s to 5 s."""
    pipeline = HandoffPipeline()
    ids: list[str] = []
    held_back = 0
    for tick in range(120):
        for _ in range(5):
            record = plain_record()
            pipeline.submit(record)
            ids.append(record.id)
        if tick == 20:
            redis_server.stop()
        if tick == 100:
            redis_server.start()
        if 20 < tick < 100:
            held_back = max(held_back, pipeline.backlog)
        await asyncio.sleep(0.05)
    await pipeline.aclose()
    deadline = time.monotonic() + 30
    while pipeline.backlog:
        assert time.monotonic() < deadline, "the hand-off still holds records 30 s after Redis came back"
        await pipeline.aflush()
        await asyncio.sleep(0.2)
    return ids, held_back


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("telemetry_records_dropped_total", {"reason": reason}) or 0.0
