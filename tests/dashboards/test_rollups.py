"""The rollups always equal a GROUP BY over the raw request log, however they were built."""

from collections import defaultdict
from datetime import UTC, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from dashboards import histograms, rollups
from dashboards.models import (
    DIMENSIONS,
    DailyFacetUsage,
    DailyProjectUsage,
    DailyUsage,
    HourlyFacetUsage,
    HourlyProjectUsage,
    HourlyUsage,
)
from telemetry.models import RequestLog
from tests.dashboards.conftest import export_logs, make_log

pytestmark = pytest.mark.django_db
ROLLUP_UNITS = (
    (HourlyUsage, "hour"),
    (DailyUsage, "day"),
    (HourlyProjectUsage, "hour"),
    (DailyProjectUsage, "day"),
    (HourlyFacetUsage, "hour"),
    (DailyFacetUsage, "day"),
)
FACET_ROLLUPS = (HourlyFacetUsage, DailyFacetUsage)


def _truncate(moment, unit):
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if unit == "day" else moment


def _keys(rollup, unit, log, values) -> list[tuple]:
    """The rollup rows a raw row counts in: one, or for a facet rollup one per dimension (error
    types for failed requests only)."""
    bucket = _truncate(log.timestamp, unit)
    if rollup not in FACET_ROLLUPS:
        return [(bucket, *(values[name] for name in rollup.dimensions))]
    keys = []
    for dimension in rollup.facets:
        if dimension == "error_type" and log.status != "error":
            continue
        keys.append((bucket, values["org_id"], values["project_id"], dimension, values[dimension] if dimension else ""))
    return keys


def expected_rollup(rollup, unit) -> dict:
    """The rollup computed in Python from the raw rows."""
    totals = defaultdict(lambda: defaultdict(Decimal))
    for log in RequestLog.objects.all():
        values = {
            "org_id": log.org_id or "",
            "project_id": log.project_id or "",
            "user_id": log.user_id or "",
            "experiment_id": log.experiment_id or "",
            "model": log.model or "",
            "provider": log.provider or "",
            "status": log.status,
            "error_type": (log.error_type or "") if log.status == "error" else "",
        }
        for key in _keys(rollup, unit, log, values):
            row = totals[key]
            row["requests"] += 1
            row["errors"] += log.status == "error"
            row["input_tokens"] += log.input_tokens
            row["output_tokens"] += log.output_tokens
            row["cost"] += log.cost or 0
            if log.latency is not None:
                row["latency_sum"] += log.latency
                row["latency_count"] += 1
                row[histograms.LATENCY_COLUMNS[histograms.bucket_of(log.latency)]] += 1
            if log.ttfb is not None:
                row["ttfb_sum"] += log.ttfb
                row["ttfb_count"] += 1
                row[histograms.TTFB_COLUMNS[histograms.bucket_of(log.ttfb)]] += 1
    return {key: {name: value for name, value in row.items() if value} for key, row in totals.items()}


def stored_rollup(rollup) -> dict:
    measures = [
        "requests",
        "errors",
        "input_tokens",
        "output_tokens",
        "cost",
        "latency_sum",
        "latency_count",
        "ttfb_sum",
        "ttfb_count",
        *histograms.LATENCY_COLUMNS,
        *histograms.TTFB_COLUMNS,
    ]
    stored = {}
    for row in rollup.objects.values():
        key = (row["bucket"], *(row[name] for name in rollup.dimensions))
        stored[key] = {name: Decimal(row[name]) for name in measures if row[name]}
    return stored


def assert_rollups_match_raw():
    for rollup, unit in ROLLUP_UNITS:
        assert stored_rollup(rollup) == expected_rollup(rollup, unit), rollup.__name__


def varied_batch(now, count=40):
    logs = []
    for index in range(count):
        failed = index % 7 == 0
        logs.append(
            make_log(
                org=["acme", "globex"][index % 2],
                project=[None, "search", "support"][index % 3],
                user=[None, "alice", "bob", "carol"][index % 4],
                model=["gpt-4o", "claude-3-5-haiku", "gemini-2.0-flash"][index % 3],
                provider=["openai", "anthropic", "gemini"][index % 3],
                experiment="v2" if index % 5 == 0 else None,
                status="error" if failed else "success",
                error_type=(None if index % 2 else "rate_limit_error") if failed else None,
                latency=None if index == 3 else int(1.7**index) + index,
                ttfb=None if index == 4 else 10 * index,
                cost=None if index == 5 else Decimal("0.0000123456") * index,
                input_tokens=index * 11,
                output_tokens=index * 3,
                at=now - timedelta(hours=index * 2, minutes=index),
            )
        )
    return logs


