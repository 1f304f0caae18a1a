"""Cached input tokens: from the record into the log table, the rollups and every page that shows tokens."""

import csv
import io

import pytest
from django.urls import reverse

from dashboards.models import DailyFacetUsage, DailyProjectUsage, HourlyUsage
from dashboards.templatetags.dashboard_format import number
from telemetry.exporters.postgres import COLUMNS, table_row
from tests.dashboards.conftest import export_logs, make_log
from tests.telemetry.conftest import plain_record

pytestmark = pytest.mark.django_db


def test_the_log_table_keeps_the_cached_input_of_a_record():
    record = plain_record(provider="openai")
    record.response_json["usage"] = {
        "prompt_tokens": 1_000,
        "completion_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 768},
    }

    row = dict(zip(COLUMNS, table_row(record.to_document()), strict=True))

    assert (row["input_tokens"], row["cache_read_tokens"]) == (1_000, 768)


@pytest.fixture
def cached_traffic(tenancy):
    logs = [make_log(org="acme", input_tokens=1_000 + index) for index in range(3)]
    for index, log in enumerate(logs):
        log.cache_read_tokens = 600 + index
    return export_logs(logs)


def test_rollups_sum_cached_input_separately(cached_traffic):
    for rollup in (HourlyUsage, DailyProjectUsage):
        rows = rollup.objects.filter(org_id="acme")
        assert sum(row.cache_read_tokens for row in rows) == 600 + 601 + 602
        assert sum(row.input_tokens for row in rows) == 1_000 + 1_001 + 1_002
    assert sum(row.cache_read_tokens for row in DailyFacetUsage.objects.filter(org_id="acme", dimension="")) == 1_803


def test_pages_show_cached_input(tenancy, cached_traffic, client_for):
    client = client_for(tenancy.member)
    response = client.get(reverse("dashboards:org", args=["acme"]), {"range": "7d"})

    assert response.context["page"].totals.cache_read_tokens == 1_803
    html = response.content.decode()
    assert f'data-metric="cache_read_tokens">{number(1_803)}<' in html
    assert '<th class="num">Cached input</th>' in html
    tokens_chart = response.context["page"].charts["tokens"]
    assert "Cached input tokens" in str(tokens_chart)

    export = client.get(reverse("dashboards:org_export", args=["acme"]), {"range": "7d", "by": "model"})
    rows = list(csv.DictReader(io.StringIO(export.content.decode())))
    assert sum(int(row["cached_input_tokens"]) for row in rows) == 1_803

    detail = client.get(reverse("dashboards:log_detail", args=["acme", cached_traffic[0].pk]))
    assert 'data-testid="cache-read-tokens">600<' in detail.content.decode()
