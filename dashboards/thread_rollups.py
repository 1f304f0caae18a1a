"""Keeping the per-thread rollup (`ThreadUsage`, `ThreadUser`) in step with the request log.

Unlike the time-bucketed rollups a thread has no bucket: one row per org, project and thread
id, with its first and last request. Two ways in, as for the others (see `dashboards.rollups`):

- `apply_new_rows(cursor, table)`: from the Postgres exporter's after-insert hook, with the
  batch's new rows in `table`; each record is added exactly once.
- `rebuild(since, until)`: every thread with a request in the range, or a rollup row whose
  span meets it, recomputed whole from the raw table; for backfills, repricing and demo data.

`users` is not additive: it is recounted from `ThreadUser` (the distinct set) for the threads
a batch touched.
"""

from __future__ import annotations

from datetime import datetime

from django.db import connection, transaction

from dashboards.models import ThreadUsage, ThreadUser
from dashboards.rollups import cursor_vendor, execute_sql, raw_table

_USAGE = ThreadUsage._meta.db_table
_USERS = ThreadUser._meta.db_table
_KEY = "org_id, project_id, thread_id"
_TOUCHED_COLUMNS = "org_id text, project_id text, thread_id text"
_SUMMED = ("requests", "errors", "input_tokens", "output_tokens", "cost")


def _thread_rows_sql(*, source: str, where: str = "true") -> str:
    """One rollup row per thread of the raw rows in `source`, in key order."""
    return (
        f"SELECT org_id, COALESCE(project_id, '') AS project_id, thread_id, "
        f'MIN("timestamp"), MAX("timestamp"), COUNT(*), '
        f"SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END), "
        f"COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), COALESCE(SUM(cost), 0), 0 "
        f"FROM {source} AS raw_rows WHERE thread_id IS NOT NULL AND thread_id <> '' AND {where} "
        f"GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    )


def _thread_users_sql(*, source: str, where: str = "true") -> str:
    return (
        f"SELECT DISTINCT org_id, COALESCE(project_id, '') AS project_id, thread_id, user_id "
        f"FROM {source} AS raw_rows WHERE thread_id IS NOT NULL AND thread_id <> '' "
        f"AND user_id IS NOT NULL AND user_id <> '' AND {where} ORDER BY 1, 2, 3, 4"
    )


def _insert_sql(select_sql: str, *, vendor: str) -> str:
    earliest, latest = ("LEAST", "GREATEST") if vendor == "postgresql" else ("MIN", "MAX")
    updates = ", ".join(f"{name} = {_USAGE}.{name} + excluded.{name}" for name in _SUMMED)
    columns = f"{_KEY}, first_at, last_at, requests, errors, input_tokens, output_tokens, cost, users"
    return (
        f"INSERT INTO {_USAGE} ({columns}) {select_sql} ON CONFLICT ({_KEY}) DO UPDATE SET "
        f"first_at = {earliest}({_USAGE}.first_at, excluded.first_at), "
        f"last_at = {latest}({_USAGE}.last_at, excluded.last_at), {updates}"
    )


def _recount_users_sql(*, touched: str) -> str:
    """Set `users` of the threads listed in `touched` (a SELECT of their keys) from `ThreadUser`."""
    return (
        f"UPDATE {_USAGE} SET users = (SELECT COUNT(*) FROM {_USERS} AS seen WHERE seen.org_id = {_USAGE}.org_id "
        f"AND seen.project_id = {_USAGE}.project_id AND seen.thread_id = {_USAGE}.thread_id) "
        f"WHERE ({_KEY}) IN ({touched})"
    )


def apply_new_rows(cursor, table: str) -> None:
    """Add the request-log rows in `table` (already checked to be a plain name) to the thread rollup."""
    vendor = cursor_vendor(cursor)
    # Key order: concurrent batches lock shared thread rows in one order, rather than deadlock.
    execute_sql(cursor, _insert_sql(_thread_rows_sql(source=table), vendor=vendor), [])
    execute_sql(
        cursor, f"INSERT INTO {_USERS} ({_KEY}, user_id) {_thread_users_sql(source=table)} ON CONFLICT DO NOTHING", []
    )
    touched = (
        f"SELECT DISTINCT org_id, COALESCE(project_id, ''), thread_id FROM {table} "
        f"WHERE thread_id IS NOT NULL AND thread_id <> '' AND user_id IS NOT NULL AND user_id <> ''"
    )
    execute_sql(cursor, _recount_users_sql(touched=touched), [])


def rebuild(*, since: datetime, until: datetime) -> int:
    """Recompute, from the raw log, every thread with a request in [since, until) or a rollup row
    whose span meets it (a thread whose rows were deleted); returns the threads rewritten."""
    table = raw_table()
    start, end = (connection.ops.adapt_datetimefield_value(moment) for moment in (since, until))
    vendor = connection.vendor
    with transaction.atomic(), connection.cursor() as cursor:
        # Dropped at the end, not on commit: inside an outer transaction this one is only a savepoint.
        temp = "pg_temp" if vendor == "postgresql" else "temp"
        cursor.execute(f"DROP TABLE IF EXISTS {temp}.touched_threads")
        cursor.execute(f"CREATE TEMP TABLE touched_threads ({_TOUCHED_COLUMNS})")
        if vendor == "postgresql":
            # As `rebuild_day`: no exported batch is counted twice, or not at all, meanwhile.
            cursor.execute(f"LOCK TABLE {table} IN SHARE MODE")
            cursor.execute("SET LOCAL work_mem = '64MB'")
        cursor.execute(
            f"INSERT INTO touched_threads SELECT DISTINCT org_id, COALESCE(project_id, ''), thread_id FROM {table} "
            f'WHERE thread_id IS NOT NULL AND thread_id <> \'\' AND "timestamp" >= %s AND "timestamp" < %s '
            f"UNION SELECT {_KEY} FROM {_USAGE} WHERE last_at >= %s AND first_at < %s",
            [start, end, start, end],
        )
        if vendor == "postgresql":
            cursor.execute("ANALYZE touched_threads")
        cursor.execute("SELECT COUNT(*) FROM touched_threads")
        count = cursor.fetchone()[0]
        touched = f"SELECT {_KEY} FROM touched_threads"
        for target in (_USAGE, _USERS):
            cursor.execute(f"DELETE FROM {target} WHERE ({_KEY}) IN ({touched})")
        # The raw rows of the touched threads, found through the (org, thread) index.
        mine = f"(org_id, COALESCE(project_id, ''), thread_id) IN ({touched})"
        cursor.execute(_insert_sql(_thread_rows_sql(source=table, where=mine), vendor=vendor))
        cursor.execute(f"INSERT INTO {_USERS} ({_KEY}, user_id) {_thread_users_sql(source=table, where=mine)}")
        cursor.execute(_recount_users_sql(touched=touched))
        cursor.execute(f"DROP TABLE {temp}.touched_threads")
    with connection.cursor() as cursor:
        # A bulk rewrite leaves the planner's statistics behind until autovacuum comes round, and with
        # them a user filter's plan (seconds instead of milliseconds at millions of logs).
        cursor.execute(f"ANALYZE {_USAGE}")
        cursor.execute(f"ANALYZE {_USERS}")
    return count
