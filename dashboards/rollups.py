"""Keeping the usage rollups in step with the request log.

Two ways in, one SQL shape (INSERT ... SELECT ... GROUP BY ... ON CONFLICT DO UPDATE, on
PostgreSQL and SQLite alike):

- `apply_new_rows(cursor, table)`: the Postgres exporter's after-insert hook. It runs inside
  the exporter's insert transaction with a temporary table holding only the rows that were
  new, so each record is added to the rollups exactly once, even when a batch is retried.
- `rebuild_day(day)`: deletes one day of rollups and recomputes it from the raw table, for
  backfills and demo data; or, with `from_raw=False`, only the rollups summed from the finest
  one, without reading the raw table (to fill a rollup added later).

The per-thread rollup has no time bucket and is kept by `dashboards.thread_rollups`, which
`apply_new_rows` calls too.

The facet rollups (usage per project and value of one dimension) are summed, both ways, from
rows grouped as a finer rollup's, one UNION ALL branch per dimension.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, date, datetime, time, timedelta

from django.db import connection, transaction

from dashboards.histograms import BUCKET_COUNT, bucket_sql
from dashboards.models import (
    ADDITIVE_MEASURES,
    DIMENSIONS,
    DailyFacetUsage,
    DailyProjectUsage,
    DailyUsage,
    FacetUsage,
    HourlyFacetUsage,
    HourlyProjectUsage,
    HourlyUsage,
)
from telemetry import schema

# (rollup, bucket unit); the finest first, since the others are rebuilt from it.
ROLLUPS = (
    (HourlyUsage, "hour"),
    (DailyUsage, "day"),
    (HourlyProjectUsage, "hour"),
    (DailyProjectUsage, "day"),
    (HourlyFacetUsage, "hour"),
    (DailyFacetUsage, "day"),
)
# The batch's rows grouped as the finest rollup's, while `apply_new_rows` runs.
_BATCH_USAGE = "batch_usage_rows"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Only the raw columns a rollup reads, so that the large log document is never touched.
_SOURCE_COLUMNS = ("timestamp", *schema.ROLLUP_DIMENSIONS, *schema.ROLLUP_MEASURES)
_SOURCE_SELECT = ", ".join(f'"{name}"' for name in _SOURCE_COLUMNS)


def cursor_vendor(cursor) -> str:
    """'postgresql' or 'sqlite', for a Django cursor wrapper or a raw DB-API cursor."""
    wrapped = getattr(cursor, "db", None)
    if wrapped is not None:
        return wrapped.vendor
    return "sqlite" if isinstance(cursor, sqlite3.Cursor) else "postgresql"


def execute_sql(cursor, sql: str, params: list) -> None:
    if isinstance(cursor, sqlite3.Cursor):
        # A raw sqlite3 cursor takes "?" placeholders and no "%%" escapes.
        cursor.execute(sql.replace("%s", "?").replace("%%", "%"), params)
    else:
        cursor.execute(sql, params)


def _truncate_sql(column: str, *, unit: str, vendor: str) -> str:
    if vendor == "postgresql":
        return f"date_trunc('{unit}', {column} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    # Written as Django stores datetimes on SQLite, so that ORM range filters compare correctly.
    pattern = "%%Y-%%m-%%d %%H:00:00" if unit == "hour" else "%%Y-%%m-%%d 00:00:00"
    return f"strftime('{pattern}', {column})"


def _group_by(dimensions) -> str:
    return ", ".join(str(position) for position in range(1, len(dimensions) + 2))


def _upsert_sql(*, rollup, select_sql: str) -> str:
    target = rollup._meta.db_table
    columns = ", ".join(("bucket", *rollup.dimensions, *ADDITIVE_MEASURES))
    # The conflict target is the rollup's unique key, whatever order its index lists the columns in.
    key = ", ".join(rollup._meta.constraints[0].fields)
    updates = ", ".join(f"{name} = {target}.{name} + excluded.{name}" for name in ADDITIVE_MEASURES)
    return f"INSERT INTO {target} ({columns}) {select_sql} ON CONFLICT ({key}) DO UPDATE SET {updates}"


def _from_raw_sql(*, source: str, unit: str, dimensions, vendor: str, ordered: bool = False) -> str:
    """Rollup rows for the raw log rows in `source` (a table name or a parenthesised SELECT)."""
    keys = []
    for name in dimensions:
        if name == "error_type":
            keys.append("CASE WHEN status = 'error' THEN COALESCE(error_type, '') ELSE '' END AS error_type")
        else:
            keys.append(f"COALESCE({name}, '') AS {name}")
    measures = [
        "COUNT(*)",
        "SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END)",
        "COALESCE(SUM(input_tokens), 0)",
        "COALESCE(SUM(output_tokens), 0)",
        "COALESCE(SUM(cache_read_tokens), 0)",
        "COALESCE(SUM(cost), 0)",
        "COALESCE(SUM(latency), 0)",
        "COUNT(latency)",
        "COALESCE(SUM(ttfb), 0)",
        "COUNT(ttfb)",
        # INTEGER, the histogram columns' type. The facets sum these rows again, and PostgreSQL
        # sums INTEGERs in a plain counter, BIGINTs (what COUNT gives) in a wider, slower one.
        *(f"CAST(COUNT(*) FILTER (WHERE lat_bucket = {index}) AS INTEGER)" for index in range(BUCKET_COUNT)),
        *(f"CAST(COUNT(*) FILTER (WHERE ttfb_bucket = {index}) AS INTEGER)" for index in range(BUCKET_COUNT)),
    ]
    inner = (
        f"SELECT {_SOURCE_SELECT}, "
        f"{bucket_sql('latency', vendor=vendor)} AS lat_bucket, "
        f"{bucket_sql('ttfb', vendor=vendor)} AS ttfb_bucket "
        f"FROM {source} AS raw_rows"
    )
    bucket = _truncate_sql('"timestamp"', unit=unit, vendor=vendor)
    # Named like the rollup's columns, so that the facets can be summed from these rows as from a rollup's.
    measures = [f"{sql} AS {name}" for sql, name in zip(measures, ADDITIVE_MEASURES, strict=True)]
    # "WHERE true" keeps SQLite from reading ON CONFLICT as a join constraint.
    group_by = _group_by(dimensions)
    return (
        f"SELECT {bucket} AS bucket, {', '.join(keys)}, {', '.join(measures)} "
        f"FROM ({inner}) AS src WHERE true GROUP BY {group_by}{f' ORDER BY {group_by}' if ordered else ''}"
    )


def _from_rollup_sql(*, source: str, unit: str, dimensions, vendor: str, where: str) -> str:
    """Rollup rows summed from the rows of `source`, a finer rollup's table."""
    sums = ", ".join(f"SUM({name})" for name in ADDITIVE_MEASURES)
    bucket = _truncate_sql("bucket", unit=unit, vendor=vendor)
    return (
        f"SELECT {bucket}, {', '.join(dimensions)}, {sums} FROM {source} WHERE {where} GROUP BY {_group_by(dimensions)}"
    )


