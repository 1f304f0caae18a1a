"""Text search over the request and response of an org's request logs, newest first.

With Elasticsearch an enabled exporter writing its companion text indices, the index finds
the words and the database applies the filters (and the org) to its hits; otherwise the
database looks through the filtered rows itself, a bounded number per page.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import QuerySet, TextField, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Coalesce, Concat

from telemetry.models import RequestLog
from telemetry.read.logs import LIST_FIELDS, LogPage, TimeWindow, decode_cursor, encode_cursor, rows_before

# A database search looks through at most this many of the filtered rows per page, newest
# first, so that a rare word costs a bounded scan and the user pages on to older rows.
SEARCH_SCAN_ROWS = 20_000
SEARCH_CHUNK_ROWS = 2_000
# With Elasticsearch, the newest matches asked of it per page, before the database's filters.
SEARCH_INDEX_HITS = 500


def search_exporter():
    """The Elasticsearch exporter whose companion text indices serve searches, or None.

    Only when Elasticsearch is an enabled exporter (ENABLED_EXPORTERS) and writes the
    `text-<index>-*` search documents.
    """
    if "elasticsearch" not in settings.ENABLED_EXPORTERS:
        return None
    from telemetry.exporters import exporters
    from telemetry.selectors import exporter_config

    config = exporter_config(name="elasticsearch")
    if config is None or not config.enabled:
        return None
    exporter = exporters.get(config)
    return exporter if getattr(exporter, "search_index", None) else None


def searched_page(
    *, rows: QuerySet, org_id: str, window: TimeWindow, text: str, cursor: str | None, page_size: int
) -> LogPage:
    """One page of `rows` (already filtered and from the cursor on) whose content holds `text`."""
    exporter = search_exporter()
    if exporter is not None:
        return _indexed_page(
            exporter=exporter, rows=rows, org_id=org_id, window=window, text=text, cursor=cursor, page_size=page_size
        )
    return _scanned_page(rows=rows, text=text, page_size=page_size)


def _scanned_page(*, rows: QuerySet, text: str, page_size: int) -> LogPage:
    """Newest matches first, in chunks of SEARCH_CHUNK_ROWS rows: a common word fills the page from
    the first chunk, a rare one stops at SEARCH_SCAN_ROWS with a cursor to search on from."""
    content = Concat(
        Coalesce(KT("log_data__attributes__request"), Value(""), output_field=TextField()),
        Coalesce(KT("log_data__attributes__response"), Value(""), output_field=TextField()),
        output_field=TextField(),
    )
    page: list[RequestLog] = []
    scanned = 0
    while True:
        boundary = rows.only("id", "timestamp")[SEARCH_CHUNK_ROWS - 1 : SEARCH_CHUNK_ROWS].first()
        chunk = rows
        if boundary is not None:
            # Written as a plain range plus an exclusion, so that the timestamp bound is an index condition.
            chunk = rows.filter(timestamp__gte=boundary.timestamp).exclude(
                timestamp=boundary.timestamp, id__lt=boundary.pk
            )
        matches = chunk.alias(content=content).filter(content__icontains=text).only(*LIST_FIELDS)
        page += matches[: page_size + 1 - len(page)]
        if len(page) > page_size:
            return LogPage(rows=page[:page_size], next_cursor=encode_cursor(page[page_size - 1]))
        if boundary is None:
            return LogPage(rows=page, next_cursor=None)
        scanned += SEARCH_CHUNK_ROWS
        if scanned >= SEARCH_SCAN_ROWS:
            return LogPage(
                rows=page, next_cursor=encode_cursor(boundary), search_stopped_early=True, searched_rows=scanned
            )
        rows = rows_before(rows, moment=boundary.timestamp, record_id=boundary.pk)


def _indexed_page(*, exporter, rows, org_id, window, text, cursor, page_size) -> LogPage:
    # The index knows the words; the database still applies every filter and the org itself.
    until = window.until
    if cursor and (position := decode_cursor(cursor)):
        until = min(until, position[0] + timedelta(milliseconds=1))
    hits = exporter.search_matches(org_id=org_id, since=window.since, until=until, text=text, limit=SEARCH_INDEX_HITS)
    page = list(rows.filter(pk__in=[record_id for record_id, _ in hits]).only(*LIST_FIELDS)[: page_size + 1])
    if len(page) > page_size:
        return LogPage(rows=page[:page_size], next_cursor=encode_cursor(page[page_size - 1]))
    if len(hits) == SEARCH_INDEX_HITS:
        oldest = RequestLog(id=hits[-1][0], timestamp=hits[-1][1])
        return LogPage(rows=page, next_cursor=encode_cursor(oldest), search_stopped_early=True, searched_rows=len(hits))
    return LogPage(rows=page, next_cursor=None)
