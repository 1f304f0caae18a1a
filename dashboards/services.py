"""Writes for the dashboards: rebuilding rollups and loading demo traffic."""

from __future__ import annotations

import multiprocessing
import operator
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta

import orjson
from django.db import connection, connections, transaction

from dashboards import demo, rollups, thread_rollups
from dashboards.models import ThreadUsage, ThreadUser
from proxy import services as proxy_services
from proxy.models import Organisation, Project
from telemetry import services as telemetry_services
from telemetry.models import RequestLog

Progress = Callable[[int, int], None]
COPY_CHUNK_ROWS = 50_000
ORM_BATCH_ROWS = 2_000


def _no_progress(done: int, total: int) -> None:
    return None


def rollups_rebuild(*, since: date, until: date, from_raw: bool = True, progress: Progress = _no_progress) -> int:
    """Recompute the rollups of every UTC day from `since` to `until`, both included; returns the day count.

    With `from_raw=False`, only the rollups summed from the hourly per-user one, which is kept:
    how a rollup added after the log filled up gets its history without a pass over the raw log.
    """
    days = [since + timedelta(days=offset) for offset in range((until - since).days + 1)]
    progress(0, len(days))
    org_ids = rollups.raw_org_ids() if from_raw else None
    for done, day in enumerate(days, start=1):
        rollups.rebuild_day(day, org_ids=org_ids, from_raw=from_raw)
        progress(done, len(days))
    if from_raw:
        threads_rebuild(since=since, until=until)
    rollups.analyze()
    return len(days)


def threads_rebuild(*, since: date, until: date) -> int:
    """Recompute the sessions rollup for every thread active from `since` to `until` (UTC days, both
    included); returns the threads rewritten. A thread is recomputed whole, days outside the range too."""
    start, _ = rollups.day_bounds(since)
    _, end = rollups.day_bounds(until)
    return thread_rollups.rebuild(since=start, until=end)


@dataclass(frozen=True)
class SeedResult:
    rows: int
    orgs: list[str]
    since: datetime
    until: datetime


def demo_logs_seed(
    *,
    count: int,
    org_count: int = 5,
    days: int = 90,
    end: datetime | None = None,
    workers: int | None = None,
    progress: Progress = _no_progress,
    rollup_progress: Progress = _no_progress,
) -> SeedResult:
    """Load `count` demo request logs over the last `days`, with their orgs and projects, then their rollups.

    On PostgreSQL the rows are generated and COPYed by `workers` processes (default: one per
    core), each chunk in its own transaction; on SQLite they go through the ORM in this process.
    """
    end = end or datetime.now(UTC)
    plan = demo.plan_demo(org_count=org_count, count=count, days=days, end=end)
    _ensure_orgs(plan.orgs)
    # Their own months, rather than the request-log table's default partition.
    telemetry_services.log_partitions_cover(since=plan.start, until=end)
    chunks = plan.chunks(rows_per_chunk=COPY_CHUNK_ROWS)
    progress(0, plan.total)
    if connection.vendor == "postgresql":
        _copy_in_parallel(plan, chunks, workers=workers or os.cpu_count() or 1, progress=progress)
    else:
        done = 0
        for hours in chunks:
            done += _bulk_create_rows(demo.generate_rows(plan=plan, hours=hours))
            progress(done, plan.total)
    rollups_rebuild(since=plan.start.date(), until=end.astimezone(UTC).date(), progress=rollup_progress)
    return SeedResult(rows=plan.total, orgs=[org.slug for org in plan.orgs], since=plan.start, until=end)


@dataclass(frozen=True)
class DemoRemoval:
    orgs: list[str]
    logs: int


def demo_data_remove() -> DemoRemoval:
    """Delete the demo orgs (their projects, keys and members with them), their request logs and rollups.

    Only orgs named as `seed_demo_logs` names them are touched; every other org keeps its data.
    """
    from dashboards import selectors

    orgs = selectors.demo_org_slugs()
    # Logs of a demo org whose row was deleted by hand go too.
    slugs = set(orgs) | {demo.demo_org_name(index)[0] for index in range(len(demo.ORG_NAMES))}
    with transaction.atomic():
        logs, _ = RequestLog.objects.filter(org_id__in=slugs).delete()
        for rollup, _unit in rollups.ROLLUPS:
            rollup.objects.filter(org_id__in=slugs).delete()
        for thread_rollup in (ThreadUsage, ThreadUser):
            thread_rollup.objects.filter(org_id__in=slugs).delete()
        Organisation.objects.filter(slug__in=orgs).delete()
    return DemoRemoval(orgs=orgs, logs=logs)


def _ensure_orgs(world: list[demo.DemoOrg]) -> None:
    with transaction.atomic():
        for spec in world:
            org = proxy_services.organisation_get_or_create(slug=spec.slug, name=spec.name)
            for slug, name, logging in spec.projects:
                project = proxy_services.project_get_or_create(org=org, slug=slug, name=name)
                if project.content_logging != logging:
                    Project.objects.filter(pk=project.pk).update(content_logging=logging)


# DemoRow fields in COPY column order; the timestamp goes in as ISO text, which is cheaper to make.
_ROW_FIELDS = [item.name for item in fields(demo.DemoRow) if item.name != "timestamp_text"]
_COPY_ATTRS = operator.attrgetter(*["timestamp_text" if name == "timestamp" else name for name in _ROW_FIELDS])
_plan_for_workers: demo.DemoPlan | None = None


def _copy_chunk(hours: range) -> int:
    """Generate and COPY one chunk of the plan, in one transaction. Runs in a worker process."""
    columns = [RequestLog._meta.get_field(name).column for name in _ROW_FIELDS]
    statement = f"COPY {RequestLog._meta.db_table} ({', '.join(columns)}) FROM STDIN"
    rows = 0
    connection.ensure_connection()
    try:
        with transaction.atomic(), connection.connection.cursor() as cursor, cursor.copy(statement) as copy:
            for row in demo.generate_rows(plan=_plan_for_workers, hours=hours):
                copy.write_row(_COPY_ATTRS(row))
                rows += 1
    finally:
        # Workers end without Django's request cycle to close connections; leave none behind.
        connection.close()
    return rows


def _copy_in_parallel(plan: demo.DemoPlan, chunks: list[range], *, workers: int, progress: Progress) -> None:
    global _plan_for_workers
    _plan_for_workers = plan
    # Forked workers must open their own connections, not share this process's socket.
    connections.close_all()
    done = 0
    try:
        pool = multiprocessing.get_context("fork").Pool(processes=workers)
        try:
            for rows in pool.imap_unordered(_copy_chunk, chunks):
                done += rows
                progress(done, plan.total)
            pool.close()
        except BaseException:
            pool.terminate()
            raise
        finally:
            pool.join()
    finally:
        _plan_for_workers = None


def _bulk_create_rows(rows) -> int:
    batch = []
    for row in rows:
        values = {name: getattr(row, name) for name in _ROW_FIELDS}
        values["log_data"] = orjson.loads(row.log_data)
        batch.append(RequestLog(**values))
    RequestLog.objects.bulk_create(batch, batch_size=ORM_BATCH_ROWS)
    return len(batch)
