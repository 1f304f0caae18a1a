"""Odd and hostile input to the dashboards: date ranges nobody can mean, and CSV cells that a
spreadsheet would run as formulas."""

import csv
import io
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.dashboards.conftest import export_logs, make_log

pytestmark = pytest.mark.django_db


def usage_urls():
    return [
        reverse("dashboards:overview"),
        reverse("dashboards:org", args=["acme"]),
        reverse("dashboards:project", args=["acme", "search"]),
        reverse("dashboards:user", args=["acme", "alice@example.com"]),
        reverse("dashboards:logs", args=["acme"]),
    ]


def today():
    return timezone.now().date()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"range": "custom", "start": "1000-01-01", "end": "today"}, "Enter a date between"),
        ({"range": "custom", "start": "2020-01-01", "end": "today"}, "at most 400 days"),
        ({"range": "custom", "start": "9999-12-31", "end": "9999-12-31"}, "Enter a date between"),
        ({"range": "custom", "start": "today", "end": "9999-12-31"}, "Enter a date between"),
        ({"range": "custom", "start": "2024-02-30", "end": "today"}, "Enter a valid date"),
        ({"range": "7d", "start": "0001-01-01"}, "Enter a date between"),
    ],
)
def test_impossible_or_huge_ranges_render_the_page_with_an_error(tenancy, traffic, client_for, query, message):
    query = {key: today().isoformat() if value == "today" else value for key, value in query.items()}
    client = client_for(tenancy.member)
    for url in usage_urls():
        response = client.get(url, query)
        assert response.status_code == 400, url
        html = response.content.decode()
        assert 'data-testid="form-errors"' in html, url
        assert message in html, url
        # The page falls back to its default window rather than reading the range asked for.
        window = response.context["window"] if "window" in response.context else response.context["page"].window
        assert window.until - window.since <= timedelta(days=7), url


def test_the_longest_custom_range_is_400_days(tenancy, traffic, client_for):
    start = today() - timedelta(days=399)
    response = client_for(tenancy.member).get(
        reverse("dashboards:org", args=["acme"]), {"range": "custom", "start": start.isoformat(), "end": today()}
    )
    assert response.status_code == 200
    window = response.context["page"].window
    assert window.granularity == "day"
    assert len(response.context["page"].charts["cost"]["labels"]) == 400
    assert response.context["page"].totals.requests == 28


@pytest.mark.parametrize("name", ["overview_export", "org_export", "project_export", "user_export"])
def test_exports_refuse_impossible_ranges_without_failing(tenancy, traffic, client_for, name):
    args = {"overview_export": [], "org_export": ["acme"], "project_export": ["acme", "search"]}
    url = reverse(f"dashboards:{name}", args=args.get(name, ["acme", "alice@example.com"]))
    response = client_for(tenancy.member).get(url, {"range": "custom", "start": "9999-12-31", "end": "9999-12-31"})
    assert response.status_code == 400
    assert "Enter a date between" in response.content.decode()


HOSTILE = ['=HYPERLINK("http://evil.example")', "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd"]


@pytest.fixture
def hostile_traffic(tenancy):
    logs = []
    for index, value in enumerate(HOSTILE):
        logs.append(make_log(org="acme", user=value, model=value, experiment=value, cost=None))
        logs.append(make_log(org="acme", user="alice@example.com", model=f"{value}-{index}"))
    return export_logs(logs)


def exported_cells(response) -> list[list[str]]:
    assert response.status_code == 200
    return list(csv.reader(io.StringIO(response.content.decode())))


@pytest.mark.parametrize(
    ("name", "args", "by"),
    [
        ("overview_export", [], "model"),
        ("org_export", ["acme"], "user_id"),
        ("org_export", ["acme"], "model"),
        ("org_export", ["acme"], "experiment_id"),
        ("project_export", ["acme", "search"], "user_id"),
        ("user_export", ["acme", "alice@example.com"], "model"),
    ],
)
def test_every_csv_export_neutralises_formula_cells(tenancy, hostile_traffic, client_for, name, args, by):
    response = client_for(tenancy.member).get(reverse(f"dashboards:{name}", args=args), {"by": by, "range": "7d"})
    rows = exported_cells(response)
    keys = [row[0] for row in rows[1:]]
    dangerous = [key for key in keys if key.lstrip("'")[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert dangerous, keys
    for key in dangerous:
        assert key.startswith("'"), key
    for row in rows[1:]:
        for cell in row[1:]:
            assert cell == "" or not cell.startswith("'"), row  # numbers stay numbers
    # The value itself is kept after the quote, so the export still says who and what.
    assert "'" + HOSTILE[0] in keys or "'" + HOSTILE[0] + "-0" in keys


def test_a_user_whose_id_is_a_formula_exports_safely(tenancy, hostile_traffic, client_for):
    url = reverse("dashboards:user_export", args=["acme", '=HYPERLINK("http://evil.example")'])
    rows = exported_cells(client_for(tenancy.member).get(url, {"by": "model", "range": "7d"}))
    assert rows[1][0] == "'" + HOSTILE[0]


def test_harmless_cells_are_left_alone(tenancy, traffic, client_for):
    rows = exported_cells(
        client_for(tenancy.member).get(reverse("dashboards:org_export", args=["acme"]), {"by": "user_id"})
    )
    assert {row[0] for row in rows[1:]} >= {"alice@example.com", "bob@example.com", "carol/with-slash"}
