"""The interface every exporter implements, and helpers they share.

An exporter writes batches of `ai_gateway_request_log` documents to one store. It stores
the document as given (which holds no HTTP headers: the record never captures them) and
nothing else about the request. It never raises for a store problem; it reports, per
record, what happened in an `ExportResult`:

- `succeeded`: stored, or already stored by an earlier attempt (every write is idempotent,
  keyed on the record id, so a retried batch never makes a second copy);
- `failed`: refused for good (the document does not fit the store's schema); these go to
  dead letters and are not retried automatically;
- `retry`: not stored for a reason that will pass (store unreachable, overloaded,
  timing out); the caller exports them again later.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson


@dataclass
class ExportResult:
    succeeded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    retry: list[str] = field(default_factory=list)
    # Why the `retry` records were not stored.
    transient_error: str = ""

    @classmethod
    def batch_failed(cls, documents: list[dict], error: str, *, done: ExportResult | None = None) -> ExportResult:
        """Everything in `documents` not already settled in `done` is to be retried."""
        result = done or cls()
        settled = set(result.succeeded) | set(result.failed)
        result.retry = [rid for rid in map(record_id, documents) if rid not in settled]
        result.transient_error = error
        return result

    @property
    def failed_transiently(self) -> bool:
        return bool(self.retry)


class ExportError(Exception):
    """Raised by `Exporter.check()` when the store cannot be used."""


class Exporter:
    """Base class: subclasses take their options as keyword-only `__init__` arguments.

    `ExporterSetting.index_or_table` is passed as the option named by `target_option`, and
    the row's batch size and flush interval as `batch_size` / `flush_interval` when the
    subclass takes them.
    """

    target_option: str | None = None

    def __init__(self, name: str):
        self.name = name

    def export(self, batch: list[dict]) -> ExportResult:
        raise NotImplementedError

    def check(self) -> str:
        """Reach the store and describe it; raises ExportError when it cannot be used."""
        raise NotImplementedError

    @property
    def location(self) -> str:
        """Where this exporter writes (a URL, a database), for messages about it."""
        return self.name

    def check_warnings(self) -> list[str]:
        """What a person should know about a store that works, e.g. that it is not the one they expect."""
        return []

    def replace(self, batch: list[dict]) -> ExportResult:
        """Overwrite the stored copies of these documents (repriced ones, say).

        A store that is the request log itself (the Postgres exporter's table) has nothing to do.
        """
        return ExportResult(succeeded=[record_id(document) for document in batch])

    def shutdown(self) -> None:
        """Release connections; called when the exporter is replaced or the process stops."""


def record_id(document: dict) -> str:
    """The record's id, or a stable stand-in for a document that has none."""
    try:
        value = document["attributes"]["id"]
    except (KeyError, TypeError):
        value = None
    if isinstance(value, str) and 0 < len(value) <= 64:
        return value
    return "sha1:" + hashlib.sha1(json_bytes(document)).hexdigest()


def json_bytes(document) -> bytes:
    try:
        return orjson.dumps(document)
    except TypeError:
        # orjson refuses integers beyond 64 bits, which the standard library takes.
        import json

        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def parse_timestamp(value) -> datetime:
    """The document's timestamp as an aware UTC datetime; ValueError when it is not one."""
    if not isinstance(value, str):
        raise ValueError(f"timestamp is not a string: {value!r}")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp has no time zone: {value!r}")
    return moment.astimezone(UTC)
