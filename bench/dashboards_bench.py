"""Dashboard page times over a large request log.

Seeds COUNT demo logs (default ten million) into the PostgreSQL database named by
DATABASE_URL, unless it already holds about that many, then requests each page REQUESTS
times in-process with Django's test client as a staff user, and prints server-side p50,
p95 and max per page.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/dashboards_bench \\
        .venv/bin/python bench/dashboards_bench.py [--count 10000000] [--requests 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000_000, help="request logs the database should hold")
    parser.add_argument("--requests", type=int, default=30, help="timed requests per page")
    parser.add_argument("--days", type=int, default=90, help="days of history to seed")
    parser.add_argument("--range", default="30d", help="dashboard range to request (24h, 7d, 30d, 90d)")
    options = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    from dashboards import selectors, services
    from dashboards.demo import DEMO_SLUG_PREFIX
    from dashboards.progress import ProgressBar
    from telemetry.models import RequestLog

    if connection.vendor != "postgresql":
        sys.exit("Set DATABASE_URL to a PostgreSQL database: this benchmark is about PostgreSQL at scale.")
    setup_test_environment()
    # The test client's host, and no debug query log growing over thousands of queries.
    settings.ALLOWED_HOSTS = ["*"]
    settings.DEBUG = False
    call_command("migrate", verbosity=0)

    existing = _estimated_rows(connection, RequestLog._meta.db_table)
    if existing < options.count * 0.95:
        print(f"Seeding {options.count:,} request logs (the table holds about {existing:,})…", flush=True)
        started = time.perf_counter()
        services.demo_logs_seed(
            count=options.count,
            days=options.days,
            progress=ProgressBar("logs   "),
            rollup_progress=ProgressBar("rollups"),
        )
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {RequestLog._meta.db_table}")
        print(f"Seeded in {time.perf_counter() - started:,.0f} s.", flush=True)
    rows = _estimated_rows(connection, RequestLog._meta.db_table)

    staff, _ = get_user_model().objects.get_or_create(
        username="bench-staff", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(staff)

    window = selectors.window_from(range_key=options.range)
    # The busiest demo org, as the demo seeding names it.
    org = f"{DEMO_SLUG_PREFIX}acme"
    org_scope = selectors.Scope(org_ids=(org,))
    no_filters = selectors.UsageFilters()
    project = selectors.usage_breakdown(scope=org_scope, window=window, filters=no_filters, by="project_id", limit=1)
    user = selectors.usage_breakdown(scope=org_scope, window=window, filters=no_filters, by="user_id", limit=1)
    if not project or not user:
        sys.exit(f"No traffic for org {org!r} in the range; seed with the demo data first.")
    query = f"?range={options.range}"
    pages = {
        "overview": f"/dashboards/{query}",
        "org": f"/dashboards/orgs/{org}/{query}",
        "project": f"/dashboards/orgs/{org}/projects/{project[0].key}/{query}",
        "user": f"/dashboards/orgs/{org}/users/{user[0].key}/{query}",
        "org 24h": f"/dashboards/orgs/{org}/?range=24h",
        "org 7d": f"/dashboards/orgs/{org}/?range=7d",
        "explorer": f"/dashboards/orgs/{org}/logs/{query}",
        "explorer filtered": f"/dashboards/orgs/{org}/logs/{query}&provider=openai&status=error",
        "explorer search": f"/dashboards/orgs/{org}/logs/{query}&q=refund",
        "csv by user": f"/dashboards/orgs/{org}/export.csv{query}&by=user_id",
        # A filter needs the combinations, not the per-dimension facets: the slower way in.
        "org filtered": f"/dashboards/orgs/{org}/{query}&provider=openai",
    }
    print(f"\n{rows:,} request logs; range {options.range}; {options.requests} requests per page (after 3 warm-up)")
    print(f"{'page':<20}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}  url")
    for name, url in pages.items():
        for _ in range(3):
            _get(client, url)
        timings = sorted(_get(client, url) for _ in range(options.requests))
        p95 = timings[max(0, round(0.95 * len(timings)) - 1)]
        print(f"{name:<20}{statistics.median(timings):>10.1f}{p95:>10.1f}{timings[-1]:>10.1f}  {url}")


def _get(client, url: str) -> float:
    started = time.perf_counter()
    response = client.get(url)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"{url} answered {response.status_code}")
    return elapsed


def _estimated_rows(connection, table: str) -> int:
    """The planner's row estimate: instant, where COUNT(*) over ten million rows is not."""
    with connection.cursor() as cursor:
        # Summed over the partitions: a partitioned table has no estimate of its own.
        cursor.execute(
            "SELECT sum(greatest(reltuples, 0))::bigint FROM pg_class"
            " WHERE oid IN (SELECT relid FROM pg_partition_tree(to_regclass(%s)) WHERE isleaf)",
            [table],
        )
        row = cursor.fetchone()
        estimate = row[0] or 0 if row else 0
        if estimate == 0:
            cursor.execute(f"SELECT COUNT(*) FROM (SELECT 1 FROM {table} LIMIT 1000) AS sample")
            estimate = cursor.fetchone()[0]
    return estimate


if __name__ == "__main__":
    main()
