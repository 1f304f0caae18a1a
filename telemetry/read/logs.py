"""Reading request logs: one page of an org's logs at a time, or one log by its id.

Every read names the org (or the orgs) it reads; callers decide who may see which org.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Protocol

from django.db import connection, transaction
from django.db.models import QuerySet

from telemetry.models import RequestLog

EXPLORER_PAGE_SIZE = 50
# A provider's request id is only in the document: looked for among this many newest rows.
FIND_SCAN_ROWS = 20_000


class TimeWindow(Protocol):
    """What a read needs of a window: its bounds (aware datetimes), `until` excluded."""

    since: datetime
    until: datetime


@dataclass(frozen=True)
class LogFilters:
    """Exact values the rows must have; an empty string leaves a column unfiltered.

    Each is a request-log column of the same name (see `telemetry.schema`).
    """

    project_id: str = ""
    user_id: str = ""
    provider: str = ""
    model: str = ""
    status: str = ""
    experiment_id: str = ""
    error_type: str = ""
    thread_id: str = ""
    deployment: str = ""


FILTER_COLUMNS = tuple(item.name for item in fields(LogFilters))


@dataclass
class LogPage:
    rows: list[RequestLog]
    next_cursor: str | None
    # True when a text search stopped at its scan limit before filling the page.
    search_stopped_early: bool = False
    searched_rows: int = 0


# What a page of the list shows: never the large document.
LIST_FIELDS = (
    "id",
    "timestamp",
    "org_id",
    "project_id",
    "user_id",
    "experiment_id",
    "thread_id",
    "deployment",
    "provider",
    "model",
    "status",
    "status_code",
    "error_type",
    "input_tokens",
    "output_tokens",
    "cost",
    "latency",
    "ttfb",
    "stream",
    "path",
)


def encode_cursor(row: RequestLog) -> str:
    raw = f"{row.timestamp.astimezone(UTC).isoformat()}|{row.pk}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, record_id = raw.split("|", 1)
        return datetime.fromisoformat(moment), record_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None


def filtered_rows(*, org_id: str, window: TimeWindow, filters: LogFilters, cursor: str | None) -> QuerySet:
    """The org's rows in the window that pass the filters, from the cursor on, newest first."""
    rows = RequestLog.objects.filter(org_id=org_id, timestamp__gte=window.since, timestamp__lt=window.until)
    for name in FILTER_COLUMNS:
        if value := getattr(filters, name):
            rows = rows.filter(**{name: value})
    if cursor and (position := decode_cursor(cursor)):
        rows = rows_before(rows, moment=position[0], record_id=position[1])
    return rows.order_by("-timestamp", "-id")


@contextmanager
def one_org_plans() -> Iterator[None]:
    """A transaction whose queries read one org's rows through its (org_id, timestamp) index.

    On the month-partitioned table the planner prices each row fetched through that index as a
    random disk read, and prefers walking the plain timestamp index newest first, filtering out
    every other org's rows: three to ten times the rows read for an org with a third to a tenth
    of the traffic, in each of a text search's queries. The table's hot pages are in memory, so
    the page cost of an SSD-backed cache is the one that matches.
    """
    with transaction.atomic(savepoint=False):
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL random_page_cost = 1.1")
        yield


def rows_before(rows: QuerySet, *, moment: datetime, record_id: str) -> QuerySet:
    """The rows after (older than) the row at (`moment`, `record_id`) in newest-first order.

    Written as a plain range plus an exclusion, so that the timestamp bound is an index condition.
    """
    return rows.filter(timestamp__lte=moment).exclude(timestamp=moment, id__gte=record_id)


def first_page(rows: QuerySet, *, page_size: int) -> LogPage:
    page = list(rows.only(*LIST_FIELDS)[: page_size + 1])
    next_cursor = encode_cursor(page[page_size - 1]) if len(page) > page_size else None
    return LogPage(rows=page[:page_size], next_cursor=next_cursor)


def request_log_get(*, org_id: str, request_id: str) -> RequestLog | None:
    """The request log of `org_id` with this gateway request id, or None: the org is part of the
    lookup, never checked after."""
    try:
        return RequestLog.objects.filter(org_id=org_id, pk=request_id).first()
    except ValueError:
        return None


def looks_like_request_id(text: str) -> bool:
    """Whether a search could be a request id (gateway or provider): one token, with digits."""
    text = text.strip()
    return 8 <= len(text) <= 200 and not any(c.isspace() for c in text) and any(c.isdigit() for c in text)


def request_log_find(*, org_ids: Sequence[str] | None, request_id: str) -> RequestLog | None:
    """The request log with this gateway request id (x-request-id) or provider request id, among
    the logs of `org_ids` (None: every org's), or None. Only its id and org are loaded.

    The gateway's id is the primary key. A provider's id is only in the document, so it is looked
    for among the newest FIND_SCAN_ROWS rows: the id of a request one has just made.
    """
    request_id = request_id.strip()
    if not request_id or len(request_id) > 200 or any(character.isspace() for character in request_id):
        return None
    rows = RequestLog.objects.all() if org_ids is None else RequestLog.objects.filter(org_id__in=list(org_ids))
    found = rows.filter(pk=request_id).only("id", "org_id").first()
    if found is not None:
        return found
    newest = rows.order_by("-timestamp").values("pk")[:FIND_SCAN_ROWS]
    return (
        RequestLog.objects.filter(pk__in=newest, log_data__attributes__metadata__provider_request_id=request_id)
        .only("id", "org_id")
        .order_by("-timestamp")
        .first()
    )


def request_logs_exist() -> bool:
    """Whether any request log is stored at all."""
    return RequestLog.objects.exists()


def request_log_table() -> str:
    """The request-log table, for SQL that reads its columns (the rollups)."""
    return RequestLog._meta.db_table
