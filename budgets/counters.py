"""The Redis side: the admission and settlement scripts, loaded once and run by EVALSHA.

One round trip admits a request against every limit and budget that applies (`admit.lua`),
on a pipelined connection that concurrent requests share (`budgets.resp`).
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

from budgets.resp import PipelinedRedis, RedisReplyError

logger = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent


class Script:
    def __init__(self, filename: str):
        self.source = (_HERE / filename).read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def run(self, client, keys: list[str], args: list) -> list:
        """On the hot path's pipelined client (`resp.PipelinedRedis`)."""
        try:
            return await client.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if not exc.noscript:
                raise
            await client.execute("SCRIPT", "LOAD", self.source)
            return await client.execute("EVALSHA", self.sha, len(keys), *keys, *args)

    async def run_encoded(self, client, command: bytes, sent: asyncio.Future | None = None) -> list:
        """A whole EVALSHA of this script, already encoded (`budgets.enforcement.Template`).

        `sent` is the reply of the same command written earlier (`PipelinedRedis.send_now`).
        """
        try:
            return await (sent if sent is not None else client.execute_encoded(command))
        except RedisReplyError as exc:
            if not exc.noscript:
                raise
            await client.execute("SCRIPT", "LOAD", self.source)
            return await client.execute_encoded(command)

    def run_sync(self, client, keys: list[str], args: list) -> list:
        from redis.exceptions import NoScriptError

        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, len(keys), *keys, *args)


ADMIT = Script("admit.lua")
SETTLE = Script("settle.lua")


def key_prefix() -> str:
    return _prefix_for(settings.GATEWAY_LIMITS_REDIS_URL)


@lru_cache(maxsize=8)
def _prefix_for(url: str) -> str:
    # Per Redis database, like the cache-invalidation channel, so deployments sharing a server keep apart.
    database = urlsplit(url).path.strip("/") or "0"
    return f"tollgate:{database}:limits"


class Clients:
    """One pipelined Redis connection per event loop (tests run several loops in one process)."""

    def __init__(self):
        self._client: PipelinedRedis | None = None
        self._loop = None
        self._url = None

    def get(self) -> PipelinedRedis:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop or self._url != settings.GATEWAY_LIMITS_REDIS_URL:
            self._client = PipelinedRedis(
                settings.GATEWAY_LIMITS_REDIS_URL, timeout=settings.GATEWAY_LIMITS_REDIS_TIMEOUT
            )
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
