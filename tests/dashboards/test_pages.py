"""What the pages show is what the request log holds."""

import csv
import io
import json
from collections import defaultdict
from decimal import Decimal

import pytest
from django.db.models import Count, Q, Sum
from django.urls import reverse

from dashboards import histograms
from dashboards.templatetags.dashboard_format import number, usd
from telemetry.models import RequestLog

pytestmark = pytest.mark.django_db


def raw_totals(**filters):
    rows = RequestLog.objects.filter(**filters)
    totals = rows.aggregate(
        requests=Count("id"),
        errors=Count("id", filter=Q(status="error")),
        input_tokens=Sum("input_tokens"),
        output_tokens=Sum("output_tokens"),
        cost=Sum("cost"),
    )
    totals["cost"] = totals["cost"] or Decimal(0)
    totals["latency_p95"] = histograms.percentile(_histogram(rows.values_list("latency", flat=True)), 0.95)
    return totals


def _histogram(values):
    counts = [0] * histograms.BUCKET_COUNT
    for value in values:
        if value is not None:
            counts[histograms.bucket_of(value)] += 1
    return counts


def assert_totals(page_totals, expected):
    assert page_totals.requests == expected["requests"]
    assert page_totals.errors == expected["errors"]
    assert page_totals.input_tokens == expected["input_tokens"]
    assert page_totals.output_tokens == expected["output_tokens"]
    assert page_totals.cost == expected["cost"]
    assert page_totals.latency_p95 == pytest.approx(expected["latency_p95"])


def test_org_page_totals_match_the_request_log(tenancy, traffic, client_for):
    response = client_for(tenancy.member).get(reverse("dashboards:org", args=["acme"]), {"range": "7d"})
    page = response.context["page"]
    expected = raw_totals(org_id="acme")
    assert expected["requests"] == 28
    assert_totals(page.totals, expected)
    html = response.content.decode()
    assert f'data-metric="cost">{usd(expected["cost"])}<' in html
    assert number(expected["requests"]) in html
    assert f'data-metric="input_tokens">{number(expected["input_tokens"])}<' in html


def test_org_breakdowns_match_group_by_over_the_request_log(tenancy, traffic, client_for):
    page = client_for(tenancy.owner).get(reverse("dashboards:org", args=["acme"]), {"range": "24h"}).context["page"]
    tables = {table.dimension: table for table in page.breakdowns}
    assert set(tables) == {"project_id", "user_id", "model", "provider", "experiment_id", "error_type"}
    for dimension in ("project_id", "user_id", "model", "provider"):
        expected = {
            row[dimension] or "": (row["n"], row["cost"] or Decimal(0), row["tokens"])
            for row in RequestLog.objects.filter(org_id="acme")
            .values(dimension)
            .annotate(n=Count("id"), cost=Sum("cost"), tokens=Sum("input_tokens"))
        }
        shown = {
            row.stats.key: (row.stats.requests, row.stats.cost, row.stats.input_tokens)
            for row in tables[dimension].rows
        }
        assert shown == expected, dimension
    errors = {row.stats.key: row.stats.errors for row in tables["error_type"].rows}
    assert errors == {"rate_limit_error": 2, "server_error": 1}


def test_breakdown_rows_link_one_level_down(tenancy, traffic, client_for):
    response = client_for(tenancy.member).get(
        reverse("dashboards:org", args=["acme"]), {"range": "7d", "provider": "openai"}
    )
    tables = {table.dimension: table for table in response.context["page"].breakdowns}
    search = next(row for row in tables["project_id"].rows if row.stats.key == "search")
    assert search.url == "/dashboards/orgs/acme/projects/search/?range=7d&provider=openai"
    assert search.logs_url == "/dashboards/orgs/acme/logs/?range=7d&provider=openai&project=search"
    carol = next(row for row in tables["user_id"].rows if row.stats.key == "carol/with-slash")
    assert carol.url == "/dashboards/orgs/acme/users/carol/with-slash/?range=7d&provider=openai"
    model = tables["model"].rows[0]
    assert model.url == f"/dashboards/orgs/acme/?range=7d&provider=openai&model={model.stats.key}"
    html = response.content.decode().replace("&amp;", "&")
    assert search.url in html and search.logs_url in html


def test_project_page_counts_only_that_project(tenancy, traffic, client_for):
    response = client_for(tenancy.member).get(reverse("dashboards:project", args=["acme", "search"]), {"range": "7d"})
    assert_totals(response.context["page"].totals, raw_totals(org_id="acme", project_id="search"))
    users = {row.stats.key: row.stats.requests for row in response.context["page"].breakdowns[0].rows}
    expected = dict(
        RequestLog.objects.filter(org_id="acme", project_id="search").values_list("user_id").annotate(Count("id"))
    )
    assert users == expected


def test_user_page_with_a_slash_in_the_user_id(tenancy, traffic, client_for):
    url = reverse("dashboards:user", args=["acme", "carol/with-slash"])
    assert url == "/dashboards/orgs/acme/users/carol/with-slash/"
    response = client_for(tenancy.member).get(url, {"range": "7d"})
    assert response.context["end_user"] == "carol/with-slash"
    assert_totals(response.context["page"].totals, raw_totals(org_id="acme", user_id="carol/with-slash"))
    export = client_for(tenancy.member).get(
        reverse("dashboards:user_export", args=["acme", "carol/with-slash"]), {"by": "model", "range": "7d"}
    )
    assert export.status_code == 200


