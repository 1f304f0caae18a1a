"""Handing request records from the web process to the durable queue.

`pipeline.submit(record)` is all a request pays: one line written to the local journal
(telemetry.journal, no fsync) before the response goes out. A flusher task on the event loop
wakes every TELEMETRY_FLUSH_INTERVAL and, from a worker thread so that neither the JSON work nor
the broker round trip blocks the loop, seals the journal's active segment, turns its records into
documents, publishes them and deletes the segment once the broker has taken them. If the broker
is down, sealed segments are fsynced and wait on disk (the first TELEMETRY_LOCAL_BUFFER_MAX documents in memory
as well) and go out when it is back. Segments a stopped or killed process left are shipped by the
next process to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path

from django.conf import settings
from django.db import connections
from django.utils.module_loading import import_string

from telemetry import chunking, metrics
from telemetry.journal import Journal, Segment
from telemetry.record import RequestRecord

logger = logging.getLogger(__name__)


class CeleryPublisher:
    """Sends each batch to the exporters' Celery queues."""

    # The hand-off's JSON of each document goes into the task messages as it is.
    takes_encoded = True

    def publish(self, documents: list[dict], encoded: list[bytes] | None = None) -> None:
        from telemetry.tasks import enqueue_batch

        try:
            enqueue_batch(documents, encoded)
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


# Called once with every finished record and the document it is logged as (budgets settle by them).
_logged_listeners: list = []


def on_record_logged(listener) -> None:
    """Call `listener(record, document)` once per finished record; it must be quick.

    On the hand-off thread with the record's document once it is built, which is where its cost
    is worked out; on the submitting thread with None when no document will be built (telemetry
    off, the local buffer full). A document that cannot be built also comes as None.
    """
    _logged_listeners.append(listener)


def _logged(record: RequestRecord, document: dict | None) -> None:
    for listener in _logged_listeners:
        try:
            listener(record, document)
        except Exception:  # a listener's failure must never cost the record
            logger.exception("telemetry: a logged-record listener failed for %s", record.id)
    _end_trace(record, document)


