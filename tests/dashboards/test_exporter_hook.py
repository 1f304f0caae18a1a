"""The rollups fed by the real Postgres exporter's after-insert hook, retries included."""

from datetime import timedelta

import pytest
from django.utils import timezone

from dashboards.models import DailyProjectUsage, HourlyUsage
from telemetry.exporters.postgres import PostgresExporter
from tests.dashboards.conftest import make_log
from tests.dashboards.test_rollups import assert_rollups_match_raw

pytestmark = pytest.mark.django_db(transaction=True)
HOOK = "dashboards.rollups.apply_new_rows"


def documents(count: int) -> list[dict]:
    now = timezone.now()
    logs = [
        make_log(
            org="acme",
            user=f"user-{index % 3}",
            status="error" if index % 4 == 0 else "success",
            error_type="rate_limit_error" if index % 4 == 0 else None,
            latency=100 + index * 37,
            at=now - timedelta(minutes=37 * index),
        )
        for index in range(count)
    ]
    return [log.log_data for log in logs]


def test_exported_batches_update_rollups_exactly_once():
    exporter = PostgresExporter("postgres", after_insert=[HOOK])
    batch = documents(30)
    result = exporter.export(batch[:20])
    assert len(result.succeeded) == 20
    # A retried batch overlapping the first one: only the ten new records reach the rollups.
    exporter.export(batch)
    assert sum(HourlyUsage.objects.values_list("requests", flat=True)) == 30
    assert sum(DailyProjectUsage.objects.values_list("errors", flat=True)) == 8
    assert_rollups_match_raw()
