"""Publishing documents in byte-bounded chunks, so no broker message grows past what a broker takes."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
from django.conf import settings


def byte_bounded_chunks(sizes: list[int], *, max_bytes: int) -> Iterator[slice]:
    """Consecutive runs of documents of the given JSON `sizes`, at most `max_bytes` each (one
    more byte per document for its separator); a larger document goes alone."""
    start, size = 0, 0
    for index, document_size in enumerate(sizes):
        document_size += 1
        if index > start and size + document_size > max_bytes:
            yield slice(start, index)
            start, size = index, 0
        size += document_size
    if start < len(sizes):
        yield slice(start, len(sizes))


def publish_in_chunks(publisher, documents: list[dict], encoded: list[bytes] | None = None) -> None:
    """Publish the documents a chunk at a time; raises on the first chunk that fails.

    `encoded` holds each document's JSON where the caller has it (the hand-off does): chunks are
    sized by it, and a publisher with `takes_encoded` publishes those bytes instead of encoding
    the documents again. Chunks published before a failure are published again with the rest
    on the next attempt, which is harmless: every exporter skips records it already has.
    """
    if encoded is None:
        encoded = [orjson.dumps(document) for document in documents]
    sizes = [len(data) for data in encoded]
    takes_encoded = getattr(publisher, "takes_encoded", False)
    for chunk in byte_bounded_chunks(sizes, max_bytes=settings.TELEMETRY_PUBLISH_MAX_BYTES):
        if takes_encoded:
            publisher.publish(documents[chunk], encoded=encoded[chunk])
        else:
            publisher.publish(documents[chunk])
