"""Telemetry's read API over the request logs: what other apps (the dashboards) read them through.

    request_log_search(*, org_id, window, text, filters, cursor) -> LogPage
    request_log_get(*, org_id, request_id) -> RequestLog | None
    request_log_find(*, org_ids, request_id) -> RequestLog | None

Writes go through `telemetry.services` (`request_logs_load`, `request_logs_delete`); the
record's fields are described once in `telemetry.schema`.
"""

from __future__ import annotations

from telemetry.models import CONTENT_HIDDEN, REQUEST_CONTENT_PERMISSION, RequestLog, document_without_content
from telemetry.read import search
from telemetry.read.logs import (
    EXPLORER_PAGE_SIZE,
    FILTER_COLUMNS,
    LogFilters,
    LogPage,
    TimeWindow,
    decode_cursor,
    encode_cursor,
    filtered_rows,
    first_page,
    looks_like_request_id,
    one_org_plans,
    request_log_find,
    request_log_get,
    request_log_table,
    request_logs_exist,
)

__all__ = [
    "CONTENT_HIDDEN",
    "EXPLORER_PAGE_SIZE",
    "FILTER_COLUMNS",
    "REQUEST_CONTENT_PERMISSION",
    "LogFilters",
    "LogPage",
    "RequestLog",
    "TimeWindow",
    "decode_cursor",
    "document_without_content",
    "encode_cursor",
    "looks_like_request_id",
    "request_log_find",
    "request_log_get",
    "request_log_search",
    "request_log_table",
    "request_logs_exist",
]


def request_log_search(
    *,
    org_id: str,
    window: TimeWindow,
    text: str = "",
    filters: LogFilters | None = None,
    cursor: str | None = None,
    page_size: int = EXPLORER_PAGE_SIZE,
) -> LogPage:
    """One page of an org's request logs in the window, newest first, paged by (timestamp, id)
    without counting: those passing `filters` and, given `text`, whose request or response holds it
    (case-insensitive)."""
    rows = filtered_rows(org_id=org_id, window=window, filters=filters or LogFilters(), cursor=cursor)
    with one_org_plans():
        if text:
            return search.searched_page(
                rows=rows, org_id=org_id, window=window, text=text, cursor=cursor, page_size=page_size
            )
        return first_page(rows, page_size=page_size)
