"""Relaying a provider's SSE stream to the client, event by event, while keeping a copy for the log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import httpx
import orjson

from proxy.errors import ErrorFormat
from proxy.providers.base import upstream_failure
from proxy.translation import MessagesStreamTranslator
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

    def __call__(self, event: bytes, record: RequestRecord) -> bytes | None:
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
        error = getattr(self.translator, "error", None)
        if error:
            record.provider_error_type = (error.get("type") if isinstance(error, dict) else None) or "stream_error"
            record.error_type = "upstream_stream_error"
            out.append(b"data: " + orjson.dumps({"error": error}) + b"\n\n")
        if (name or payload.get("type")) == "message_stop":
            self.done = True
            out.append(DONE_EVENT)
        return b"".join(out) or None

    def finish(self, record: RequestRecord) -> bytes:
        # Anthropic's own counts, cache writes included, which the translated chunks cannot carry.
        record.usage = self.translator.provider_usage
        return b""


def stream_error_event(error_format: ErrorFormat, message: str) -> bytes:
    if error_format is ErrorFormat.ANTHROPIC:
        body = {"type": "error", "error": {"type": "api_error", "message": message}}
        return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"
    return b"data: " + orjson.dumps({"error": {"message": message, "type": "api_error", "code": None}}) + b"\n\n"


async def relay(
    upstream: httpx.Response,
    *,
    record: RequestRecord,
    transform: Callable[[bytes, RequestRecord], bytes | None],
    error_format: ErrorFormat,
    on_finish: Callable[[RequestRecord], None] | None = None,
) -> AsyncIterator[bytes]:
    """Yield the client's stream. Always closes the upstream response and hands the record off, whatever happens."""
    record.stream_events = []
    record.stream_dialect = transform.dialect
    ended = False
    try:
        pending = b""
        async for piece in upstream.aiter_raw():
            events, pending = split_events(pending + piece)
            for event in events:
                out = transform(event, record)
                if out:
                    record.mark_first_byte()
                    yield out
        if pending.strip():
            out = transform(pending.strip(b"\r\n"), record)
            if out:
                yield out
        tail = transform.finish(record)
        if tail:
            yield tail
        ended = True
    except httpx.HTTPError as exc:
        failure = upstream_failure(exc)
        record.error_type = "upstream_stream_interrupted"
        record.provider_error_type = failure.code
        ended = True
        transform.finish(record)
        yield stream_error_event(error_format, "The provider's stream ended unexpectedly.")
    except (asyncio.CancelledError, GeneratorExit):
        record.client_disconnected = True
        raise
    finally:
        if not ended:
            record.client_disconnected = True
            transform.finish(record)  # keeps the usage seen so far
        await upstream.aclose()
        if on_finish is not None:
            on_finish(record)
        record.finish(200)
        pipeline.submit(record)
