"""Publishing documents in byte-bounded chunks, so no broker message grows past what a broker takes."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
from django.conf import settings


def byte_bounded_chunks(documents: list[dict], *, max_bytes: int) -> Iterator[list[dict]]:
    """Consecutive runs of `documents` of at most `max_bytes` of JSON each; a larger document goes alone."""
    chunk: list[dict] = []
    size = 0
    for document in documents:
        document_size = len(orjson.dumps(document)) + 1
        if chunk and size + document_size > max_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append(document)
        size += document_size
    if chunk:
        yield chunk


def publish_in_chunks(publisher, documents: list[dict]) -> None:
    """Publish the documents a chunk at a time; raises on the first chunk that fails.

    Chunks published before a failure are published again with the rest on the next
    attempt, which is harmless: every exporter skips records it already has.
    """
    for chunk in byte_bounded_chunks(documents, max_bytes=settings.TELEMETRY_PUBLISH_MAX_BYTES):
        publisher.publish(chunk)
