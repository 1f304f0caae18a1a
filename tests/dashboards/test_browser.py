"""A person's walk through the dashboards in headless Chromium, against a live server.

Needs Debian's `chromium` at /usr/bin/chromium and the `playwright` Python package (never
`playwright install`: the browser comes from Debian). Screenshots go to var/test-artifacts/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings
from django.db.models import Count, Sum

from dashboards.templatetags.dashboard_format import number, usd
from telemetry.models import RequestLog
from tests.dashboards.conftest import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(settings.BASE_DIR) / "var" / "test-artifacts"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"),
    pytest.mark.django_db(transaction=True),
]

CHART_POINTS = """() => Array.from(document.querySelectorAll("canvas[data-chart]")).map((canvas) => {
  const chart = Chart.getChart(canvas);
  return {
    name: canvas.dataset.chart,
    points: chart ? chart.data.datasets[0] && chart.data.datasets[0].data.length : -1,
    sum: chart ? chart.data.datasets.reduce((total, set) => total + set.data.reduce((a, b) => a + (b || 0), 0), 0) : 0,
  };
})"""


@pytest.fixture
def expected(tenancy, traffic) -> dict:
    """What the pages should show, read before the browser starts: Playwright's sync API runs an
    event loop in this thread, and the ORM is neither allowed nor needed while it does."""
    acme = RequestLog.objects.filter(org_id="acme")
    return {
        "totals": acme.aggregate(requests=Count("id"), cost=Sum("cost"), input_tokens=Sum("input_tokens")),
        "alice": acme.filter(user_id="alice@example.com").aggregate(requests=Count("id"), cost=Sum("cost")),
        "newest": acme.order_by("-timestamp", "-id").values_list("id", flat=True).first(),
        "all": acme.count(),
        "errors": dict(acme.filter(status="error").values_list("id", "error_type")),
        "foreign": RequestLog.objects.filter(org_id="globex").values_list("id", flat=True).first(),
    }


@pytest.fixture
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        yield page
        browser.close()
        assert errors == [], errors


def charts(page) -> dict[str, dict]:
    return {chart["name"]: chart for chart in page.evaluate(CHART_POINTS)}


def test_a_member_logs_in_and_reads_the_dashboards(live_server, expected, page):
    totals, alice = expected["totals"], expected["alice"]

    page.goto(f"{live_server.url}/dashboards/")
    assert "/accounts/login/" in page.url
    page.fill("#id_username", "mike")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/dashboards/")

    # Overview: the member's one org, with its spend and request count.
    row = page.locator('[data-breakdown="org_id"] tr[data-key="acme"]')
    assert row.locator('[data-col="requests"]').inner_text() == number(totals["requests"])
    assert row.locator('[data-col="cost"]').inner_text() == usd(totals["cost"])
    assert page.locator('[data-breakdown="org_id"] tr[data-key="globex"]').count() == 0
    page.screenshot(path=str(ARTIFACTS / "dashboards-overview.png"), full_page=True)

    # Org page, reached by following the org's link.
    row.locator("a").first.click()
    page.wait_for_url("**/dashboards/orgs/acme/**")
    assert page.locator('[data-metric="requests"]').inner_text() == number(totals["requests"])
    assert page.locator('[data-metric="cost"]').inner_text() == usd(totals["cost"])
    assert page.locator('[data-metric="input_tokens"]').inner_text() == number(totals["input_tokens"])
    drawn = charts(page)
    assert set(drawn) == {"cost", "requests", "tokens", "latency", "ttfb", "error_rate", "error_types"}
    assert all(chart["points"] > 0 for chart in drawn.values()), drawn
    assert drawn["requests"]["sum"] == totals["requests"]
    assert drawn["error_types"]["sum"] == 3
    page.screenshot(path=str(ARTIFACTS / "dashboards-org.png"), full_page=True)

    # User page, from the org's breakdown by user.
    page.locator('[data-breakdown="user_id"] tr[data-key="alice@example.com"] td a').first.click()
    page.wait_for_url("**/users/alice@example.com/**")
    assert page.locator('[data-metric="requests"]').inner_text() == number(alice["requests"])
    assert page.locator('[data-metric="cost"]').inner_text() == usd(alice["cost"])
    assert charts(page)["cost"]["points"] > 0
    page.screenshot(path=str(ARTIFACTS / "dashboards-user.png"), full_page=True)

    # Log explorer, filtered to errors through the form.
    page.goto(f"{live_server.url}/dashboards/orgs/acme/logs/")
    assert page.locator("tr[data-log-id]").count() == expected["all"]
    assert page.locator("tr[data-log-id]").first.get_attribute("data-log-id") == expected["newest"]
    page.select_option("select[name=status]", "error")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**status=error**")
    assert page.locator("tr[data-log-id]").count() == len(expected["errors"])
    page.screenshot(path=str(ARTIFACTS / "dashboards-logs.png"), full_page=True)

    # Request detail, from the explorer.
    page.locator("tr[data-log-id] td a").first.click()
    page.wait_for_url("**/dashboards/orgs/acme/logs/*/")
    shown_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    assert shown_id in expected["errors"]
    assert page.locator('[data-testid="error-type"]').inner_text().startswith(expected["errors"][shown_id])
    # The request reads as a conversation; its raw JSON is one click away.
    assert page.locator('[data-testid="conversation"] .turn[data-role="user"]').count() == 1
    page.click('[data-testid="raw-json"] > summary')
    assert page.locator('[data-testid="request-json"]').inner_text().strip().startswith("{")
    page.screenshot(path=str(ARTIFACTS / "dashboards-detail.png"), full_page=True)

    # Another org's log, by guessed URL: not found.
    response = page.goto(f"{live_server.url}/dashboards/orgs/acme/logs/{expected['foreign']}/")
    assert response.status == 404
    assert os.listdir(ARTIFACTS)


@pytest.fixture
def newcomer(tenancy) -> dict:
    """A new org with three requests of tiny cost in the last hours, and errors of many types."""
    from datetime import timedelta
    from decimal import Decimal

    from django.utils import timezone

    from proxy.models import Membership, Organisation
    from tests.dashboards.conftest import export_logs, make_log

    org = Organisation.objects.create(slug="newco", name="Newco")
    Membership.objects.create(org=org, user=tenancy.member, role=Membership.Role.MEMBER)
    now = timezone.now()
    logs = [make_log(org="newco", cost=Decimal("0.0000128"), at=now - timedelta(hours=hours)) for hours in (3, 2, 1)]
    logs += [
        make_log(org="newco", status="error", error_type=f"upstream_error_kind_{index}", cost=None, at=now)
        for index in range(10)
    ]
    logs[0].log_data["attributes"]["metadata"]["provider_request_id"] = "chatcmpl-newco0001"
    export_logs(logs)
    return {"first": logs[0].pk, "cost": usd(Decimal("0.0000128") * 3)}


CANVASES = """() => Array.from(document.querySelectorAll("canvas[data-chart]")).map((canvas) => {
  const chart = Chart.getChart(canvas);
  return {
    name: canvas.dataset.chart,
    height: canvas.getBoundingClientRect().height,
    plot: chart ? chart.chartArea.bottom - chart.chartArea.top : 0,
    width: canvas.getBoundingClientRect().width,
    plotWidth: chart ? chart.chartArea.right - chart.chartArea.left : 0,
    ticks: chart ? chart.scales.y.ticks.map((tick) => tick.label) : [],
    labels: chart ? chart.data.labels : [],
  };
})"""


def log_in(page, live_server):
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", "mike")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/dashboards/")


def test_a_new_org_reads_its_first_hours(live_server, newcomer, page):
    import re

    log_in(page, live_server)
    page.goto(f"{live_server.url}/dashboards/orgs/newco/")
    assert page.locator(".subtitle").first.inner_text().startswith("Last 24 hours: ")
    assert re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} \N{EN DASH} \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", page.content())
    # Tiny costs keep their significant digits, on the card and on the cost chart's axis.
    assert page.locator('[data-metric="cost"]').inner_text() == newcomer["cost"] == "$0.0000384"
    drawn = {chart["name"]: chart for chart in page.evaluate(CANVASES)}
    assert all(chart["height"] >= 200 for chart in drawn.values()), drawn
    assert any(re.fullmatch(r"\$0\.0000\d+", tick) for tick in drawn["cost"]["ticks"]), drawn["cost"]["ticks"]
    assert len(drawn["cost"]["labels"]) == 24
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", label) for label in drawn["cost"]["labels"])
    # Ten error types: the legend stays beside the plot, which keeps most of the box's height and width.
    errors_chart = drawn["error_types"]
    assert errors_chart["plot"] >= 0.7 * errors_chart["height"], errors_chart
    assert errors_chart["plotWidth"] >= 0.6 * errors_chart["width"], errors_chart
    page.locator("#chart-error-types").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "dashboards-new-org.png"), full_page=True)

    # Dates nobody can mean: the page says so instead of failing or taking ages.
    response = page.goto(f"{live_server.url}/dashboards/orgs/newco/?range=custom&start=1000-01-01&end=9999-12-31")
    assert response.status == 400
    errors = page.locator('[data-testid="form-errors"]')
    assert errors.is_visible()
    assert "Enter a date between 2000-01-01" in errors.inner_text()
    assert page.locator("input[name=start]").input_value() == "1000-01-01"
    page.screenshot(path=str(ARTIFACTS / "dashboards-date-error.png"), full_page=True)

    # The id from a response header, pasted in the header's search box, opens that request.
    page.fill("form.find input[name=id]", newcomer["first"])
    page.press("form.find input[name=id]", "Enter")
    page.wait_for_url(f"**/dashboards/orgs/newco/logs/{newcomer['first']}/")
    assert newcomer["first"] in page.locator("h1").inner_text()
    page.screenshot(path=str(ARTIFACTS / "dashboards-find.png"), full_page=True)

    # So does the provider's id, searched in the explorer.
    page.goto(f"{live_server.url}/dashboards/orgs/newco/logs/")
    page.fill("input[name=q]", "chatcmpl-newco0001")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(f"**/dashboards/orgs/newco/logs/{newcomer['first']}/")
    page.goto(f"{live_server.url}/dashboards/orgs/newco/logs/")
    page.screenshot(path=str(ARTIFACTS / "dashboards-new-org-logs.png"), full_page=True)
