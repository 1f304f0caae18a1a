"""Handing request records from the web process to the durable queue.

`pipeline.submit(record)` is all a request pays: an append to a deque. A flusher
task on the event loop wakes every TELEMETRY_FLUSH_INTERVAL, turns the batch into
documents and publishes it from a worker thread, so neither the JSON work nor
the broker round trip blocks the loop. If the broker is down, documents wait
in a bounded local buffer and go out when it is back; whatever the bound
forces out is counted in `telemetry_records_dropped_total` and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property

from django.conf import settings
from django.db import connections
from django.utils.module_loading import import_string

from telemetry import chunking, metrics
from telemetry.record import RequestRecord

logger = logging.getLogger(__name__)


class CeleryPublisher:
    """Sends each batch to the exporters' Celery queues."""

    def publish(self, documents: list[dict]) -> None:
        from telemetry.tasks import enqueue_batch

        try:
            enqueue_batch(documents)
        except Exception:
            self.reset_connections()
            raise

    @staticmethod
    def reset_connections() -> None:
        """Drop pooled broker connections, so the next publish after an outage starts from fresh ones."""
        from kombu import pools

        from gateway_project.celery import app

        # kombu keeps its pools in process-wide registries keyed by broker URL: clear those too,
        # or the app would be handed the same (now closed) pool again.
        pools.reset()
        app._pool = None
        app.amqp._producer_pool = None


class MemoryPublisher:
    """Keeps documents in this process: for embedding the gateway in tests and tools."""

    published: list[dict] = []

    def publish(self, documents: list[dict]) -> None:
        type(self).published.extend(documents)


class HandoffPipeline:
    def __init__(self):
        self._records: deque[RequestRecord] = deque()
        self._unsent: deque[dict] = deque()
        self._flusher: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="telemetry-handoff")

    @cached_property
    def publisher(self):
        return import_string(settings.TELEMETRY_PUBLISHER)()

    @property
    def backlog(self) -> int:
        return len(self._records) + len(self._unsent)

    def submit(self, record: RequestRecord) -> None:
        if not settings.TELEMETRY_ENABLED:
            return
        if self.backlog >= settings.TELEMETRY_LOCAL_BUFFER_MAX:
            metrics.TELEMETRY_RECORDS_DROPPED.labels("local_buffer_full").inc()
            logger.error("telemetry: local buffer full, dropped request record %s", record.id)
            return
        self._records.append(record)
        self._ensure_flusher()

    def _ensure_flusher(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside an event loop: hand off right away
            self.flush_sync()
            return
        if self._flusher is None or self._flusher.done() or self._loop is not loop:
            self._loop = loop
            self._flusher = loop.create_task(self._run(), name="telemetry-handoff")

    async def _run(self) -> None:
        # Runs while there is something to send, so an idle process (or a closed test loop) holds no task.
        interval = settings.TELEMETRY_FLUSH_INTERVAL
        while self.backlog:
            await asyncio.sleep(interval if not self._unsent else max(interval, 1.0))
            await self._in_flush_thread(self.flush_sync)

    def flush_sync(self) -> int:
        """Finalise pending records and publish them; returns how many were published."""
        with self._lock:
            return self._flush_locked()

    def _flush_locked(self) -> int:
        batch = []
        while self._records:
            batch.append(self._records.popleft())
        for record in batch:
            try:
                document = record.to_document()
                metrics.observe_request(document)
                self._unsent.append(document)
            except Exception:
                logger.exception("telemetry: could not build the document for request %s", record.id)
                metrics.TELEMETRY_RECORDS_DROPPED.labels("unserialisable").inc()
        if not self._unsent:
            return 0
        documents = list(self._unsent)
        try:
            chunking.publish_in_chunks(self.publisher, documents)
        except Exception:
            logger.warning("telemetry: publish failed, %d records kept locally", len(documents), exc_info=True)
            self._trim_unsent()
            metrics.TELEMETRY_HANDOFF_BACKLOG.set(self.backlog)
            return 0
        for _ in documents:
            self._unsent.popleft()
        metrics.TELEMETRY_HANDOFF_BACKLOG.set(self.backlog)
        return len(documents)

    def _trim_unsent(self) -> None:
        overflow = len(self._unsent) - settings.TELEMETRY_LOCAL_BUFFER_MAX
        if overflow > 0:
            for _ in range(overflow):
                self._unsent.popleft()
            metrics.TELEMETRY_RECORDS_DROPPED.labels("local_buffer_full").inc(overflow)
            logger.error("telemetry: local buffer full, dropped %d request records", overflow)

    async def _in_flush_thread(self, fn):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def aflush(self) -> int:
        return await self._in_flush_thread(self.flush_sync)

    async def aclose(self) -> None:
        """Stop the flusher and publish what is left (graceful shutdown)."""
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self._flusher = None
        await self.aflush()
        # Price overrides are read from the flush thread; close its database connection with it.
        await self._in_flush_thread(connections.close_all)


pipeline = HandoffPipeline()
