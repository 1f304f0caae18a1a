"""Telling every gateway process that something it caches has changed.

Keys, projects, credentials and routes are cached per process (see `proxy.ttl_cache`).
A change made in admin is announced after its transaction commits: the announcing
process forgets the entry at once, and with REDIS_URL set the announcement is
published on a Redis channel, which a listener task in every serving process
receives and applies. Requests pay nothing for this: no Redis round trip, only the
listener's idle socket. Without Redis (embedded mode, one process) the local
forgetting is all there is. If the listener loses Redis it forgets everything when
it is back, since announcements may have been missed meanwhile; until then the
caches' TTL (GATEWAY_KEY_CACHE_SECONDS) bounds how stale an entry can get.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from functools import cache
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

EVERYTHING = "*"
_RECONNECT_DELAY_SECONDS = 1.0

# Called with a topic ("key", or EVERYTHING) and a value (a key hash, or "").
_handlers: list[Callable[[str, str], None]] = []


def on_invalidation(handler: Callable[[str, str], None]) -> None:
    _handlers.append(handler)


def _apply(topic: str, value: str) -> None:
    for handler in _handlers:
        handler(topic, value)


def announce(topic: str, value: str = "") -> None:
    """Make every process forget `topic`/`value` once the current transaction commits."""
    transaction.on_commit(lambda: _announce_now(topic, value))


def channel() -> str:
    # Per Redis database, so that deployments sharing one Redis server keep to themselves.
    database = urlsplit(settings.REDIS_URL).path.strip("/") or "0"
    return f"tollgate:{database}:cache-invalidation"


def _announce_now(topic: str, value: str) -> None:
    _apply(topic, value)
    if not settings.REDIS_URL:
        return
    try:
        _publisher().publish(channel(), f"{topic} {value}")
    except Exception:  # the change is saved; other processes catch up within the cache TTL
        logger.warning("cache invalidation: could not publish %s %s to Redis", topic, value, exc_info=True)


@cache
def _publisher():
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)


class Listener:
    """One task per event loop, receiving announcements from the other processes."""

    def __init__(self):
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def ensure_running(self) -> None:
        if not settings.REDIS_URL:
            return
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._task = loop.create_task(self._run(settings.REDIS_URL), name="cache-invalidation")

    async def _run(self, url: str) -> None:
        import redis.asyncio as redis

        while True:
            client = redis.Redis.from_url(url, socket_connect_timeout=2)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(channel())
                    # Entries cached before the subscription was in place may have missed an announcement.
                    _apply(EVERYTHING, "")
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            topic, _, value = message["data"].decode().partition(" ")
                            _apply(topic, value)
            except asyncio.CancelledError:
                raise
            except Exception:  # reconnect; meanwhile the caches' TTL bounds staleness
                logger.warning("cache invalidation: lost Redis, reconnecting", exc_info=True)
            finally:
                await client.aclose()
            await asyncio.sleep(_RECONNECT_DELAY_SECONDS)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


listener = Listener()
