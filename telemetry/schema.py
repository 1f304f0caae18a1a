"""The request record's schema: every field of the `ai_gateway_request_log` document, once.

Each field names its place in the document, its Elasticsearch mapping type and, where the
request-log table keeps a copy of it, its PostgreSQL column and how a document's value becomes
that column's value. Everything that repeats the field list derives from here: the `RequestLog`
model's copied columns, the Postgres exporter's rows (`row_from_document`), the Elasticsearch
record mapping (`elasticsearch_properties`), the demo seeder and the test fixtures (which hand
documents to `telemetry.services.request_logs_load`), and the rollups' dimensions and measures.

Field names follow /work/shared/reference (attributes.*, attributes.metadata.*).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import models

from telemetry.exporters.base import parse_timestamp

_INT32 = 2**31 - 1
_INT16 = 2**15 - 1
# numeric(18, 10) holds values below 10**8.
_COST_LIMIT = 10**8


@dataclass(frozen=True)
class Field:
    """One field of the record document.

    `path` is where it sits in the document; `es` its Elasticsearch mapping type ("disabled":
    kept in `_source`, never parsed). `column` is the request-log column holding a copy of it,
    of `kind` (text, int32, int16, cost, boolean, timestamp), None for fields only the document
    holds. `default` is the column's value when the document has none. `rollup` says what the
    usage rollups make of the column: "dimension" (a key, in `ROLLUP_DIMENSIONS` order) or
    "measure" (summed).
    """

    path: tuple[str, ...]
    es: str
    column: str | None = None
    kind: str = "text"
    max_length: int | None = None
    default: Any = None
    rollup: str | None = None
    help_text: str = ""
    # Whether the column may be NULL; by default where the document may have no value.
    null: bool | None = None

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    @property
    def label(self) -> str:
        # How an error names a field: from `metadata.`, as a document's readers know it.
        return ".".join(self.path[1:]) if self.path[0] == "attributes" else self.dotted

    def value_in(self, document: dict):
        value: Any = document
        for key in self.path:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value

    def column_value(self, document: dict):
        """The column's value for `document`; ValueError when the document's value does not fit."""
        value = self.value_in(document)
        if value is None and self.kind != "timestamp":
            return self.default
        return _CONVERTERS[self.kind](self, value)

    def model_field(self) -> models.Field:
        """The `RequestLog` model field of this column."""
        nullable = self.default is None if self.null is None else self.null
        options: dict[str, Any] = {"help_text": self.help_text} if self.help_text else {}
        if self.kind == "text":
            return models.CharField(max_length=self.max_length, null=nullable, **options)
        if self.kind == "int32":
            if nullable:
                return models.IntegerField(null=True, **options)
            if self.default == 0 and self.dotted == "attributes.metadata.tokens.cache_read":
                # Added to a table already holding rows: the database fills them in too.
                return models.IntegerField(default=0, db_default=0, **options)
            return models.IntegerField(**options)
        if self.kind == "int16":
            return models.SmallIntegerField(null=nullable, **options)
        if self.kind == "cost":
            return models.DecimalField(max_digits=18, decimal_places=10, null=True, **options)
        if self.kind == "boolean":
            return models.BooleanField(**options)
        if self.kind == "timestamp":
            return models.DateTimeField(**options)
        raise ValueError(f"no model field for {self.kind!r}")


def _text(field: Field, value) -> str:
    if isinstance(value, dict | list):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    # The column is a filterable copy; the full value stays in log_data.
    return str(value)[: field.max_length]


def _integer(field: Field, value, *, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{field.label} is not a number: {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{field.label} is not finite: {value!r}")
        value = round(value)
    if not -limit <= value <= limit:
        raise ValueError(f"{field.label} is out of range: {value!r}")
    return value


def _cost(field: Field, value) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{field.label} is not a number: {value!r}")
    if abs(value) >= _COST_LIMIT:
        raise ValueError(f"{field.label} is out of range: {value!r}")
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _boolean(field: Field, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{field.label} is not a boolean: {value!r}")
    return value


_CONVERTERS: dict[str, Callable[[Field, Any], Any]] = {
    "text": _text,
    "int32": lambda field, value: _integer(field, value, limit=_INT32),
    "int16": lambda field, value: _integer(field, value, limit=_INT16),
    "cost": _cost,
    "boolean": _boolean,
    "timestamp": lambda field, value: parse_timestamp(value),
}


def _a(name: str, es: str = "keyword", **column) -> Field:
    return Field(("attributes", name), es, **column)


def _m(*names: str, es: str = "keyword", **column) -> Field:
    return Field(("attributes", "metadata", *names), es, **column)


# In document order, except that the rollup dimensions come in the order the rollups key on.
FIELDS: tuple[Field, ...] = (
    Field(("timestamp",), "date", column="timestamp", kind="timestamp", null=False),
    Field(("resource", "service", "name"), "keyword"),
    Field(("resource", "service", "version"), "keyword"),
    Field(("resource", "deployment", "environment"), "keyword"),
    Field(("name",), "keyword"),
    _a("id", column="id", max_length=64, null=False),
    _a("thread_id", column="thread_id", max_length=200),
    _a("org_id", column="org_id", max_length=100, default="", rollup="dimension"),
    _a("project_id", column="project_id", max_length=100, rollup="dimension"),
    _a("user_id", column="user_id", max_length=256, rollup="dimension"),
    _a("experiment_id", column="experiment_id", max_length=200, rollup="dimension"),
    _a("model", column="model", max_length=200, rollup="dimension"),
    _a("provider", column="provider", max_length=32, rollup="dimension"),
    _a("trace_id"),
    _a("span_id"),
    _a("request", "disabled"),
    _a("response", "disabled"),
    _m("project_id"),
    _m("project_name"),
    _m("latency", es="long", column="latency", kind="int32", rollup="measure", help_text="ms"),
    _m("ttfb", es="long", column="ttfb", kind="int32", rollup="measure", help_text="ms"),
    _m("tokens", "input", es="long", column="input_tokens", kind="int32", default=0, rollup="measure"),
    _m("tokens", "output", es="long", column="output_tokens", kind="int32", default=0, rollup="measure"),
    # None here: a document without a total has input + output (`row_from_document`).
    _m("tokens", "total", es="long", column="total_tokens", kind="int32", null=False),
    _m("tokens", "cache_read", es="long", column="cache_read_tokens", kind="int32", default=0, rollup="measure"),
    _m("tokens", "cache_write", es="long"),
    _m("tokens", "reasoning", es="long"),
    _m("cost", es="double", column="cost", kind="cost", rollup="measure"),
    _m("cost_unknown", es="boolean"),
    _m("truncated_fields"),
    _m("status", column="status", max_length=16, default="", rollup="dimension"),
    _m("path", column="path", max_length=64, default=""),
    _m("method"),
    _m("request_size", es="long"),
    _m("response_size", es="long"),
    _m("provider_latency", es="long", column="provider_latency", kind="int32", help_text="ms"),
    _m("status_code", es="integer", column="status_code", kind="int16", default=0),
    _m("provider_status_code", es="integer"),
    _m("error_count", es="integer"),
    _m("error_type", column="error_type", max_length=100, rollup="dimension"),
    _m("provider_error_count", es="integer"),
    _m("provider_error_type"),
    _m("provider_request_id"),
    _m("upstream_model"),
    # The deployment of the model group that answered (or null): a column, for the explorer's filter.
    _m("deployment", column="deployment", max_length=200),
    _m("model_group"),
    _m("fallback_used", es="boolean"),
    # Every attempt the router made: a list of these objects.
    _m("attempts", "deployment"),
    _m("attempts", "provider"),
    _m("attempts", "status", es="integer"),
    _m("attempts", "error"),
    _m("attempts", "latency_ms", es="long"),
    # The budget or rate limit that refused the request ("project_budget", "key_rpm"), or null.
    _m("limit_refused"),
    _m("stream", es="boolean", column="stream", kind="boolean", default=False),
    _m("streamed_data_truncated", es="boolean"),
    _m("client_disconnected", es="boolean"),
    _m("content_redacted", es="boolean"),
    _m("usage_estimated", es="boolean"),
    _m("error_message", es="text"),
)

BY_PATH: dict[str, Field] = {field.dotted: field for field in FIELDS}
BY_COLUMN: dict[str, Field] = {field.column: field for field in FIELDS if field.column}
# The request-log table's columns in the order rows are written: the copies, then the document.
DOCUMENT_COLUMN = "log_data"
COLUMNS: tuple[str, ...] = (*BY_COLUMN, DOCUMENT_COLUMN)
ROLLUP_DIMENSIONS: tuple[str, ...] = tuple(field.column for field in FIELDS if field.rollup == "dimension")
ROLLUP_MEASURES: tuple[str, ...] = tuple(field.column for field in FIELDS if field.rollup == "measure")
_ID = BY_COLUMN["id"]


def row_from_document(document: dict) -> tuple:
    """The request-log row (in `COLUMNS` order) of one document; ValueError when it does not fit.

    KeyError or TypeError for a document without the record's shape (attributes, metadata, id).
    """
    attributes = document["attributes"]
    metadata = attributes["metadata"]
    if not isinstance(attributes, dict) or not isinstance(metadata, dict):
        raise ValueError("attributes and attributes.metadata must be objects")
    if not isinstance(metadata.get("tokens") or {}, dict):
        raise ValueError("metadata.tokens must be an object")
    record_id = attributes["id"]
    if not isinstance(record_id, str) or not 0 < len(record_id) <= _ID.max_length:
        raise ValueError(f"attributes.id must be a string of 1 to {_ID.max_length} characters")
    values = {column: field.column_value(document) for column, field in BY_COLUMN.items()}
    if values["total_tokens"] is None:
        values["total_tokens"] = values["input_tokens"] + values["output_tokens"]
    return (*values.values(), document)


def row_values(document: dict) -> dict:
    """The request-log columns of one document by name, the document included."""
    return dict(zip(COLUMNS, row_from_document(document), strict=True))


def elasticsearch_properties() -> dict:
    """The record mapping's `properties`, nested as the document is."""
    properties: dict = {}
    for field in FIELDS:
        level = properties
        for key in field.path[:-1]:
            level = level.setdefault(key, {"properties": {}})["properties"]
        level[field.path[-1]] = {"type": "object", "enabled": False} if field.es == "disabled" else {"type": field.es}
    return properties
