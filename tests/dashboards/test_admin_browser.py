"""The changed admin pages in headless Chromium: fixed slugs, exporter settings, hidden content, lockout."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from telemetry.models import ExporterSetting
from tests.dashboards.conftest import PASSWORD
from tests.dashboards.test_browser import ARTIFACTS, CHROMIUM, page  # noqa: F401 (the page fixture)

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def admin_pages(tenancy, traffic) -> dict:
    """Ids the pages need, read before the browser starts (no ORM while Playwright's loop runs)."""
    get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)
    setting = ExporterSetting.objects.create(
        name="elasticsearch",
        backend="telemetry.exporters.elasticsearch.ElasticsearchExporter",
        url="http://127.0.0.1:9",
        index_or_table="ai-gateway-metrics",
        options={"plain_json": True},
    )
    log = next(log for log in traffic if log.org_id == "acme" and not log.log_data["attributes"]["metadata"]["stream"])
    return {"org": tenancy.org.pk, "setting": setting.pk, "log": log.pk}


def log_in(browser_page, url: str, username: str) -> None:
    browser_page.goto(f"{url}/admin/login/?next=/admin/")
    browser_page.fill("#id_username", username)
    browser_page.fill("#id_password", PASSWORD)
    browser_page.click("input[type=submit]")
    browser_page.wait_for_url(f"{url}/admin/")


def test_a_superuser_sees_fixed_slugs_and_tests_an_exporter_from_its_page(live_server, admin_pages, page):  # noqa: F811
    log_in(page, live_server.url, "root")

    page.goto(f"{live_server.url}/admin/proxy/organisation/{admin_pages['org']}/change/")
    assert page.locator("input[name=slug]").count() == 0
    assert "acme" in page.locator("div.form-row.field-slug").inner_text()
    assert page.locator("input[name=projects-0-slug]").is_disabled()
    page.screenshot(path=str(ARTIFACTS / "admin-organisation-fixed-slug.png"), full_page=True)

    page.goto(f"{live_server.url}/admin/telemetry/exportersetting/{admin_pages['setting']}/change/")
    assert page.locator("select[name=backend]").count() == 1
    page.screenshot(path=str(ARTIFACTS / "admin-exporter-setting.png"), full_page=True)
    page.fill("input[name=url]", "http://not-saved.example")
    page.click("input[name=_test_connection]")
    page.wait_for_selector(".messagelist .error")
    message = page.locator(".messagelist .error").inner_text()
    assert "cannot connect to http://127.0.0.1:9:" in message
    assert page.locator("input[name=url]").input_value() == "http://127.0.0.1:9"
    page.screenshot(path=str(ARTIFACTS / "admin-exporter-test-failed.png"), full_page=True)

    page.goto(f"{live_server.url}/admin/telemetry/requestlog/{admin_pages['log']}/change/")
    assert "refund window" in page.content()


def test_staff_without_the_permission_see_metadata_but_no_content(live_server, admin_pages, page):  # noqa: F811
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", "stella")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/dashboards/")

    page.goto(f"{live_server.url}/dashboards/orgs/acme/logs/{admin_pages['log']}/")
    assert page.locator('[data-testid="content-hidden"]').count() == 1
    assert "refund window" not in page.content()
    assert page.locator('[data-testid="input-tokens"]').inner_text()
    page.screenshot(path=str(ARTIFACTS / "dashboards-log-content-hidden.png"), full_page=True)


def test_the_admin_login_locks_out_after_five_failures(live_server, admin_pages, page):  # noqa: F811
    for attempt in range(5):
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", "root")
        page.fill("#id_password", f"wrong-{attempt}")
        page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "root")
    page.fill("#id_password", PASSWORD)
    response_statuses: list[int] = []
    page.on("response", lambda response: response_statuses.append(response.status))
    page.click("input[type=submit]")
    page.wait_for_load_state()
    assert 429 in response_statuses
    assert "/admin/login/" in page.url
    page.screenshot(path=str(ARTIFACTS / "admin-login-locked-out.png"), full_page=True)