def test_filters_narrow_every_number(tenancy, traffic, client_for):
    client = client_for(tenancy.member)
    anthropic = client.get(reverse("dashboards:org", args=["acme"]), {"range": "7d", "provider": "anthropic"})
    assert_totals(anthropic.context["page"].totals, raw_totals(org_id="acme", provider="anthropic"))
    errors = client.get(reverse("dashboards:org", args=["acme"]), {"range": "7d", "status": "error"})
    assert_totals(errors.context["page"].totals, raw_totals(org_id="acme", status="error"))
    experiment = client.get(reverse("dashboards:org", args=["acme"]), {"range": "7d", "experiment": "prompt-v2"})
    assert experiment.context["page"].totals.requests == RequestLog.objects.filter(experiment_id="prompt-v2").count()
    # The filter survives in the querystring of the export and drill-down links.
    assert "provider=anthropic" in anthropic.context["page"].breakdowns[0].export_url


def test_overview_lists_each_visible_org_with_its_numbers(tenancy, traffic, client_for):
    page = client_for(tenancy.staff).get(reverse("dashboards:overview"), {"range": "30d"}).context["page"]
    by_org = {row.stats.key: row.stats for row in page.breakdowns[0].rows}
    assert set(by_org) == {"acme", "globex"}
    for org in ("acme", "globex"):
        expected = raw_totals(org_id=org)
        assert by_org[org].requests == expected["requests"]
        assert by_org[org].cost == expected["cost"]
        assert by_org[org].errors == expected["errors"]
        assert by_org[org].latency_p95 == pytest.approx(expected["latency_p95"])


def test_charts_carry_the_series_of_the_window(tenancy, traffic, client_for):
    response = client_for(tenancy.member).get(reverse("dashboards:org", args=["acme"]), {"range": "24h"})
    charts = json.loads(json.dumps(response.context["page"].charts))
    assert len(charts["requests"]["labels"]) == 24
    succeeded, failed = (dataset["data"] for dataset in charts["requests"]["datasets"])
    assert sum(succeeded) + sum(failed) == 28
    assert sum(failed) == 3
    assert {dataset["label"] for dataset in charts["error_types"]["datasets"]} == {"rate_limit_error", "server_error"}
    assert sum(charts["cost"]["datasets"][0]["data"]) == pytest.approx(
        float(raw_totals(org_id="acme")["cost"]), abs=1e-5
    )
    assert 'id="chart-data"' in response.content.decode()
    thirty = client_for(tenancy.member).get(reverse("dashboards:org", args=["acme"]), {"range": "30d"})
    assert len(thirty.context["page"].charts["cost"]["labels"]) == 30


def test_custom_range_uses_whole_days(tenancy, traffic, client_for):
    from django.utils import timezone

    today = timezone.now().date()
    response = client_for(tenancy.member).get(
        reverse("dashboards:org", args=["acme"]),
        {"range": "custom", "start": today.isoformat(), "end": today.isoformat()},
    )
    window = response.context["page"].window
    assert window.granularity == "hour"
    # Today from midnight UTC, up to now rather than into the future.
    start_of_today = window.since
    assert (start_of_today.hour, start_of_today.minute, start_of_today.date()) == (0, 0, today)
    assert window.until <= timezone.now()
    assert len(window.buckets()) == window.until.hour + 1
    assert (
        response.context["page"].totals.requests
        == RequestLog.objects.filter(org_id="acme", timestamp__gte=start_of_today).count()
    )


def test_csv_export_of_a_breakdown_matches_the_request_log(tenancy, traffic, client_for):
    response = client_for(tenancy.member).get(
        reverse("dashboards:org_export", args=["acme"]), {"by": "user_id", "range": "7d"}
    )
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    got = {row["user_id"]: (int(row["requests"]), Decimal(row["cost_usd"])) for row in rows}
    expected = defaultdict(lambda: [0, Decimal(0)])
    for log in RequestLog.objects.filter(org_id="acme"):
        expected[log.user_id][0] += 1
        expected[log.user_id][1] += log.cost or 0
    assert got == {user: tuple(values) for user, values in expected.items()}
    assert (
        client_for(tenancy.member)
        .get(reverse("dashboards:org_export", args=["acme"]), {"by": "secret_column"})
        .status_code
        == 404
    )


@pytest.mark.parametrize("range_key", ["24h", "7d", "30d"])
def test_facet_rollups_give_the_numbers_the_combinations_give(tenancy, traffic, monkeypatch, range_key):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from dashboards import selectors
    from dashboards.selectors import Scope, UsageFilters

    window = selectors.window_from(range_key=range_key)
    scopes = [
        Scope(org_ids=("acme",)),
        Scope(org_ids=("acme",), project_id="search"),
        Scope(org_ids=("acme", "globex"), across_orgs=True),
    ]

    def numbers(scope):
        filters = UsageFilters()
        return (
            selectors.usage_series(scope=scope, window=window, filters=filters),
            {
                by: selectors.usage_breakdown(scope=scope, window=window, filters=filters, by=by, limit=None)
                for by in selectors.BREAKDOWNS
            },
            selectors.error_type_series(scope=scope, window=window, filters=filters),
            selectors.filter_choices(scope=scope, window=window),
        )

    with CaptureQueriesContext(connection) as queries:
        from_facets = [numbers(scope) for scope in scopes]
    # Whole days come from the facets; hours from them for charts, from the combinations for breakdowns.
    reads = [query["sql"] for query in queries.captured_queries if query["sql"].startswith("SELECT")]
    read_facets = ["dashboards_facet_usage" in sql for sql in reads]
    assert all(read_facets) if range_key == "30d" else any(read_facets) and not all(read_facets)
    monkeypatch.setattr(selectors, "_answers_from_facets", lambda **kwargs: None)
    assert from_facets == [numbers(scope) for scope in scopes]
