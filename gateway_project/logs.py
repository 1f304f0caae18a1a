"""Application log lines as JSON (GATEWAY_LOG_FORMAT=json), each carrying its request's ids.

A proxied request binds its record to the context it is served in, so every line logged while it
is being served names its request_id, trace_id and span_id, the ids its request log and its trace
carry: a line leads to both. Lines logged outside a request (start-up, the export workers) have none.
"""

from __future__ import annotations

import contextvars
import logging
from datetime import UTC, datetime

import orjson

_request_record: contextvars.ContextVar = contextvars.ContextVar("request_record", default=None)

# Attributes every LogRecord has; anything else was passed as `extra=` and goes into the line.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def bind_request(record) -> None:
    """Lines logged from here on in this context belong to this request record."""
    _request_record.set(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, the request's ids, and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, tz=UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request = _request_record.get()
        if request is not None:
            line["request_id"] = request.id
            line["trace_id"] = request.trace_id
            line["span_id"] = request.span_id
        for name, value in vars(record).items():
            if name not in _STANDARD_ATTRIBUTES and name not in line:
                line[name] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()