def _facet_sources(rollup) -> tuple[str, ...]:
    """The dimensions a facet rollup is summed over: its facets', and what picks failed requests."""
    needed = {"org_id", "project_id", "status", "error_type", *rollup.facets}
    return tuple(name for name in DIMENSIONS if name in needed)


def _facets_sql(*, rollup, source: str, unit: str, vendor: str, where: str, ordered: bool = False) -> str:
    """Rows of the facet rollup `rollup` summed from the rows of `source`, a table with the columns
    `_facet_sources(rollup)` and the measures.

    One branch per facet, so `where` (and its parameters) appears once per facet.
    """
    bucket = _truncate_sql("bucket", unit=unit, vendor=vendor)
    measures = ", ".join(ADDITIVE_MEASURES)
    branches = []
    for dimension in rollup.facets:
        value = dimension or "''"
        # An error type is a dimension of failed requests only; the others count every request.
        condition = f"{where} AND status = 'error'" if dimension == "error_type" else where
        branches.append(
            f"SELECT {bucket} AS bucket, org_id, project_id, '{dimension}' AS dimension, {value} AS value, "
            f"{measures} FROM {source} WHERE {condition}"
        )
    sums = ", ".join(f"SUM({name})" for name in ADDITIVE_MEASURES)
    keys = _group_by(FacetUsage.dimensions)
    # "WHERE true" keeps SQLite from reading ON CONFLICT as a join constraint.
    return (
        f"SELECT bucket, {', '.join(FacetUsage.dimensions)}, {sums} FROM ({' UNION ALL '.join(branches)}) AS facets "
        f"WHERE true GROUP BY {keys}{f' ORDER BY {keys}' if ordered else ''}"
    )


def apply_new_rows(cursor, table: str) -> None:
    """Add the request-log rows in `table` to every rollup.

    Called by the Postgres exporter inside its insert transaction, with a temporary table
    holding only the rows that were new; see TELEMETRY_POSTGRES_AFTER_INSERT.
    """
    if not _IDENTIFIER.match(table):
        raise ValueError(f"not a plain table name: {table!r}")
    vendor = cursor_vendor(cursor)
    # One pass over the batch's rows (the histogram buckets and their counts are most of the
    # work) into the finest rollup's grouping; every rollup is then summed from those few rows,
    # as `rebuild_day` sums the coarser ones from the finest.
    execute_sql(cursor, f"DROP TABLE IF EXISTS {_BATCH_USAGE}", [])
    grouped = _from_raw_sql(source=table, unit="hour", dimensions=HourlyUsage.dimensions, vendor=vendor)
    execute_sql(cursor, f"CREATE TEMP TABLE {_BATCH_USAGE} AS {grouped}", [])
    for rollup, unit in ROLLUPS:
        # ORDER BY makes concurrent exporter batches lock shared rollup rows in one order, rather
        # than deadlock.
        if issubclass(rollup, FacetUsage):
            select_sql = _facets_sql(
                rollup=rollup, source=_BATCH_USAGE, unit=unit, vendor=vendor, where="true", ordered=True
            )
        else:
            summed = _from_rollup_sql(
                source=_BATCH_USAGE, unit=unit, dimensions=rollup.dimensions, vendor=vendor, where="true"
            )
            select_sql = f"{summed} ORDER BY {_group_by(rollup.dimensions)}"
        execute_sql(cursor, _upsert_sql(rollup=rollup, select_sql=select_sql), [])
    execute_sql(cursor, f"DROP TABLE {_BATCH_USAGE}", [])
    # Imported here: the thread rollup's module builds on this one.
    from dashboards import thread_rollups

    thread_rollups.apply_new_rows(cursor, table)


