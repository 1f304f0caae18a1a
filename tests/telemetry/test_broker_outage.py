"""Redis, the broker, goes away and comes back: the export worker reconnects by itself and nothing is lost."""

from __future__ import annotations

import threading
import time

from django.db import connection

from telemetry.handoff import CeleryPublisher
from telemetry.tasks import enqueue_batch
from tests.telemetry.conftest import (
    Worker,
    configure_exporters,
    documents,
    ids_of,
    pg_has_exactly,
    requires_postgres,
    requires_redis,
    wait_for,
    worker_env,
)
from tests.telemetry.hooks import HOOK_TABLE

pytestmark = [requires_postgres, requires_redis]


def test_the_worker_outlives_a_broker_restart_and_consumes_again(
    transactional_db, private_redis, publish_to, test_database_url, var_dir
):
    configure_exporters(batch_size=20)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {HOOK_TABLE}")
    publish_to(private_redis.url)
    worker = Worker(
        env=worker_env(
            broker_url=private_redis.url,
            database_url=test_database_url,
            var_dir=str(var_dir / "drop"),
            CELERY_WORKER_PREFETCH_MULTIPLIER="4",
        ),
        queues="export.postgres",
        log_dir=var_dir,
        name="broker-drop-worker",
    ).start()
    # Batches keep coming, so that the connection goes while the worker holds unacknowledged ones
    # (acks_late): closing its channel then is what made the worker exit.
    sent: list[dict] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            batch = documents(40)
            if _publishes(batch):
                sent.extend(batch)
            time.sleep(0.1)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        wait_for(lambda: worker.log().count(" received") > 10, what="the worker to take batches")
        private_redis.stop()
        wait_for(lambda: "Connection to broker lost" in worker.log(), what="the worker to notice")
        time.sleep(3)  # reconnection attempts against a closed port
        assert worker.process.poll() is None, f"the worker exited:\n{worker.log()[-4000:]}"
        connected = worker.log().count("Connected to")
        private_redis.start()
        wait_for(
            lambda: worker.log().count("Connected to") > connected or worker.process.poll() is not None,
            timeout=60,
            what="the worker to reconnect",
        )
        time.sleep(1)
        stop.set()
        sender.join()
        wait_for(lambda: pg_has_exactly(ids_of(sent)), timeout=90, what="every record once, held batches included")
        assert worker.process.poll() is None, f"the worker exited:\n{worker.log()[-4000:]}"
    finally:
        stop.set()
        sender.join()
        worker.stop()


def _publishes(docs: list[dict]) -> bool:
    try:
        enqueue_batch(docs)
    except Exception:  # noqa: BLE001 - the broker is away or still starting
        CeleryPublisher.reset_connections()
        return False
    return True
