"""A new org, project or user with only a few hours of data: the default view is readable."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from dashboards import selectors
from dashboards.templatetags.dashboard_format import usd
from proxy.models import Membership, Organisation, Project
from tests.dashboards.conftest import export_logs, make_log

pytestmark = pytest.mark.django_db

HOUR_LABEL = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$")
DAY_LABEL = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@pytest.fixture
def newcomer(tenancy):
    org = Organisation.objects.create(slug="newco", name="Newco")
    Project.objects.create(org=org, slug="pilot", name="Pilot")
    Membership.objects.create(org=org, user=tenancy.member, role=Membership.Role.MEMBER)
    now = timezone.now()
    export_logs(
        [
            make_log(org="newco", project="pilot", user="first@newco.example", cost=Decimal("0.0000128"), at=at)
            for at in (now - timedelta(hours=3), now - timedelta(hours=2), now - timedelta(minutes=20))
        ]
    )
    return org


def newcomer_urls():
    return [
        reverse("dashboards:org", args=["newco"]),
        reverse("dashboards:project", args=["newco", "pilot"]),
        reverse("dashboards:user", args=["newco", "first@newco.example"]),
    ]


def test_a_few_hours_of_data_show_the_last_24_hours_by_default(tenancy, newcomer, client_for):
    client = client_for(tenancy.member)
    for url in newcomer_urls():
        page = client.get(url).context["page"]
        assert page.window.key == "24h", url
        assert len(page.charts["requests"]["labels"]) == 24, url
        assert sum(page.charts["requests"]["datasets"][0]["data"]) == 3, url
    # A range chosen on purpose is kept.
    assert client.get(newcomer_urls()[0], {"range": "7d"}).context["page"].window.key == "7d"


def test_older_data_keeps_the_default_week(tenancy, traffic, client_for):
    export_logs([make_log(org="acme", at=timezone.now() - timedelta(days=3))])
    page = client_for(tenancy.member).get(reverse("dashboards:org", args=["acme"])).context["page"]
    assert page.window.key == selectors.DEFAULT_RANGE
    assert page.window.key == "7d"


@pytest.mark.parametrize("range_key", ["24h", "7d", "30d", "90d"])
def test_no_window_ends_in_the_future(range_key):
    now = timezone.now()
    window = selectors.window_from(range_key=range_key, now=now)
    assert window.until <= now
    # The bucket of the current hour (or day) is still in it.
    assert window.buckets()[-1] <= now < window.buckets()[-1] + window.step


def test_a_custom_range_ending_today_ends_now(tenancy, traffic, client_for):
    today = timezone.now().date()
    before = timezone.now()
    page = (
        client_for(tenancy.member)
        .get(
            reverse("dashboards:org", args=["acme"]),
            {"range": "custom", "start": today - timedelta(days=2), "end": today},
        )
        .context["page"]
    )
    assert before <= page.window.until <= timezone.now()
    assert page.window.label == f"{today - timedelta(days=2):%Y-%m-%d} to {today:%Y-%m-%d}"


def test_small_costs_show_significant_digits():
    assert usd(Decimal("0.0000128")) == "$0.0000128"
    assert usd(Decimal("0.0000128456")) == "$0.0000128"
    assert usd(Decimal("0.00015")) == "$0.00015"
    assert usd(Decimal("0.0042")) == "$0.0042"
    assert usd(Decimal("0.5")) == "$0.50"
    assert usd(Decimal("1234.5")) == "$1,234.50"
    assert usd(Decimal("0")) == "$0.00"


def test_the_cost_card_and_chart_keep_tiny_costs(tenancy, newcomer, client_for):
    response = client_for(tenancy.member).get(reverse("dashboards:org", args=["newco"]))
    assert 'data-metric="cost">$0.0000384<' in response.content.decode()
    assert sum(response.context["page"].charts["cost"]["datasets"][0]["data"]) == pytest.approx(0.0000384)


def test_dates_and_labels_use_iso_format(tenancy, traffic, client_for):
    client = client_for(tenancy.member)
    for range_key, pattern in (("24h", HOUR_LABEL), ("7d", HOUR_LABEL), ("30d", DAY_LABEL)):
        response = client.get(reverse("dashboards:org", args=["acme"]), {"range": range_key})
        labels = response.context["page"].charts["cost"]["labels"]
        assert all(pattern.match(label) for label in labels), labels[:3]
        html = response.content.decode()
        window = response.context["page"].window
        assert f"{window.since:%Y-%m-%d %H:%M}" in html
    html = client.get(reverse("dashboards:logs", args=["acme"])).content.decode()
    assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} \N{EN DASH} \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", html)
    # Date inputs take and show ISO dates whatever the browser's locale.
    assert 'name="start" placeholder="YYYY-MM-DD"' in html
    assert (
        client.get(reverse("dashboards:org", args=["acme"]), {"range": "custom", "start": "11/02/2026"}).status_code
        == 400
    )


def test_errors_by_type_keep_a_bounded_legend(tenancy, client_for):
    export_logs(
        [
            make_log(org="acme", status="error", error_type=f"error_kind_{index}", cost=None)
            for index in range(12)
            for _ in range(index + 1)
        ]
    )
    chart = (
        client_for(tenancy.member).get(reverse("dashboards:org", args=["acme"])).context["page"].charts["error_types"]
    )
    labels = [dataset["label"] for dataset in chart["datasets"]]
    assert len(labels) <= 8
    assert labels[0] == "error_kind_11"
    assert labels[-1] == "other"
    assert sum(sum(dataset["data"]) for dataset in chart["datasets"]) == sum(range(1, 13))
