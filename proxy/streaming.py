"""Relaying a provider's SSE stream to the client, event by event, while keeping a copy for the log."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import orjson
from django.conf import settings

from proxy.errors import ErrorFormat
from proxy.messages_to_chat import ChatStreamTranslator
from proxy.translation import MessagesStreamTranslator, messages_error_to_chat
from telemetry.handoff import pipeline
from telemetry.record import RequestRecord
from telemetry.streams import parse_sse_event

logger = logging.getLogger(__name__)

DONE_EVENT = b"data: [DONE]\n\n"


def split_events(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete SSE events in `buffer` (each without its blank-line terminator) and the unfinished rest."""
    if b"\r" in buffer:
        buffer = buffer.replace(b"\r\n", b"\n")
    *events, rest = buffer.split(b"\n\n")
    return [event for event in events if event], rest


class Passthrough:
    """Forward every event unchanged (the client speaks the provider's protocol)."""

    # Set by a transform once the client's stream is over (an error was sent): the relay stops reading.
    ended = False

    def __init__(self, dialect: str = "openai"):
        self.dialect = dialect

    def __call__(self, event: bytes, record: RequestRecord) -> bytes | None:
        record.capture_stream_event(event)
        return event + b"\n\n"

    def finish(self, record: RequestRecord) -> bytes:
        return b""


class HideUsageChunk(Passthrough):
    """The gateway asked for usage in the stream; a client that did not ask never sees that extra chunk."""

    def __call__(self, event: bytes, record: RequestRecord) -> bytes | None:
        record.capture_stream_event(event)
        if b'"usage"' in event and b'"usage":null' not in event and _is_usage_only(event):
            return None
        return event + b"\n\n"


def _is_usage_only(event: bytes) -> bool:
    _, data = parse_sse_event(event)
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(chunk, dict) and not chunk.get("choices") and chunk.get("usage") is not None


class AnthropicToChatChunks:
    """Anthropic Messages events in, `chat.completion.chunk` events out."""

    dialect = "openai"

    def __init__(self, *, model: str, include_usage: bool):
        self.translator = MessagesStreamTranslator(model=model, include_usage=include_usage)
        self.done = False
        self.ended = False

    def __call__(self, event: bytes, record: RequestRecord) -> bytes | None:
        if self.ended:
            return None
        name, data = parse_sse_event(event)
        try:
            payload = orjson.loads(data) if data else None
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict):
            return None
        out = []
        for chunk in self.translator.feed(name or payload.get("type"), payload):
            encoded = b"data: " + orjson.dumps(chunk)
            record.capture_stream_event(encoded)
            out.append(encoded + b"\n\n")
        error = self.translator.error
        if error is not None:
            # A chat client reads an error mid-stream in OpenAI's shape, and nothing after it.
            detail = error.get("error")
            record.provider_error_type = (detail.get("type") if isinstance(detail, dict) else None) or "stream_error"
            record.error_type = "upstream_stream_error"
            encoded = b"data: " + orjson.dumps(messages_error_to_chat(error, 500))
            record.capture_stream_event(encoded)
            out.append(encoded + b"\n\n")
            self.ended = True
        elif (name or payload.get("type")) == "message_stop":
            self.done = True
            out.append(DONE_EVENT)
        return b"".join(out) or None

    def finish(self, record: RequestRecord) -> bytes:
        # Anthropic's own counts, cache writes included, which the translated chunks cannot carry.
        record.usage = self.translator.provider_usage
        return b""


class ChatChunksToAnthropic:
    """`chat.completion.chunk` events in, Anthropic Messages events out."""

    dialect = "anthropic"

    def __init__(self, *, model: str, stop: list[str], thinking: bool = False):
        self.translator = ChatStreamTranslator(model=model, stop=stop, thinking=thinking)
        self.ended = False

    def __call__(self, event: bytes, record: RequestRecord) -> bytes | None:
        if self.ended:
            return None
        _, data = parse_sse_event(event)
        if data == b"[DONE]":
            return self._send(self.translator.end(), record) or None
        try:
            chunk = orjson.loads(data) if data else None
        except orjson.JSONDecodeError:
            chunk = None
        if not isinstance(chunk, dict):
            return None
        out = self._send(self.translator.feed(chunk), record)
        error = self.translator.error
        if error is not None:
            # An Anthropic client reads an error mid-stream as an `error` event, and nothing after it.
            detail = chunk.get("error")
            upstream_type = (detail.get("type") or detail.get("code")) if isinstance(detail, dict) else None
            record.provider_error_type = upstream_type if isinstance(upstream_type, str) else "stream_error"
            record.error_type = "upstream_stream_error"
            out += self._send([("error", error)], record)
            self.ended = True
        return out or None

    def finish(self, record: RequestRecord) -> bytes:
        # Priced from the provider's own counts, which the Anthropic events restate in another shape.
        record.usage = self.translator.usage
        if self.ended or self.translator.finish_choice is None:
            return b""
        # The provider finished the answer but closed the stream without [DONE].
        return self._send(self.translator.end(), record)

    @staticmethod
    def _send(events: list[tuple[str, dict]], record: RequestRecord) -> bytes:
        out = []
        for name, data in events:
            encoded = b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data)
            record.capture_stream_event(encoded)
            out.append(encoded + b"\n\n")
        return b"".join(out)


