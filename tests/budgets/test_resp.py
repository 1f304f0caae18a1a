"""The hot path's pipelined Redis client against the real Redis: replies in order, errors, and a lost server."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
import uvloop
from django.conf import settings

from budgets.resp import ConnectionLost, PipelinedRedis, RedisReplyError, _Protocol
from budgets.resp import encode as resp_encode


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


def test_a_reply_hook_runs_as_the_reply_is_read_even_for_a_cancelled_command(caplog):
    async def run():
        client = PipelinedRedis(settings.GATEWAY_LIMITS_REDIS_URL, timeout=2)
        await client.execute("PING")  # connected
        seen = []

        def failing_hook(reply):
            raise RuntimeError("a bug in the caller")

        cancelled = client.send_now(resp_encode(["ECHO", "one"]), on_reply=seen.append)
        cancelled.cancel()
        broken = client.send_now(resp_encode(["ECHO", "two"]), on_reply=failing_hook)
        refused = client.send_now(resp_encode(["NOT-A-COMMAND"]), on_reply=seen.append)
        after = client.send_now(resp_encode(["ECHO", "three"]), on_reply=seen.append)
        assert await after == b"three"
        assert await broken == b"two"
        with pytest.raises(RedisReplyError):
            await refused
        left = dict(client.on_reply)  # every hook was taken with its reply
        client.close()
        return seen, left

    seen, left = asyncio.run(run())
    assert seen == [b"one", b"three"]  # not the error reply's
    assert left == {}
    assert "a reply hook failed" in caplog.text


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_a_reply_that_has_arrived_is_read_without_an_event_loop_turn(loop_factory):
    async def run():
        client = PipelinedRedis(settings.GATEWAY_LIMITS_REDIS_URL, timeout=2)
        await client.execute("PING")  # connected
        seen = []
        future = client.send_now(resp_encode(["ECHO", "here"]), on_reply=seen.append)
        client.read_arrived()  # too soon, most likely: nothing read, nothing lost
        time.sleep(0.05)  # the event loop does not turn meanwhile: only read_arrived can read the reply
        client.read_arrived()
        assert future.done() and future.result() == b"here" and seen == [b"here"]
        client.read_arrived()  # nothing in flight: nothing read
        # The loop saw none of it: later commands get their own replies, in order.
        assert await asyncio.gather(*(client.execute("ECHO", f"n{i}") for i in range(20))) == [
            f"n{i}".encode() for i in range(20)
        ]
        client.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(run())
