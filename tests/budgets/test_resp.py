"""The hot path's pipelined Redis client against the real Redis: replies in order, errors, and a lost server."""

from __future__ import annotations

import asyncio
import socket

import pytest
from django.conf import settings

from budgets.resp import ConnectionLost, PipelinedRedis, RedisReplyError, _Protocol


def test_replies_split_anywhere_resolve_their_commands_in_order():
    data = b"*3\r\n:1\r\n$5\r\nhello\r\n*2\r\n:-2\r\n$-1\r\n+OK\r\n-NOSCRIPT No matching script\r\n"

    async def run(cut: int):
        client = PipelinedRedis("redis://127.0.0.1:1/0", timeout=2)
        protocol = _Protocol(client)
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(3)]
        client.waiting.extend(futures)
        protocol.data_received(data[:cut])
        protocol.data_received(data[cut:])
        assert [future.result() for future in futures[:2]] == [[1, b"hello", [-2, None]], b"OK"]
        assert isinstance(futures[2].exception(), RedisReplyError) and futures[2].exception().noscript

    for cut in range(1, len(data)):
        asyncio.run(run(cut))


def test_concurrent_commands_share_one_connection_and_get_their_own_replies():
    async def run():
        client = PipelinedRedis(settings.GATEWAY_LIMITS_REDIS_URL, timeout=2)
        replies = await asyncio.gather(*(client.execute("ECHO", f"n{i}") for i in range(500)))
        with pytest.raises(RedisReplyError, match="unknown command"):
            await client.execute("NOT-A-COMMAND")
        assert await client.execute("PING") == b"PONG"  # an error reply leaves the connection usable
        client.close()
        return replies

    assert asyncio.run(run()) == [f"n{i}".encode() for i in range(500)]


def test_a_server_that_goes_away_fails_the_waiting_commands_and_the_next_one_reconnects():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    async def run():
        client = PipelinedRedis(f"redis://127.0.0.1:{port}/0", timeout=0.5)
        with pytest.raises((TimeoutError, ConnectionLost)):
            await client.execute("PING")  # accepted, never answered
        listener.close()
        with pytest.raises(OSError):
            await client.execute("PING")  # refused now

    asyncio.run(run())
