"""Which deployments are cooling down: skipped after too many failures, for the group's cooldown time.

Every process keeps the state it needs in memory, so a request never waits on Redis:

- A failure is counted locally at once, and (with REDIS_URL set) in Redis by a background task,
  where the failures of every web worker add up. Whichever count reaches the group's
  `allowed_fails` within its cooldown time first puts the deployment in cooldown, locally and
  in Redis, until a wall-clock time stored as the key's value (and its expiry).
- Each process reads the cooldowns of the deployments it serves from Redis at most once a
  second (`SYNC_SECONDS`), in the background, so a cooldown one worker starts reaches the
  others within a second.
- When Redis cannot be reached, the local state is all there is: each process still cools down
  the deployments it sees failing. Redis is not asked again for `REDIS_RETRY_SECONDS`, so an
  outage costs no request a timeout.

A provider's Retry-After rests a deployment the same way, for as long as the provider asked
(never longer than the group's cooldown time).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from django.conf import settings

logger = logging.getLogger(__name__)

SYNC_SECONDS = 1.0
REDIS_RETRY_SECONDS = 5.0
REDIS_TIMEOUT_SECONDS = 0.5
KEY_PREFIX = "tollgate:router:"


def cooldown_key(deployment_key: str) -> str:
    return f"{KEY_PREFIX}cooldown:{deployment_key}"


def failures_key(deployment_key: str) -> str:
    return f"{KEY_PREFIX}failures:{deployment_key}"


class CooldownStore:
    def __init__(self):
        # deployment key -> wall-clock time its cooldown ends
        self._until: dict[str, float] = {}
        self._failures: dict[str, deque[float]] = {}
        self._watched: set[str] = set()
        self._synced_at = float("-inf")
        self._redis_down_until = float("-inf")
        self._client = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._client_url = ""
        self._sync_task: asyncio.Task | None = None
        self._writes: set[asyncio.Task] = set()

    # --- Reading: from memory only -------------------------------------------------

    def remaining(self, key: str | None) -> float:
        """Seconds left of the deployment's cooldown; 0 when it may be used."""
        if key is None:
            return 0.0
        until = self._until.get(key)
        if until is None:
            return 0.0
        left = until - time.time()
        if left <= 0:
            self._until.pop(key, None)
            return 0.0
        return left

    def watch(self, keys) -> None:
        """The deployments a request is about to choose from: keep their cooldowns in sync with Redis."""
        self._watched.update(keys)
        if (
            settings.REDIS_URL
            and time.monotonic() - self._synced_at >= SYNC_SECONDS
            and time.monotonic() >= self._redis_down_until
            and (self._sync_task is None or self._sync_task.done())
        ):
            self._synced_at = time.monotonic()
            self._sync_task = asyncio.get_running_loop().create_task(self._sync(sorted(self._watched)))

    # --- Writing: memory at once, Redis in the background ------------------------------

    def failed(self, key: str | None, *, allowed_fails: int, window_seconds: int) -> bool:
        """Count a failure; True when it put the deployment in cooldown here."""
        if key is None or allowed_fails <= 0 or window_seconds <= 0:
            return False
        now = time.time()
        failures = self._failures.setdefault(key, deque())
        failures.append(now)
        while failures and failures[0] <= now - window_seconds:
            failures.popleft()
        cooled = len(failures) >= allowed_fails
        if cooled:
            failures.clear()
            self._cool(key, now + window_seconds)
        if settings.REDIS_URL and time.monotonic() >= self._redis_down_until:
            cooled_until = now + window_seconds if cooled else None
            self._background(self._count_in_redis(key, allowed_fails, window_seconds, cooled_until))
        return cooled

    def rest(self, key: str | None, seconds: float) -> None:
        """The provider asked for a pause (Retry-After): skip the deployment until then, everywhere."""
        if key is None or seconds <= 0:
            return
        until = time.time() + seconds
        self._cool(key, until)
        if settings.REDIS_URL and time.monotonic() >= self._redis_down_until:
            self._background(self._set_in_redis(key, until))

    def _cool(self, key: str, until: float) -> None:
        if until > self._until.get(key, 0.0):
            self._until[key] = until

    def forget(self) -> None:
        """Forget every cooldown and failure this process knows of (Redis keeps its own)."""
        self._until.clear()
        self._failures.clear()
        self._watched.clear()
        self._synced_at = float("-inf")
        self._redis_down_until = float("-inf")

    # --- Redis -------------------------------------------------------------------------

    def _redis(self):
        import redis.asyncio as redis

        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop or self._client_url != settings.REDIS_URL:
            self._client_url = settings.REDIS_URL
            self._client = redis.Redis.from_url(
                settings.REDIS_URL,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
            )
            self._client_loop = loop
        return self._client

    def _background(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _sync(self, keys: list[str]) -> None:
        if not keys:
            return
        try:
            values = await self._redis().mget([cooldown_key(key) for key in keys])
        except Exception as exc:  # noqa: BLE001 - any Redis failure means: carry on with local state
            self._redis_failed(exc)
            return
        for key, value in zip(keys, values, strict=True):
            if value is not None:
                try:
                    self._cool(key, float(value))
                except ValueError:
                    continue

    async def _count_in_redis(self, key: str, allowed_fails: int, window_seconds: int, cooled_until: float | None):
        client = self._redis()
        try:
            async with client.pipeline(transaction=False) as pipe:
                # The window starts with the first failure: the counter expires window_seconds after it.
                pipe.set(failures_key(key), 0, ex=window_seconds, nx=True)
                pipe.incr(failures_key(key))
                _, count = await pipe.execute()
            if cooled_until is None and count >= allowed_fails:
                cooled_until = time.time() + window_seconds
                self._cool(key, cooled_until)
            if cooled_until is not None:
                async with client.pipeline(transaction=False) as pipe:
                    pipe.set(cooldown_key(key), repr(cooled_until), ex=max(int(cooled_until - time.time()) + 1, 1))
                    pipe.delete(failures_key(key))
                    await pipe.execute()
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)

    async def _set_in_redis(self, key: str, until: float) -> None:
        try:
            stored = await self._redis().get(cooldown_key(key))
            if stored is not None and float(stored) >= until:
                return
            await self._redis().set(cooldown_key(key), repr(until), ex=max(int(until - time.time()) + 1, 1))
        except Exception as exc:  # noqa: BLE001
            self._redis_failed(exc)

    def _redis_failed(self, exc: Exception) -> None:
        if time.monotonic() >= self._redis_down_until:
            logger.warning(
                "router cooldowns: Redis unavailable (%s); using this process's own counts for %g s",
                exc,
                REDIS_RETRY_SECONDS,
            )
        self._redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS


store = CooldownStore()
