"""The admin in headless Chromium at 1440 px: list pages fit, the key form offers the chosen org's
projects, a key is issued once and revoked from its page. Screenshots go to var/test-artifacts/.

Needs Debian's `chromium` at /usr/bin/chromium and the `playwright` Python package.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib import admin
from django.urls import reverse

from proxy import services
from proxy.models import ModelRoute
from telemetry.models import RequestLog

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(settings.BASE_DIR) / "var" / "test-artifacts"
WIDTH = 1440
PASSWORD = "correct horse battery staple"

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def scene(django_user_model):
    """Orgs, projects and keys with long names, and a request log, so that every list has wide rows."""
    django_user_model.objects.create_superuser("root", "root@example.com", PASSWORD)
    acme = services.organisation_get_or_create(slug="acme-research-and-development", name="Acme Research & Development")
    globex = services.organisation_get_or_create(slug="globex", name="Globex")
    web = services.project_get_or_create(org=acme, slug="customer-support-assistant-eu-west", name="Support (EU)")
    services.project_get_or_create(org=acme, slug="search", name="Search")
    services.project_get_or_create(org=globex, slug="billing", name="Billing")
    services.gateway_key_issue(org=acme, project=web, name="production web frontend, eu-west-1 cluster")
    services.gateway_key_issue(org=globex, name="nightly evaluation")
    services.provider_credential_set(
        org=acme,
        provider="openai",
        api_key="sk-live-0123456789abcdef",
        base_url="https://llm-proxy.internal.acme.example/v1",
    )
    ModelRoute.objects.create(
        model_name="house-model-long-name", provider="groq", upstream_model="llama-3.1-8b-instant"
    )
    RequestLog.objects.create(
        id="0" * 32,
        timestamp="2026-03-04T05:06:07Z",
        log_data={"attributes": {"metadata": {}}},
        org_id=acme.slug,
        project_id=web.slug,
        user_id="someone.with.a.long.address@example.com",
        provider="openai",
        model="gpt-4o-mini-2024-07-18",
        status="success",
        status_code=200,
        input_tokens=1200,
        output_tokens=3400,
        total_tokens=4600,
        cost="0.0123",
        path="/v1/chat/completions",
        stream=True,
    )
    changelists = sorted(
        reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist") for model in admin.site._registry
    )
    return {"acme": acme, "globex": globex, "changelists": changelists}


@pytest.fixture
def page(live_server):
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_context(viewport={"width": WIDTH, "height": 900}).new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", "root")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url(f"{live_server.url}/admin/")
        yield page
        browser.close()
        assert errors == [], errors


WIDEST = """() => Math.max(document.scrollingElement.scrollWidth, ...Array.from(
  document.querySelectorAll("#changelist .results"),
  (box) => WIDTH + box.scrollWidth - box.clientWidth,
))""".replace("WIDTH", str(WIDTH))


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"admin-{name}.png"), full_page=True)


def test_every_list_page_fits_1440_px(live_server, scene, page):
    too_wide = {}
    for url in scene["changelists"]:
        page.goto(live_server.url + url)
        # The page must not scroll sideways, nor hide columns in the results' own scroll box.
        width = page.evaluate(WIDEST)
        if width > WIDTH:
            too_wide[url] = width
        if "/proxy/" in url or "requestlog" in url:
            shot(page, url.strip("/").replace("/", "-"))
    assert too_wide == {}


def test_a_key_is_issued_for_a_project_of_the_chosen_org_shown_once_and_revoked(live_server, scene, page):
    acme, globex = scene["acme"], scene["globex"]
    page.goto(live_server.url + reverse("admin:proxy_gatewaykey_add"))
    visible = "(select) => Array.from(select.options).filter((o) => !o.hidden && o.value).map((o) => o.text)"
    assert page.eval_on_selector("#id_project", visible) == []  # no org chosen yet

    page.click("#id_org + .select2 .select2-selection")
    page.fill(".select2-search__field", "acme")
    page.click(f".select2-results__option:has-text('{acme.name}')")
    offered = page.eval_on_selector("#id_project", visible)
    assert offered and all(text.startswith(acme.slug + "/") for text in offered)
    assert not any(text.startswith(globex.slug) for text in offered)
    page.select_option("#id_project", label=f"{acme.slug}/search")
    page.fill("#id_name", "from the browser")
    shot(page, "gatewaykey-add")

    page.click("input[name=_save]")
    page.wait_for_url(re.compile(r".*/issued/$"))
    plaintext = page.input_value("#issued-key")
    assert plaintext.startswith("tg-")
    shot(page, "gatewaykey-issued")
    page.reload()
    assert page.locator("#issued-key").count() == 0
    assert "cannot be shown again" in page.inner_text("#content-main")

    page.click("text=View key")
    assert "UTC" in page.inner_text("#content-main")
    shot(page, "gatewaykey-change")
    page.click("#revoke-key")
    page.wait_for_selector("text=stops working at once")
    shot(page, "gatewaykey-revoked")
    assert page.locator("#revoke-key").count() == 0
    page.goto(live_server.url + reverse("admin:proxy_gatewaykey_changelist") + "?revoked=yes")
    assert "from the browser" in page.inner_text("#result_list")
