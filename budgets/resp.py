"""A small pipelining Redis client for the hot path: one connection per event loop, replies in order.

redis-py's asyncio client spends far more time per command than Redis does (pool checkout, a
timeout context and a parser per call). Admission needs one command per request and nothing
else: the command is written as soon as it is asked for, behind whatever is in flight on the
same connection, and its reply resolves its future when it arrives. Concurrent requests thus
share a connection and its round trips. Replies are parsed by hiredis, the C parser redis-py
uses too. Speaks RESP2, enough for EVALSHA and SCRIPT LOAD."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import hiredis

logger = logging.getLogger(__name__)


class RedisReplyError(Exception):
    """An error reply (`-ERR ...`, `-NOSCRIPT ...`)."""

    @property
    def noscript(self) -> bool:
        return str(self).startswith("NOSCRIPT")


class ConnectionLost(ConnectionError):
    pass


def bulk(value) -> bytes:
    """One bulk string of a command (numbers written in decimal)."""
    kind = type(value)
    data = value if kind is bytes else b"%d" % value if kind is int else str(value).encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def encode(args) -> bytes:
    """One command in RESP: an array of bulk strings (numbers written in decimal)."""
    texts = [arg if type(arg) is str else arg.decode() if type(arg) is bytes else str(arg) for arg in args]
    if all(text.isascii() for text in texts):
        # One encode for the whole command: an ASCII text's length is its byte length.
        body = "".join([f"${len(text)}\r\n{text}\r\n" for text in texts])
        return f"*{len(texts)}\r\n{body}".encode()
    parts = [b"*%d\r\n" % len(texts)]
    for text in texts:
        data = text.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    def __init__(self, client: PipelinedRedis):
        self.client = client
        # hiredis parses in C; an error reply comes back as a RedisReplyError, not raised.
        self.reader = hiredis.Reader(replyError=RedisReplyError)
        self.transport = None
        self.fd = -1

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1

    def data_received(self, data):
        reader = self.reader
        reader.feed(data)
        client = self.client
        waiting, hooks = client.waiting, client.on_reply
        try:
            while (reply := reader.gets()) is not False:
                future = waiting.popleft()
                if isinstance(reply, RedisReplyError):
                    hooks.pop(future, None)
                    if not future.done():
                        future.set_exception(reply)
                    continue
                if not future.done():
                    future.set_result(reply)
                if hooks and (hook := hooks.pop(future, None)) is not None:
                    _call_hook(hook, reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # unreadable, or a reply nobody asked for
            client.lost(ConnectionLost(f"unreadable reply from Redis: {exc}"))

    def connection_lost(self, exc):
        self.client.lost(ConnectionLost(f"Redis closed the connection: {exc}"))


def _call_hook(hook, reply) -> None:
    try:
        hook(reply)
    except Exception:  # the caller's bug must not cost the connection the replies behind this one
        logger.exception("redis: a reply hook failed")


class PipelinedRedis:
    def __init__(self, url: str, *, timeout: float):
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.database = int(parts.path.strip("/") or 0)
        self.password = unquote(parts.password) if parts.password else None
        self.username = unquote(parts.username) if parts.username else None
        self.timeout = timeout
        self.waiting: deque[asyncio.Future] = deque()
        # Called with a command's reply as it is read, even if its future was cancelled (`send_now`).
        self.on_reply: dict[asyncio.Future, Callable] = {}
        self._outgoing: list[bytes] = []
        self.protocol: _Protocol | None = None
        self._connecting: asyncio.Future | None = None
        self._timer = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.timeout):
            _, protocol = await loop.create_connection(lambda: _Protocol(self), self.host, self.port)
        setup = []
        if self.password is not None:
            setup.append(["AUTH", self.username, self.password] if self.username else ["AUTH", self.password])
        if self.database:
            setup.append(["SELECT", self.database])
        # Written before anyone else's command, so that every command runs in the chosen database.
        self.protocol = protocol
        replies = [self._send(command) for command in setup]
        for reply in replies:
            await reply
        return protocol

    async def _ensure(self) -> _Protocol:
        if self.protocol is not None:
            return self.protocol
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    def _send(self, args) -> asyncio.Future:
        return self._send_encoded(encode(args))

    def _send_encoded(self, command: bytes) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting.append(future)
        if len(self.waiting) == 1:
            # Nothing in flight: no one to wait for, so the command leaves at once.
            self.protocol.transport.write(command)
        else:
            if not self._outgoing:
                # Otherwise the commands of one event-loop turn leave in one write: a system call (and a
                # wake-up of Redis) each would cost more than everything else a request asks of Redis.
                loop.call_soon(self._flush, self.protocol)
            self._outgoing.append(command)
        if self._timer is None:
            self._timer = loop.call_later(self.timeout, self._check_timeout, future)
        return future

    def _flush(self, protocol) -> None:
        if protocol is not self.protocol:
            return  # the connection was lost meanwhile: its commands have failed, later ones have their own flush
        outgoing, self._outgoing = self._outgoing, []
        protocol.transport.write(outgoing[0] if len(outgoing) == 1 else b"".join(outgoing))

    def _check_timeout(self, oldest) -> None:
        # One timer per connection: the oldest command still waiting after the timeout dooms the connection.
        self._timer = None
        if not self.waiting:
            return
        if self.waiting[0] is oldest:
            self.lost(TimeoutError(f"Redis did not answer within {self.timeout:g} s"))
            return
        self._timer = asyncio.get_running_loop().call_later(self.timeout, self._check_timeout, self.waiting[0])

    async def execute(self, *args):
        if self.protocol is None:
            await self._ensure()
        return await self._send(args)

    def send_now(self, command: bytes, *, on_reply: Callable | None = None) -> asyncio.Future | None:
        """Write an encoded command at once, without awaiting its reply; None while not connected.

        `on_reply(reply)` is called as a reply that is not an error is read, in the same step: unlike a
        done-callback, it makes no event-loop callback of its own and runs even if the future was cancelled.
        """
        if self.protocol is None:
            return None
        future = self._send_encoded(command)
        if on_reply is not None:
            self.on_reply[future] = on_reply
        return future

    def read_arrived(self) -> None:
        """Read the replies that have already arrived, now rather than on the event loop's next turn.

        A request that finds its reply here goes on without suspending: no wake-up of its task
        through every coroutine it is awaited from, no event-loop turn for the socket. The socket
        is the event loop's, non-blocking: what is read here the loop simply does not see.
        """
        protocol = self.protocol
        if protocol is None or protocol.fd < 0 or not self.waiting:
            return
        try:
            data = os.read(protocol.fd, 65536)
        except OSError:  # nothing there yet; a real error the event loop reports as well
            return
        if data:
            protocol.data_received(data)

    async def execute_encoded(self, command: bytes):
        """A command already in RESP (see `encode` and `bulk`): the hot path builds most of it once."""
        if self.protocol is None:
            await self._ensure()
        return await self._send_encoded(command)

    def lost(self, exc: Exception) -> None:
        protocol, self.protocol = self.protocol, None
        self._outgoing = []
        self.on_reply = {}
        waiting, self.waiting = self.waiting, deque()
        for future in waiting:
            if not future.done():
                future.set_exception(exc)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()

    def close(self) -> None:
        self.lost(ConnectionLost("closed"))