class HandoffPipeline:
    # How often a running process looks for segments of processes that died meanwhile (a sibling worker).
    TAKE_OVER_EVERY = 10.0

    def __init__(self):
        self._shipping: deque[Segment] = deque()
        self._flusher: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="telemetry-handoff")
        self._failing = False
        self._ship_now = False
        self._looked_for_dead_at = float("-inf")

    @cached_property
    def publisher(self):
        return import_string(settings.TELEMETRY_PUBLISHER)()

    @cached_property
    def journal(self) -> Journal:
        root = Path(settings.GATEWAY_JOURNAL_DIR) if settings.GATEWAY_JOURNAL_ENABLED else None
        return Journal(root, max_bytes=settings.GATEWAY_JOURNAL_MAX_BYTES)

    @property
    def backlog(self) -> int:
        """Records not yet handed off (those of a dead process's segments count once they are read)."""
        # A copy: the hand-off thread may change the queue meanwhile, and list() copies it in one step.
        return self.journal.pending + sum(segment.count for segment in list(self._shipping))

    def _has_work(self) -> bool:
        return bool(self.journal.pending or self._shipping)

    def submit(self, record: RequestRecord) -> None:
        if not settings.TELEMETRY_ENABLED:
            _logged(record, None)
            return
        if self.journal.pending >= settings.TELEMETRY_LOCAL_BUFFER_MAX:
            metrics.TELEMETRY_RECORDS_DROPPED.labels("local_buffer_full").inc()
            logger.error("telemetry: local buffer full, dropped request record %s", record.id)
            _logged(record, None)
            return
        self.journal.append(record)
        self._ensure_flusher()

    def start(self) -> None:
        """At start-up: take over what processes that are gone left in the journal, to ship it."""
        if settings.TELEMETRY_ENABLED and self.journal.enabled:
            with self._lock:
                self._take_over_dead()

    def _take_over_dead(self) -> bool:
        self._looked_for_dead_at = time.monotonic()
        try:
            found = self.journal.take_over_dead()
        except OSError:
            logger.exception("telemetry: cannot look for journal segments left by stopped processes")
            return False
        self._shipping.extend(found)
        return bool(found)

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
        while self._has_work():
            if self._ship_now:  # what a dead process left goes out at once, not an interval later
                self._ship_now = False
            else:
                await asyncio.sleep(max(interval, 1.0) if self._failing else interval)
            await self._in_flush_thread(self.flush_sync)

    def flush_sync(self) -> int:
        """Finalise pending records and publish what waits; returns how many records were published."""
        with self._lock:
            return self._flush_locked()

    def _flush_locked(self) -> int:
        journal = self.journal
        for segment in journal.seal():
            segment.documents, segment.encoded = self._documents(segment.records, observe=True)
            segment.records = None
            self._shipping.append(segment)
        journal.report_dropped()
        if journal.enabled and time.monotonic() - self._looked_for_dead_at > self.TAKE_OVER_EVERY:
            self._take_over_dead()
        published = 0
        while self._shipping:
            batch = self._next_batch()
            documents = [document for segment in batch for document in segment.documents]
            encoded = [data for segment in batch for data in segment.encoded]
            try:
                if documents:
                    chunking.publish_in_chunks(self.publisher, documents, encoded)
            except Exception:
                logger.warning("telemetry: publish failed, %d records kept locally", self.backlog, exc_info=True)
                self._failing = True
                self._hold_in_memory()
                break
            self._failing = False
            for segment in batch:
                self._shipping.popleft()
                journal.delete(segment)
            published += len(documents)
        for segment in self._shipping:  # waiting for the broker: on disk now, not at the kernel's leisure
            journal.sync(segment)
        metrics.TELEMETRY_HANDOFF_BACKLOG.set(self.backlog)
        metrics.TELEMETRY_JOURNAL_BYTES.set(journal.size)
        return published

    def _next_batch(self) -> list[Segment]:
        """Segments from the head of the queue, read from disk where needed, up to a publish's worth."""
        batch, count = [], 0
        for segment in self._shipping:
            if batch and count + segment.count > _PUBLISH_MAX:
                break
            if segment.documents is None:
                segment.documents, segment.encoded = self._documents(self.journal.read(segment), observe=False)
            batch.append(segment)
            count += segment.count
            if count >= _PUBLISH_MAX:
                break
        return batch

    def _documents(self, records: list[RequestRecord], *, observe: bool) -> tuple[list[dict], list[bytes]]:
        """Each record's document and its JSON, encoded once here for the chunking and the publish."""
        documents, encoded = [], []
        for record in records:
            try:
                document, data = record.to_encoded_document()
            except Exception:
                logger.exception("telemetry: could not build the document for request %s", record.id)
                metrics.TELEMETRY_RECORDS_DROPPED.labels("unserialisable").inc()
                if observe:
                    _logged(record, None)
                continue
            if observe:  # a replayed record was observed (and settled) by the process that served it
                metrics.observe_request(document)
                _logged(record, document)
            documents.append(document)
            encoded.append(data)
        return documents, encoded

    def _hold_in_memory(self) -> None:
        """Keep up to TELEMETRY_LOCAL_BUFFER_MAX documents in memory; the rest are read again from disk."""
        held = 0
        limit = settings.TELEMETRY_LOCAL_BUFFER_MAX
        for segment in list(self._shipping):
            if segment.documents is None:
                continue
            if held + segment.count <= limit:
                held += segment.count
            elif segment.path is not None:
                segment.documents = segment.encoded = None
            else:  # no journal: memory is all there is
                self._shipping.remove(segment)
                metrics.TELEMETRY_RECORDS_DROPPED.labels("local_buffer_full").inc(segment.count)
                logger.error("telemetry: local buffer full, dropped %d request records", segment.count)

    async def _in_flush_thread(self, fn):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def aflush(self) -> int:
        return await self._in_flush_thread(self.flush_sync)

    async def astart(self) -> None:
        await self._in_flush_thread(self.start)
        if self._has_work():
            self._ship_now = True
            self._ensure_flusher()

    async def aclose(self) -> None:
        """Stop the flusher and publish what is left (graceful shutdown); what the broker refuses stays on disk."""
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self._flusher = None
        await self.aflush()
        await self._in_flush_thread(self.journal.close)
        # Price overrides are read from the flush thread; close its database connection with it.
        await self._in_flush_thread(connections.close_all)


def _end_trace(record: RequestRecord, document: dict | None) -> None:
    """End a sampled request's spans (see proxy/tracing.py); tracing never costs a request its record."""
    trace = record.trace
    if trace is None:
        return
    record.trace = None
    try:
        trace.end(record, document)
    except Exception:
        logger.exception("tracing: could not end the spans of request %s", record.id)


_PUBLISH_MAX = 5000
"""At most this many records in one publish when segments have piled up (the exporters split it further)."""


pipeline = HandoffPipeline()
