"""The Redis side: the admission and settlement scripts, loaded once and run by EVALSHA.

One round trip admits a request against every limit and budget that applies (`admit.lua`).
Settlements are batched: whatever finished since the last batch is settled in one pipeline
(`settle.lua`), off the requests' path. A script Redis no longer knows (a restart, SCRIPT
FLUSH) is loaded again on NOSCRIPT.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from functools import cache, lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings

logger = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent


class Script:
    def __init__(self, filename: str):
        self.source = (_HERE / filename).read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def run(self, client, keys: list[str], args: list) -> list:
        from redis.exceptions import NoScriptError

        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    def run_sync(self, client, keys: list[str], args: list) -> list:
        from redis.exceptions import NoScriptError

        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)


ADMIT = Script("admit.lua")
SETTLE = Script("settle.lua")


class Batcher:
    """Runs a script for every caller of one event-loop turn in one pipeline: one round trip, one connection.

    Under load many requests wait on Redis at once; sending their scripts together costs Redis the same
    work and the gateway far fewer writes, reads and connections than one exchange each.
    """

    def __init__(self, script: Script):
        self.script = script
        self._waiting: list[tuple[list[str], list, asyncio.Future]] = []

    def run(self, client, keys: list[str], args: list) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._send, client)
        self._waiting.append((keys, args, future))
        return future

    def _send(self, client) -> None:
        waiting, self._waiting = self._waiting, []
        asyncio.get_running_loop().create_task(self._exchange(client, waiting))

    async def _exchange(self, client, waiting) -> None:
        from redis.exceptions import NoScriptError

        try:
            results = await self._pipeline(client, waiting)
            if any(isinstance(result, NoScriptError) for result in results):
                await client.script_load(self.script.source)
                results = await self._pipeline(client, waiting)
        except Exception as exc:  # noqa: BLE001 - every caller gets the failure, whatever it is
            for _, _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), result in zip(waiting, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _pipeline(self, client, waiting) -> list:
        pipe = client.pipeline(transaction=False)
        for keys, args, _ in waiting:
            pipe.evalsha(self.script.sha, len(keys), *keys, *args)
        return await pipe.execute(raise_on_error=False)


admit_batcher = Batcher(ADMIT)


def key_prefix() -> str:
    return _prefix_for(settings.GATEWAY_LIMITS_REDIS_URL)


@lru_cache(maxsize=8)
def _prefix_for(url: str) -> str:
    # Per Redis database, like the cache-invalidation channel, so deployments sharing a server keep apart.
    database = urlsplit(url).path.strip("/") or "0"
    return f"tollgate:{database}:limits"


class Clients:
    """One asyncio Redis client per event loop (tests run several loops in one process)."""

    def __init__(self):
        self._client = None
        self._loop = None
        self._url = None

    def get(self):
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop or self._url != settings.GATEWAY_LIMITS_REDIS_URL:
            import redis.asyncio as redis

            timeout = settings.GATEWAY_LIMITS_REDIS_TIMEOUT
            # A burst waits for a free connection (up to the timeout) rather than failing at once.
            pool = redis.BlockingConnectionPool.from_url(
                settings.GATEWAY_LIMITS_REDIS_URL,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                max_connections=settings.GATEWAY_LIMITS_REDIS_MAX_CONNECTIONS,
                timeout=timeout,
            )
            self._client = redis.Redis(connection_pool=pool)
            self._loop = loop
            self._url = settings.GATEWAY_LIMITS_REDIS_URL
        return self._client

    def forget(self) -> None:
        self._client = None
        self._loop = None


clients = Clients()


def sync_client():
    return _sync_client(settings.GATEWAY_LIMITS_REDIS_URL)


@cache
def _sync_client(url: str):
    import redis

    timeout = settings.GATEWAY_LIMITS_REDIS_TIMEOUT * 20  # commands and the rebuild are not on a request's path
    return redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
