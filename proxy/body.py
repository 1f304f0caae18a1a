"""Reading a request body within limits: how large it may be and how long the client may take.

The lean handler (gateway_project/lean_handler.py) reads each proxy request's body with
`read_body` before the view runs. A body it could not read whole is described by an
`UnreadBody`, which the view answers with a 413 or a 408 once it knows who is calling.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from django.core.exceptions import RequestAborted

# How much of a rejected body its request record keeps: enough to recognise it, never the body.
PREFIX_BYTES = 256

TOO_LARGE = "too_large"
TIMED_OUT = "timed_out"


@dataclass(frozen=True, slots=True)
class UnreadBody:
    """Why reading a body stopped, and what had been seen of it by then."""

    reason: str
    # The declared size (Content-Length), or the bytes received before reading stopped.
    size: int
    prefix: bytes


def declared_length(meta: dict) -> int | None:
    value = meta.get("CONTENT_LENGTH")
    return int(value) if value and value.isdigit() else None


async def read_body(receive, *, declared: int | None, limit: int, timeout: float) -> tuple[bytes, UnreadBody | None]:
    """The whole body, or what was received of it and why reading stopped.

    A declared size over `limit` is refused before a byte is read; a chunked body is read
    only until it passes `limit`. Raises RequestAborted when the client goes away.
    """
    if declared is not None and declared > limit:
        return b"", UnreadBody(TOO_LARGE, declared, b"")
    task = asyncio.current_task()
    expired: list[bool] = []
    # A bare timer costs less than asyncio.timeout(), and every request pays for it.
    timer = asyncio.get_running_loop().call_later(timeout, _expire, task, expired)
    chunks: list[bytes] = []
    received = 0
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestAborted
            chunk = message.get("body", b"")
            if chunk:
                chunks.append(chunk)
                received += len(chunk)
                if received > limit:
                    return b"", UnreadBody(TOO_LARGE, received, _prefix(chunks))
            if not message.get("more_body", False):
                break
    except asyncio.CancelledError:
        if not expired:
            raise
        task.uncancel()
        return b"", UnreadBody(TIMED_OUT, received, _prefix(chunks))
    finally:
        timer.cancel()
    if len(chunks) == 1:
        return chunks[0], None
    return b"".join(chunks), None


def _expire(task: asyncio.Task, expired: list[bool]) -> None:
    expired.append(True)
    task.cancel()


def _prefix(chunks: list[bytes]) -> bytes:
    prefix = b""
    for chunk in chunks:
        prefix += chunk[: PREFIX_BYTES - len(prefix)]
        if len(prefix) >= PREFIX_BYTES:
            break
    return prefix
