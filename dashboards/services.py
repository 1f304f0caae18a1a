"""Writes for the dashboards: rebuilding rollups and loading demo traffic."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db import connection, connections, transaction

from dashboards import demo, rollups, thread_rollups
from dashboards.models import ThreadUsage, ThreadUser
from proxy import services as proxy_services
from proxy.models import Organisation, Project
from telemetry import services as telemetry_services

Progress = Callable[[int, int], None]
LOAD_CHUNK_ROWS = 50_000


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

    On PostgreSQL the documents are generated and stored by `workers` processes (default: one
    per core); on SQLite in this process. Either way through telemetry's bulk load.
    """
    end = end or datetime.now(UTC)
    plan = demo.plan_demo(org_count=org_count, count=count, days=days, end=end)
    _ensure_orgs(plan.orgs)
    # Their own months, rather than the request-log table's default partition.
    telemetry_services.log_partitions_cover(since=plan.start, until=end)
    chunks = plan.chunks(rows_per_chunk=LOAD_CHUNK_ROWS)
    progress(0, plan.total)
    if connection.vendor == "postgresql":
        _load_in_parallel(plan, chunks, workers=workers or os.cpu_count() or 1, progress=progress)
    else:
        done = 0
        for hours in chunks:
            done += _load(demo.generate_documents(plan=plan, hours=hours))
            progress(done, plan.total)
    rollups_rebuild(since=plan.start.date(), until=end.astimezone(UTC).date(), progress=rollup_progress)
    return SeedResult(rows=plan.total, orgs=[org.slug for org in plan.orgs], since=plan.start, until=end)


def user_time_zone_save(*, user, time_zone: str) -> None:
    """Save the time zone `user` sees the dashboards in; ValueError for a name that is not one."""
    from dashboards.models import DashboardPreference
    from dashboards.selectors import time_zone_names

    if time_zone not in time_zone_names():
        raise ValueError(f"not a time zone: {time_zone!r}")
    DashboardPreference.objects.update_or_create(user=user, defaults={"time_zone": time_zone})


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
        logs = telemetry_services.request_logs_delete(org_ids=slugs)
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


_plan_for_workers: demo.DemoPlan | None = None


def _load_chunk(hours: range) -> int:
    """Generate and store one chunk of the plan. Runs in a worker process."""
    try:
        return _load(demo.generate_documents(plan=_plan_for_workers, hours=hours))
    finally:
        # Workers end without Django's request cycle to close connections; leave none behind.
        connection.close()


def _load(documents) -> int:
    result = telemetry_services.request_logs_load(documents=documents)
    if result.refused:
        raise ValueError(f"demo documents refused by the request log: {next(iter(result.refused.values()))}")
    return result.stored


def _load_in_parallel(plan: demo.DemoPlan, chunks: list[range], *, workers: int, progress: Progress) -> None:
    global _plan_for_workers
    _plan_for_workers = plan
    # Forked workers must open their own connections, not share this process's socket.
    connections.close_all()
    done = 0
    try:
        pool = multiprocessing.get_context("fork").Pool(processes=workers)
        try:
            for rows in pool.imap_unordered(_load_chunk, chunks):
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