def test_apply_new_rows_on_a_batch_equals_group_by_over_raw_rows(tenancy):
    export_logs(varied_batch(timezone.now()))
    assert_rollups_match_raw()
    assert sum(HourlyUsage.objects.values_list("requests", flat=True)) == 40


def test_batches_add_up_and_each_row_is_counted_once(tenancy):
    now = timezone.now()
    batch = varied_batch(now)
    export_logs(batch[:25])
    export_logs(batch[25:])
    assert_rollups_match_raw()
    assert sum(DailyProjectUsage.objects.values_list("requests", flat=True)) == 40


def test_rebuilding_days_gives_the_same_rollups_as_incremental_updates(tenancy):
    export_logs(varied_batch(timezone.now()))
    incremental = {rollup: stored_rollup(rollup) for rollup, _ in ROLLUP_UNITS}
    first = min(RequestLog.objects.values_list("timestamp", flat=True)).date()
    for offset in range((timezone.now().date() - first).days + 1):
        rollups.rebuild_day(first + timedelta(days=offset), org_ids=rollups.raw_org_ids())
    for rollup, _ in ROLLUP_UNITS:
        assert stored_rollup(rollup) == incremental[rollup]


def test_backfill_command_rebuilds_a_range_from_raw_rows(tenancy, capsys):
    now = timezone.now()
    RequestLog.objects.bulk_create(varied_batch(now))  # raw rows only, as before the dashboards existed
    HourlyUsage.objects.create(bucket=now.replace(minute=0, second=0, microsecond=0), org_id="acme", project_id="",
                               user_id="stale", experiment_id="", model="", provider="", status="success",
                               error_type="", requests=999)  # fmt: skip
    first = min(RequestLog.objects.values_list("timestamp", flat=True)).date()
    call_command("backfill_rollups", "--since", first.isoformat(), "--until", now.date().isoformat())
    assert_rollups_match_raw()
    captured = capsys.readouterr()
    assert "rollups [" in captured.err
    assert "Rebuilt rollups for" in captured.out
    # Running it again changes nothing.
    call_command("backfill_rollups", "--since", first.isoformat(), "--until", now.date().isoformat())
    assert_rollups_match_raw()


def test_backfill_rejects_a_reversed_range(db):
    from django.core.management import CommandError

    with pytest.raises(CommandError):
        call_command("backfill_rollups", "--since", "2025-02-01", "--until", "2025-01-01")


def test_apply_new_rows_refuses_anything_but_a_table_name(db):
    from django.db import connection

    with connection.cursor() as cursor, pytest.raises(ValueError):
        rollups.apply_new_rows(cursor, "logs; DROP TABLE x")


def test_the_unique_key_is_the_bucket_and_the_dimensions():
    # The upsert's ON CONFLICT target must be exactly the unique constraint's columns.
    for rollup, _ in ROLLUP_UNITS:
        constraint = rollup._meta.constraints[0]
        assert sorted(constraint.fields) == sorted(("bucket", *rollup.dimensions)), rollup.__name__
        assert rollup.dimensions[0] == "org_id"
    assert DIMENSIONS[0] == "org_id"


def test_rebuilding_from_the_finest_rollup_fills_a_rollup_added_later(tenancy, capsys):
    export_logs(varied_batch(timezone.now()))
    DailyFacetUsage.objects.filter(dimension="user_id").delete()
    HourlyFacetUsage.objects.update(requests=0)
    first = min(RequestLog.objects.values_list("timestamp", flat=True)).date()
    today = timezone.now().date().isoformat()
    call_command("backfill_rollups", "--since", first.isoformat(), "--until", today, "--derived-only")
    assert_rollups_match_raw()
    assert "from the hourly rollup" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("counts", "quantile", "low", "high"),
    [
        ([0] * 10 + [100] + [0] * 29, 0.5, histograms.EDGES[9], histograms.EDGES[10]),
        ([50] + [0] * 38 + [50], 0.99, histograms.EDGES[-1], histograms.EDGES[-1]),
    ],
)
def test_percentiles_fall_inside_their_bucket(counts, quantile, low, high):
    value = histograms.percentile(counts, quantile)
    assert low <= value <= high


def test_percentile_of_nothing_is_none():
    assert histograms.percentile([0] * histograms.BUCKET_COUNT, 0.95) is None


def test_bucket_sql_and_python_agree_on_edges(db):
    from django.db import connection

    values = [0, 1, 2, 3, 99, 100, 1000, 1448, 1449, 60_000, 10_000_000]
    for value in values:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {histograms.bucket_sql('v', vendor=connection.vendor)} FROM (SELECT %s AS v) AS t", [value]
            )
            assert cursor.fetchone()[0] == histograms.bucket_of(value), value
