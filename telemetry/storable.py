"""Making a document one every store takes: text PostgreSQL accepts, and a bounded size.

PostgreSQL refuses NUL in text and jsonb, and no UTF-8 encoder takes a lone surrogate
(which Python's json module happily decodes from `"\\ud800"`); both become U+FFFD, so the
record is stored and billed rather than refused. Integers beyond 64 bits, which orjson,
jsonb numerics in our columns and Elasticsearch longs all refuse, are kept as strings.

A document larger than TELEMETRY_MAX_DOCUMENT_BYTES has its payload fields cut down
(streamed chunks first, then the request and response), each cut marked in
`metadata.truncated_fields`; the record itself is never dropped.
"""

from __future__ import annotations

import re

import orjson

REPLACEMENT = "\N{REPLACEMENT CHARACTER}"
TRUNCATION_MARK = "…[truncated]"
UNSTORABLE_MARK = "[not stored: nested deeper than JSON stores accept]"
_REFUSED_CHARACTERS = re.compile("[\x00\ud800-\udfff]")
_INT64 = 2**63 - 1
# Room for the marker list and the cut markers themselves.
_MARGIN_BYTES = 512
# (path under attributes, name in truncated_fields), in the order they are cut.
_PAYLOADS = (
    (("response", "streamed_data"), "attributes.response.streamed_data"),
    (("request",), "attributes.request"),
    (("response",), "attributes.response"),
)


def storable(document: dict, *, max_bytes: int) -> dict:
    """`storable_text` then `capped`, with one encoding for the common document that needs neither."""
    return storable_encoded(document, max_bytes=max_bytes)[0]


def storable_encoded(document: dict, *, max_bytes: int) -> tuple[dict, bytes]:
    """`storable`, and the JSON of what it returns: the common document is encoded once, and
    that encoding is what the hand-off sizes its chunks by and publishes."""
    try:
        encoded = orjson.dumps(document)
    except TypeError:
        document = capped(_serialisable(document), max_bytes=max_bytes)
    else:
        if b"\\u0000" not in encoded and len(encoded) <= max_bytes:
            return document, encoded
        if b"\\u0000" in encoded:
            document = _clean(document)
        document = capped(document, max_bytes=max_bytes)
    return document, orjson.dumps(document)


def storable_text(document: dict) -> dict:
    """The document, or a copy with NUL, lone surrogates and oversized integers made storable."""
    try:
        encoded = orjson.dumps(document)
    except TypeError:
        return _serialisable(document)
    return _clean(document) if b"\\u0000" in encoded else document


def _serialisable(document: dict) -> dict:
    """A document orjson refused: cleaned, and any payload it still cannot write (nested past
    its depth limit, say) replaced by a marker listed in `metadata.truncated_fields`."""
    try:
        document = _clean(document)
        orjson.dumps(document)
        return document
    except (TypeError, RecursionError):
        pass
    attributes = document["attributes"]
    replaced = []
    for key in ("request", "response"):
        try:
            attributes[key] = _clean(attributes.get(key))
            orjson.dumps(attributes[key])
        except (TypeError, RecursionError):
            attributes[key] = UNSTORABLE_MARK
            replaced.append(f"attributes.{key}")
    metadata = attributes.get("metadata")
    if isinstance(metadata, dict):
        metadata["truncated_fields"] = replaced
    return document


def _clean(value):
    if isinstance(value, str):
        return _REFUSED_CHARACTERS.sub(REPLACEMENT, value)
    if isinstance(value, dict):
        return {_clean(key) if isinstance(key, str) else key: _clean(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -_INT64 - 1 <= value <= _INT64:
        return str(value)
    return value


def capped(document: dict, *, max_bytes: int) -> dict:
    """The document within `max_bytes` of JSON, payload fields cut down as needed (see the module doc)."""
    size = len(orjson.dumps(document))
    if size <= max_bytes:
        return document
    attributes = document["attributes"]
    truncated: list[str] = []
    for path, name in _PAYLOADS:
        parent = _parent(attributes, path)
        if parent is None:
            continue
        value = parent[path[-1]]
        value_size = len(orjson.dumps(value))
        target = max(value_size - (size - max_bytes) - _MARGIN_BYTES, 0)
        parent[path[-1]] = _shrunk(value, target)
        truncated.append(name)
        size = len(orjson.dumps(document))
        if size + _MARGIN_BYTES <= max_bytes:
            break
    else:
        # Text that escapes to much more JSON than it has bytes: nothing of the payloads is kept.
        for path, _name in _PAYLOADS[1:]:
            if size + _MARGIN_BYTES > max_bytes and attributes.get(path[0]) is not None:
                attributes[path[0]] = TRUNCATION_MARK
                size = len(orjson.dumps(document))
    metadata = attributes.get("metadata")
    if isinstance(metadata, dict):
        metadata["truncated_fields"] = [*metadata.get("truncated_fields", ()), *truncated]
    return document


def _parent(attributes: dict, path: tuple[str, ...]) -> dict | None:
    parent = attributes
    for key in path[:-1]:
        parent = parent.get(key)
        if not isinstance(parent, dict):
            return None
    return parent if parent.get(path[-1]) is not None else None


def _shrunk(value, target: int):
    """`value` cut to about `target` bytes of JSON, keeping its shape where it can."""
    if isinstance(value, str):
        return _cut(value, target)
    if isinstance(value, list):
        kept, size = [], 2
        for item in value:
            size += len(orjson.dumps(item)) + 1
            if size > target:
                break
            kept.append(item)
        return kept
    if isinstance(value, dict):
        # Cap every string at one length, halving it until the whole fits.
        limit = max((len(text) for text in _strings(value)), default=0)
        while limit > 16:
            limit //= 2
            candidate = _cap_strings(value, limit)
            if len(orjson.dumps(candidate)) <= target:
                return candidate
        return {"truncated": _cut(orjson.dumps(value).decode(), target)}
    return value


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _cap_strings(value, limit: int):
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + TRUNCATION_MARK
    if isinstance(value, dict):
        return {key: _cap_strings(item, limit) for key, item in value.items()}
    if isinstance(value, list):
        return [_cap_strings(item, limit) for item in value]
    return value


def _cut(text: str, target: int) -> str:
    cut = text.encode()[: max(target - len(TRUNCATION_MARK.encode()), 0)].decode("utf-8", "ignore")
    return cut + TRUNCATION_MARK
