"""Moving request logs from the queue into the stores: one queue and one task per exporter.

`enqueue_batch` runs in the web process (called by the hand-off); `export_batch` runs in
the Celery workers and only delegates to `telemetry.services.batch_export`. A worker for
all exporters: `celery -A gateway_project worker -Q export.postgres,export.elasticsearch`.
"""

from __future__ import annotations

import dataclasses
import random
import time

import orjson
from celery import shared_task
from celery.result import EagerResult
from celery.signals import worker_process_shutdown
from django.conf import settings
from django.db import OperationalError

from telemetry import metrics, selectors, services
from telemetry.exporters import export_queue, exporters

_BACKLOG_EVERY = 5.0
_backlog_read_at: dict[str, float] = {}


def enqueue_batch(documents: list[dict], encoded: list[bytes] | None = None) -> None:
    """Publish the documents to every enabled exporter's queue, in tasks of its batch size.

    `encoded`, each document's JSON where the caller has it, goes into the task messages as
    it is (`orjson.Fragment`), so the documents are not encoded again for every exporter.
    Publishing never retries: with the broker down this raises at once, and the hand-off
    keeps the documents and calls again. Batches published before such a failure are
    then published twice, which is harmless: every exporter skips records it already has.
    """
    if not documents:
        return
    # A task run in this process (CELERY_TASK_ALWAYS_EAGER) is handed its arguments unencoded.
    if encoded is not None and not export_batch.app.conf.task_always_eager:
        documents = [orjson.Fragment(data) for data in encoded]
    for config in selectors.enabled_exporter_configs():
        size = max(config.batch_size, 1)
        for start in range(0, len(documents), size):
            batch = documents[start : start + size]
            result = export_batch.apply_async(
                args=(config.name, batch),
                queue=config.queue,
                retry=False,
                # What task events and logs show of the arguments, without a repr of every document.
                argsrepr=f"({config.name!r}, <{len(batch)} documents>)",
            )
            if isinstance(result, EagerResult):
                # Run in-process (CELERY_TASK_ALWAYS_EAGER): a failure goes back to the hand-off.
                result.maybe_throw()


@shared_task(bind=True, acks_late=True, max_retries=None, ignore_result=True)
def export_batch(self, exporter_name: str, documents: list[dict]) -> None:
    try:
        services.batch_export(exporter_name=exporter_name, documents=documents)
    except services.ExportRetry as exc:
        if self.request.is_eager:
            raise
        raise self.retry(
            args=(exporter_name, exc.documents),
            exc=exc,
            countdown=retry_countdown(self.request.retries),
            queue=export_queue(exporter_name),
        ) from exc
    finally:
        _report_backlog(export_queue(exporter_name))


@shared_task(
    name="telemetry.recompute_costs",
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=3,
)
def recompute_costs(recomputation_id: int) -> int:
    """Reprice the request logs of one `CostRecomputation`; returns how many costs changed."""
    from telemetry import recomputation

    return recomputation.cost_recomputation_run(recomputation_id=recomputation_id).changed


@shared_task(
    name="telemetry.maintain_log_partitions",
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=3,
)
def maintain_log_partitions() -> dict | None:
    """Beat, hourly: the request-log table's months ahead, retention, the default partition's rows."""
    report = services.log_partitions_maintain()
    return report and dataclasses.asdict(report)


def retry_countdown(retries: int) -> float:
    """Exponential backoff with jitter, capped: retries of many batches spread out."""
    ceiling = min(settings.TELEMETRY_EXPORT_RETRY_BACKOFF * 2**retries, settings.TELEMETRY_EXPORT_RETRY_BACKOFF_MAX)
    return random.uniform(ceiling / 2, ceiling)


def _report_backlog(queue: str) -> None:
    now = time.monotonic()
    if now - _backlog_read_at.get(queue, float("-inf")) < _BACKLOG_EVERY:
        return
    _backlog_read_at[queue] = now
    backlog = selectors.export_queue_backlog(queue=queue)
    if backlog is not None:
        metrics.TELEMETRY_EXPORT_BACKLOG.labels(queue).set(backlog)


@worker_process_shutdown.connect
def _close_exporters(**kwargs) -> None:
    exporters.close_all()