def stream_error_event(error_format: ErrorFormat, message: str) -> bytes:
    if error_format is ErrorFormat.ANTHROPIC:
        body = {"type": "error", "error": {"type": "api_error", "message": message}}
        return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"
    return b"data: " + orjson.dumps({"error": {"message": message, "type": "api_error", "code": None}}) + b"\n\n"


@dataclass(slots=True)
class StreamLimits:
    max_bytes: int
    total: float
    idle: float
    usage_grace: float

    @classmethod
    def from_settings(cls) -> StreamLimits:
        return cls(
            max_bytes=settings.GATEWAY_MAX_RESPONSE_BYTES,
            total=settings.GATEWAY_STREAM_TIMEOUT,
            idle=settings.GATEWAY_STREAM_IDLE_TIMEOUT,
            usage_grace=settings.GATEWAY_STREAM_USAGE_GRACE,
        )


class StreamCut(Exception):
    """The gateway ends the stream itself; `code` goes to the record, `message` to the client and the record."""

    def __init__(self, code: str, message: str, *, provider_error_type: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.provider_error_type = provider_error_type or code


_STREAM_ENCODINGS = {"": None, "identity": None, "gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS}


def decodable(encoding: str | None) -> bool:
    """Whether the relay can decode a stream's content-encoding (the gateway asks for none)."""
    encoding = (encoding or "").strip().lower()
    return encoding in _STREAM_ENCODINGS or encoding == "deflate"


class UpstreamBytes:
    """The provider's stream body, decoded, counted against the size cap and watched for deadline and silence.

    The watchdog is one timer that checks lazily, so a chunk costs a clock read and two stores, not a timer
    of its own; it cancels only a read in progress, never the client's side of the stream.
    """

    def __init__(self, upstream: httpx.Response, limits: StreamLimits, encoding: str | None = None):
        self.upstream = upstream
        self.limits = limits
        self.chunks = aiter(upstream.stream)
        self.decoder = None
        if encoding:
            wbits = _STREAM_ENCODINGS.get(encoding.strip().lower(), zlib.MAX_WBITS)
            self.decoder = zlib.decompressobj(wbits) if wbits is not None else None
        self.received = 0
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.deadline = self.loop.time() + limits.total
        self.read_started: float | None = None
        self.cut: StreamCut | None = None
        self.timer = self.loop.call_at(min(self.deadline, self.loop.time() + limits.idle), self._check)

    async def next(self) -> bytes | None:
        """The next piece of the body, or None at its end. Raises StreamCut or httpx.HTTPError."""
        if self.cut is not None:
            raise self.cut
        self.read_started = self.loop.time()
        try:
            piece = await anext(self.chunks)
        except StopAsyncIteration:
            return None
        except asyncio.CancelledError:
            if self.cut is None or self.task is None:
                raise
            self.task.uncancel()  # our own watchdog's cancel, not the client's
            raise self.cut from None
        finally:
            self.read_started = None
        if self.decoder is not None:
            piece = self.decoder.decompress(piece)
        self.received += len(piece)
        if self.received > self.limits.max_bytes:
            raise StreamCut(
                "upstream_response_too_large",
                f"The provider's stream grew past the gateway's limit of {self.limits.max_bytes} bytes "
                "(GATEWAY_MAX_RESPONSE_BYTES).",
                provider_error_type="response_too_large",
            )
        return piece

    def restart(self) -> None:
        """Read on after the client has gone: the earlier iteration may have died with the client's task."""
        self.chunks = aiter(self.upstream.stream)

    def _check(self) -> None:
        now = self.loop.time()
        limits = self.limits
        if now >= self.deadline:
            self.cut = StreamCut(
                "upstream_stream_timeout",
                f"The provider's stream ran longer than the gateway's limit of {limits.total:g} s "
                "(GATEWAY_STREAM_TIMEOUT).",
            )
        elif self.read_started is not None and now - self.read_started >= limits.idle:
            self.cut = StreamCut(
                "upstream_stream_idle_timeout",
                f"The provider's stream sent nothing for {limits.idle:g} s (GATEWAY_STREAM_IDLE_TIMEOUT).",
            )
        if self.cut is None:
            quiet_since = self.read_started if self.read_started is not None else now
            self.timer = self.loop.call_at(min(self.deadline, quiet_since + limits.idle), self._check)
        elif self.read_started is not None and self.task is not None:
            self.task.cancel()
        # Otherwise the stream is between reads (the client is being sent data): the next read stops.

    def stop(self) -> None:
        self.timer.cancel()


def _finished_without_usage(events: list[bytes]) -> bool:
    """Whether the last events relayed end the answer (finish_reason) but carry no usage, which comes next."""
    for event in reversed(events):
        _, data = parse_sse_event(event)
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(chunk, dict):
            continue
        if chunk.get("usage"):
            return False
        choices = chunk.get("choices")
        if isinstance(choices, list) and any(isinstance(c, dict) and c.get("finish_reason") for c in choices):
            return True
    return False


def _transform_all(events: list[bytes], transform, record: RequestRecord) -> bytes:
    if len(events) == 1:
        return transform(events[0], record) or b""
    return b"".join(filter(None, [transform(event, record) for event in events]))


# Reads that bill a client who left after the last word; held here so they are not garbage-collected.
_usage_reads: set[asyncio.Task] = set()


async def relay(
    upstream: httpx.Response,
    *,
    record: RequestRecord,
    transform: Callable[[bytes, RequestRecord], bytes | None],
    error_format: ErrorFormat,
    limits: StreamLimits,
    encoding: str | None = None,
    on_finish: Callable[[RequestRecord], None] | None = None,
) -> AsyncIterator[bytes]:
    """Yield the client's stream. Always closes the upstream response and hands the record off, whatever happens.

    `encoding` is the stream's content-encoding, if the provider compressed it even so.
    """
    record.stream_events = []
    record.stream_dialect = transform.dialect
    body = UpstreamBytes(upstream, limits, encoding)
    ended = False
    events: list[bytes] = []
    pending = b""
    try:
        while (piece := await body.next()) is not None:
            batch, pending = split_events(pending + piece)
            if batch:
                # A whole batch is transformed before anything is sent, so a client leaving mid-batch
                # cannot leave events unrecorded.
                events = batch
                out = _transform_all(batch, transform, record)
                if out:
                    record.mark_first_byte()
                    yield out
                if transform.ended:
                    pending = b""
                    break
        if pending.strip():
            out = transform(pending.strip(b"\r\n"), record)
            if out:
                yield out
        tail = transform.finish(record)
        if tail:
            yield tail
        ended = True
    except httpx.HTTPError as exc:
        # Imported here: the adapters' module relays streams with this one.
        from proxy.providers.base import upstream_failure

        failure = upstream_failure(exc)
        record.error_type = "upstream_stream_interrupted"
        record.provider_error_type = failure.code
        record.error_message = failure.message
        ended = True
        transform.finish(record)
        yield stream_error_event(error_format, "The provider's stream ended unexpectedly.")
    except StreamCut as cut:
        record.error_type = cut.code
        record.provider_error_type = cut.provider_error_type
        record.error_message = cut.message
        ended = True
        transform.finish(record)
        yield stream_error_event(error_format, cut.message)
    except (asyncio.CancelledError, GeneratorExit):
        record.client_disconnected = True
        raise
    finally:
        body.stop()
        record.upstream_bytes = body.received
        read_on = not ended and limits.usage_grace > 0 and _finished_without_usage(events)
        if not ended:
            record.client_disconnected = True
        if read_on:
            # The client has its answer; the usage chunk that follows is what the request is billed by.
            record.finish(200)
            task = asyncio.get_running_loop().create_task(
                _read_usage_after_hangup(body, pending, record=record, transform=transform, on_finish=on_finish)
            )
            _usage_reads.add(task)
            task.add_done_callback(_usage_reads.discard)
        else:
            if not ended:
                transform.finish(record)  # keeps the usage seen so far
            await close_upstream(upstream)
            if on_finish is not None:
                on_finish(record)
            record.finish(200)
            pipeline.submit(record)


# What a closed provider response's stream is replaced with (see close_upstream).
_SPENT = httpx.ByteStream(b"")


async def close_upstream(upstream: httpx.Response) -> None:
    """Close a provider's response and let it go with the request.

    httpx's response and the stream it reads from refer to each other: left so, the whole upstream
    exchange (its request, headers, the transport's response) outlives the request until a
    garbage collection finds the cycle, for every request.
    """
    try:
        await upstream.aclose()
    finally:
        upstream.stream = _SPENT


async def _read_usage_after_hangup(
    body: UpstreamBytes,
    pending: bytes,
    *,
    record: RequestRecord,
    transform,
    on_finish: Callable[[RequestRecord], None] | None,
) -> None:
    """Keep reading a finished answer's stream, for at most GATEWAY_STREAM_USAGE_GRACE, to record its usage."""
    body.restart()
    body.task = None  # nothing left to cancel: the time limit below bounds this read
    try:
        async with asyncio.timeout(body.limits.usage_grace):
            while (piece := await body.next()) is not None:
                batch, pending = split_events(pending + piece)
                for event in batch:
                    transform(event, record)
    except (TimeoutError, httpx.HTTPError, StreamCut):
        pass  # no usage: the record's usage is estimated when it is built
    finally:
        record.upstream_bytes = body.received
        transform.finish(record)
        await close_upstream(body.upstream)
        body.stop()
        if on_finish is not None:
            on_finish(record)
        pipeline.submit(record)
