"""When each gateway key was last used, written off the hot path.

A request only notes its key id in a set. A task on the event loop writes the noted
keys' `last_used_at` in one UPDATE on the database thread, and each key is noted at
most once per GATEWAY_KEY_LAST_USED_INTERVAL, so a busy key costs one write a minute.
"""

from __future__ import annotations

import asyncio
import logging
import time

from django.conf import settings
from django.utils import timezone

from proxy.db import run_in_db_thread

logger = logging.getLogger(__name__)

_MAX_TRACKED_KEYS = 100_000


def _mark_used(key_ids: list[int], at) -> None:
    from proxy.models import GatewayKey

    GatewayKey.objects.filter(pk__in=key_ids).update(last_used_at=at)


class LastUsedRecorder:
    def __init__(self):
        self._noted_at: dict[int, float] = {}
        self._pending: set[int] = set()
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def seen(self, key_id: int) -> None:
        now = time.monotonic()
        noted_at = self._noted_at.get(key_id)
        if noted_at is not None and now - noted_at < settings.GATEWAY_KEY_LAST_USED_INTERVAL:
            return
        if len(self._noted_at) >= _MAX_TRACKED_KEYS:
            self._noted_at.clear()
        self._noted_at[key_id] = now
        self._pending.add(key_id)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._task = loop.create_task(self._write(), name="key-last-used")

    async def _write(self) -> None:
        # Runs while there is something to write, so an idle process holds no task.
        while self._pending:
            key_ids, self._pending = sorted(self._pending), set()
            try:
                await run_in_db_thread(_mark_used, key_ids, timezone.now())
            except Exception:  # a missed last-used time is not worth failing anything for
                logger.warning("could not record last use of %d gateway key(s)", len(key_ids), exc_info=True)
            await asyncio.sleep(1.0)

    def forget(self) -> None:
        self._noted_at.clear()
        self._pending.clear()


last_used = LastUsedRecorder()
