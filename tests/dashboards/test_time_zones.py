"""A per-user time zone: saved from the header's picker or the browser's own, applied to every
page, chart and CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import timezone

from dashboards.models import DashboardPreference
from tests.dashboards.conftest import export_logs, make_log

pytestmark = pytest.mark.django_db
TOKYO = ZoneInfo("Asia/Tokyo")


def saved_zone(user) -> str | None:
    return DashboardPreference.objects.filter(user=user).values_list("time_zone", flat=True).first()


def test_a_picked_zone_is_saved_and_the_page_shown_again(tenancy, client_for):
    client = client_for(tenancy.member)
    back = reverse("dashboards:org", args=["acme"]) + "?range=7d"
    response = client.post(reverse("dashboards:time_zone"), {"time_zone": "Asia/Tokyo", "next": back})
    assert response.status_code == 302 and response.url == back
    assert saved_zone(tenancy.member) == "Asia/Tokyo"
    page = client.get(back)
    assert page.context["page"].window.zone == "Asia/Tokyo"
    assert "<option selected>Asia/Tokyo</option>" in page.content.decode()


def test_the_browsers_zone_is_saved_on_a_first_visit(tenancy, client_for):
    client = client_for(tenancy.owner)
    first = client.get(reverse("dashboards:overview")).content.decode()
    assert 'data-saved="false"' in first and "dashboards/time_zone" in first
    response = client.post(reverse("dashboards:time_zone"), {"time_zone": "America/New_York", "detected": "on"})
    assert response.status_code == 204
    assert saved_zone(tenancy.owner) == "America/New_York"
    assert 'data-saved="true"' in client.get(reverse("dashboards:overview")).content.decode()


def test_a_bad_zone_or_a_foreign_next_url_changes_nothing(tenancy, client_for):
    client = client_for(tenancy.member)
    assert client.post(reverse("dashboards:time_zone"), {"time_zone": "Mars/Olympus"}).status_code == 400
    assert client.post(reverse("dashboards:time_zone"), {"time_zone": ""}).status_code == 400
    assert saved_zone(tenancy.member) is None
    response = client.post(reverse("dashboards:time_zone"), {"time_zone": "UTC", "next": "https://evil.example/"})
    assert response.url == reverse("dashboards:overview")
    assert client.get(reverse("dashboards:time_zone")).status_code == 405


def test_only_a_signed_in_user_saves_a_zone(tenancy, client_for):
    response = client_for(None).post(reverse("dashboards:time_zone"), {"time_zone": "Asia/Tokyo"})
    assert response.status_code == 302 and "/accounts/login/" in response.url
    assert not DashboardPreference.objects.exists()


def test_a_zone_opens_no_other_org(tenancy, traffic, client_for):
    DashboardPreference.objects.create(user=tenancy.outsider, time_zone="Asia/Tokyo")
    client = client_for(tenancy.outsider)
    assert client.get(reverse("dashboards:org", args=["acme"])).status_code == 404
    assert client.get(reverse("dashboards:logs", args=["acme"])).status_code == 404
    assert client.get(reverse("dashboards:org_export", args=["acme"])).status_code == 404
    assert client.get(reverse("dashboards:org", args=["globex"])).status_code == 200


@pytest.fixture
def around_midnight(tenancy):
    """Acme requests either side of a Tokyo midnight (15:00 UTC), three days ago."""
    day = timezone.now().astimezone(UTC).replace(hour=15, minute=0, second=0, microsecond=0) - timedelta(days=3)
    before = [make_log(org="acme", at=day - timedelta(minutes=10 + i)) for i in range(2)]
    after = [make_log(org="acme", at=day + timedelta(minutes=10 + i)) for i in range(3)]
    export_logs(before + after)
    return day


@pytest.mark.parametrize("who", ["owner", "member", "staff"])
def test_days_are_the_viewers_days(tenancy, around_midnight, client_for, who):
    DashboardPreference.objects.create(user=getattr(tenancy, who), time_zone="Asia/Tokyo")
    page = client_for(getattr(tenancy, who)).get(reverse("dashboards:org", args=["acme"]), {"range": "30d"})
    window = page.context["page"].window
    assert window.granularity == "day"
    assert window.since.astimezone(TOKYO).hour == 0
    requests = page.context["page"].charts["requests"]
    labels = requests["labels"]
    served = [a + b for a, b in zip(*(dataset["data"] for dataset in requests["datasets"]), strict=True)]
    by_day = dict(zip(labels, served, strict=True))
    # 15:00 UTC is the start of the next Tokyo day: the two before it fall on the day before.
    tokyo_day = around_midnight.astimezone(TOKYO)
    assert by_day[f"{tokyo_day:%Y-%m-%d}"] == 3
    assert by_day[f"{tokyo_day - timedelta(days=1):%Y-%m-%d}"] == 2
    assert sum(served) == 5 == page.context["page"].totals.requests


def test_without_a_zone_days_stay_utc_days(tenancy, around_midnight, client_for):
    page = client_for(tenancy.member).get(reverse("dashboards:org", args=["acme"]), {"range": "30d"})
    window = page.context["page"].window
    assert window.zone == "UTC" and window.since.hour == 0
    requests = page.context["page"].charts["requests"]
    by_day = dict(zip(requests["labels"], requests["datasets"][0]["data"], strict=True))
    assert by_day[f"{around_midnight:%Y-%m-%d}"] == 5


def test_hours_are_labelled_in_the_viewers_zone(tenancy, traffic, client_for):
    DashboardPreference.objects.create(user=tenancy.member, time_zone="Asia/Kolkata")
    page = client_for(tenancy.member).get(reverse("dashboards:org", args=["acme"]), {"range": "24h"})
    window = page.context["page"].window
    labels = page.context["page"].charts["cost"]["labels"]
    assert labels[0] == window.since.astimezone(ZoneInfo("Asia/Kolkata")).strftime("%Y-%m-%d %H:%M")
    assert labels[0].endswith(":30")
    assert "Asia/Kolkata" in page.content.decode()


def test_a_breakdown_over_local_days_counts_every_request_once(tenancy, around_midnight, traffic, client_for):
    DashboardPreference.objects.create(user=tenancy.owner, time_zone="Asia/Tokyo")
    page = client_for(tenancy.owner).get(reverse("dashboards:org", args=["acme"]), {"range": "30d"})
    by_project = next(table for table in page.context["page"].breakdowns if table.dimension == "project_id")
    assert sum(row.stats.requests for row in by_project.rows) == page.context["page"].totals.requests


def test_csv_shows_its_window_in_the_viewers_zone_with_the_offset(tenancy, traffic, client_for):
    DashboardPreference.objects.create(user=tenancy.member, time_zone="Asia/Tokyo")
    response = client_for(tenancy.member).get(
        reverse("dashboards:org_export", args=["acme"]), {"range": "30d", "by": "model"}
    )
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert rows
    start = datetime.fromisoformat(rows[0]["window_start"])
    assert rows[0]["window_start"].endswith("+09:00") and rows[0]["window_end"].endswith("+09:00")
    assert (start.hour, start.minute) == (0, 0)


def test_the_explorer_and_detail_show_times_in_the_viewers_zone(tenancy, client_for):
    at = datetime(2026, 1, 1, 23, 30, 5, tzinfo=UTC)
    [log] = export_logs([make_log(org="acme", at=at)])
    DashboardPreference.objects.create(user=tenancy.member, time_zone="Asia/Tokyo")
    client = client_for(tenancy.member)
    listing = client.get(
        reverse("dashboards:logs", args=["acme"]), {"range": "custom", "start": "2026-01-02", "end": "2026-01-02"}
    )
    html = listing.content.decode()
    assert [row.pk for row in listing.context["log_page"].rows] == [log.pk]
    assert "Time (Asia/Tokyo)" in html and "2026-01-02 08:30:05" in html
    detail = client.get(reverse("dashboards:log_detail", args=["acme", log.pk])).content.decode()
    assert "2026-01-02 08:30:05" in detail and "Asia/Tokyo" in detail


def test_days_in_a_zone_off_the_hour_start_on_the_hour_before_and_keep_every_request(
    tenancy, around_midnight, traffic, client_for
):
    DashboardPreference.objects.create(user=tenancy.member, time_zone="Asia/Kolkata")
    page = client_for(tenancy.member).get(reverse("dashboards:org", args=["acme"]), {"range": "30d"})
    window = page.context["page"].window
    buckets = window.buckets()
    assert len(buckets) == len(set(buckets)) == 30
    # 18:30 UTC is midnight in Kolkata: its day's bucket starts at 18:00.
    assert all(bucket.minute == 0 and bucket.hour == 18 for bucket in buckets)
    requests = page.context["page"].charts["requests"]
    served = sum(a + b for a, b in zip(*(dataset["data"] for dataset in requests["datasets"]), strict=True))
    acme = [log for log in traffic if log.org_id == "acme"]
    assert served == page.context["page"].totals.requests == len(acme) + 5  # and the five around midnight


def test_thirty_days_are_thirty_buckets_in_the_half_hour_before_a_kolkata_midnight():
    from zoneinfo import ZoneInfo

    from dashboards.selectors import window_from

    # 18:10 UTC is 23:40 in Kolkata; the bucket from 18:00 UTC already belongs to the next local day.
    now = datetime(2026, 12, 1, 18, 10, tzinfo=UTC)
    window = window_from(range_key="30d", now=now, zone=ZoneInfo("Asia/Kolkata"))
    buckets = window.buckets()
    assert len(buckets) == 30
    assert buckets[-1] == datetime(2026, 12, 1, 18, 0, tzinfo=UTC)