def raw_table() -> str:
    from telemetry import read

    return read.request_log_table()


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def raw_org_ids() -> list[str]:
    """Every distinct org_id in the raw log, by hopping along its (org_id, timestamp) index."""
    table = raw_table()
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH RECURSIVE orgs(org_id) AS ("
            f" SELECT MIN(org_id) FROM {table}"
            f" UNION ALL"
            f" SELECT (SELECT MIN(org_id) FROM {table} WHERE org_id > orgs.org_id) FROM orgs"
            f" WHERE orgs.org_id IS NOT NULL"
            f") SELECT org_id FROM orgs WHERE org_id IS NOT NULL"
        )
        return [row[0] for row in cursor.fetchall()]


def rebuild_day(day: date, *, org_ids: list[str] | None = None, from_raw: bool = True) -> None:
    """Recompute one UTC day of every rollup from the raw request log.

    `org_ids` (all orgs in the log, see `raw_org_ids`) lets PostgreSQL read the day through the
    (org_id, timestamp) index rather than scanning the table when no timestamp index serves.
    With `from_raw=False` the finest rollup is kept as it is and every other one is summed
    from it: seconds a day rather than a pass over the raw rows, for a rollup added later.
    """
    # Raw SQL parameters skip the ORM's adaptation; on SQLite that would compare ISO strings with
    # "+00:00" against stored naive ones.
    start, end = (connection.ops.adapt_datetimefield_value(moment) for moment in day_bounds(day))
    table = raw_table()
    vendor = connection.vendor
    with transaction.atomic(), connection.cursor() as cursor:
        if vendor == "postgresql":
            # Holds off new log inserts for this short transaction, so that no row is counted
            # by both the exporter's hook and this recomputation, or by neither.
            cursor.execute(f"LOCK TABLE {table} IN SHARE MODE")
            cursor.execute("SET LOCAL work_mem = '64MB'")
        for rollup, _ in ROLLUPS if from_raw else ROLLUPS[1:]:
            cursor.execute(f"DELETE FROM {rollup._meta.db_table} WHERE bucket >= %s AND bucket < %s", [start, end])
        if from_raw:
            # One pass over the day's raw rows; every coarser rollup is then summed from the finest.
            where, params = '"timestamp" >= %s AND "timestamp" < %s', [start, end]
            if org_ids is not None:
                if not org_ids:
                    return
                where = f"org_id IN ({', '.join(['%s'] * len(org_ids))}) AND {where}"
                params = [*org_ids, *params]
            source = f"(SELECT {_SOURCE_SELECT} FROM {table} WHERE {where})"
            # Written in key order, so that each org's rows of a day lie together on disk.
            select_sql = _from_raw_sql(
                source=source, unit="hour", dimensions=HourlyUsage.dimensions, vendor=vendor, ordered=True
            )
            cursor.execute(_upsert_sql(rollup=HourlyUsage, select_sql=select_sql), params)
        in_day = "bucket >= %s AND bucket < %s"
        for rollup, unit, finer in (
            (DailyUsage, "day", HourlyUsage),
            (HourlyProjectUsage, "hour", HourlyUsage),
            (DailyProjectUsage, "day", DailyUsage),
        ):
            source = finer._meta.db_table
            select_sql = _from_rollup_sql(
                source=source, unit=unit, dimensions=rollup.dimensions, vendor=vendor, where=in_day
            )
            cursor.execute(_upsert_sql(rollup=rollup, select_sql=select_sql), [start, end])
        # Each from the smallest rollup that has its facets' dimensions.
        for rollup, unit, finer in (
            (HourlyFacetUsage, "hour", HourlyProjectUsage),
            (DailyFacetUsage, "day", DailyUsage),
        ):
            source = finer._meta.db_table
            select_sql = _facets_sql(rollup=rollup, source=source, unit=unit, vendor=vendor, where=in_day)
            cursor.execute(_upsert_sql(rollup=rollup, select_sql=select_sql), [start, end] * len(rollup.facets))


def analyze() -> None:
    """Refresh the planner's statistics after a bulk rebuild, so rollup reads keep hash plans."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for rollup, _ in ROLLUPS:
            cursor.execute(f"ANALYZE {rollup._meta.db_table}")
        cursor.execute("ANALYZE dashboards_thread_usage")
        cursor.execute("ANALYZE dashboards_thread_user")
