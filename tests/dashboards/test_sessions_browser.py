"""Sessions in headless Chromium, against a live server: the list, a thread, a conversation with a tool call.

Same setup as test_browser.py (Debian's chromium, the playwright package); screenshots go to
var/test-artifacts/.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from dashboards.templatetags.dashboard_format import number, usd
from tests.dashboards.conftest import export_logs, make_log
from tests.dashboards.test_browser import ARTIFACTS, CHROMIUM, log_in, page  # noqa: F401 (the page fixture)
from tests.dashboards.test_sessions import THREAD, TOOL_REQUEST, in_thread

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def thread(tenancy) -> dict:
    """A support thread: a question, the answer after a tool call, a failed retry; and another thread."""
    start = timezone.now() - timedelta(hours=4)
    logs = [
        in_thread(make_log(org="acme", question="Has my refund gone through?", at=start), THREAD),
        in_thread(
            make_log(org="acme", answer="Yes: it was issued on Monday.", at=start + timedelta(minutes=1)),
            THREAD,
            request=TOOL_REQUEST,
        ),
        in_thread(
            make_log(
                org="acme",
                user="bob@example.com",
                status="error",
                error_type="rate_limit_error",
                cost=None,
                at=start + timedelta(minutes=2),
            ),
            THREAD,
        ),
        in_thread(make_log(org="acme", project="support-bot", at=start - timedelta(hours=1)), "thr-older"),
    ]
    export_logs(logs)
    support = logs[:3]
    return {
        "tool_log": logs[1].pk,
        "requests": number(len(support)),
        "cost": usd(sum(log.cost for log in support if log.cost is not None)),
        "ids": [log.pk for log in support],
    }


def test_a_member_follows_a_session_from_the_list_to_a_tool_call(live_server, thread, page):  # noqa: F811
    log_in(page, live_server)
    page.goto(f"{live_server.url}/dashboards/orgs/acme/")
    page.click('[data-testid="sessions-link"]')
    page.wait_for_url("**/dashboards/orgs/acme/sessions/")

    # The list: latest activity first, with the thread's numbers from the rollup.
    rows = page.locator("tr[data-thread-id]")
    assert [rows.nth(index).get_attribute("data-thread-id") for index in range(rows.count())] == [THREAD, "thr-older"]
    row = page.locator(f'tr[data-thread-id="{THREAD}"]')
    assert row.locator('[data-col="requests"]').inner_text() == thread["requests"]
    assert row.locator('[data-col="errors"]').inner_text() == "1"
    assert row.locator('[data-col="cost"]').inner_text() == thread["cost"]
    assert row.locator('[data-col="users"]').inner_text() == "alice@example.com, bob@example.com"
    page.screenshot(path=str(ARTIFACTS / "dashboards-sessions.png"), full_page=True)

    # Filtered to threads with errors, through the form.
    page.check("input[name=errors]")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**errors=1**")
    assert page.locator("tr[data-thread-id]").count() == 1

    # The thread: its requests in order, read as one conversation.
    row = page.locator(f'tr[data-thread-id="{THREAD}"]')
    row.locator("a").first.click()
    page.wait_for_url("**/sessions/thr-support/42/**")
    assert page.locator('[data-testid="thread-id"]').inner_text() == THREAD
    assert page.locator('[data-metric="requests"]').inner_text() == thread["requests"]
    exchanges = page.locator("section.exchange")
    assert [exchanges.nth(index).get_attribute("data-log-id") for index in range(exchanges.count())] == thread["ids"]
    first = exchanges.nth(0)
    assert first.locator('.turn[data-role="user"]').inner_text().endswith("Has my refund gone through?")
    second = exchanges.nth(1)
    assert [second.locator(".turn").nth(i).get_attribute("data-role") for i in range(2)] == ["tool", "assistant"]
    assert "Yes: it was issued on Monday." in second.locator('.turn[data-source="response"]').inner_text()
    assert "rate_limit_error happened" in exchanges.nth(2).locator('.turn[data-role="error"]').inner_text()
    page.screenshot(path=str(ARTIFACTS / "dashboards-session-thread.png"), full_page=True)

    # The request with the tool call, opened from the thread: the whole conversation.
    second.locator(".panel-head a").first.click()
    page.wait_for_url(f"**/logs/{thread['tool_log']}/")
    conversation = page.locator('[data-testid="conversation"]')
    roles = conversation.locator(".turn")
    assert [roles.nth(index).get_attribute("data-role") for index in range(roles.count())] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    call = conversation.locator('[data-part="tool_call"]')
    assert call.locator('[data-testid="tool-name"]').inner_text() == "lookup_refund"
    assert '"order_id": "4821"' in call.locator("pre").inner_text()
    assert "lookup_refund" in conversation.locator('[data-part="tool_result"]').inner_text()
    # The raw JSON stays one click away.
    raw = page.locator('[data-testid="request-json"]')
    assert not raw.is_visible()
    page.click('[data-testid="raw-json"] > summary')
    assert raw.is_visible()
    assert raw.inner_text().strip().startswith("{")
    page.locator('[data-testid="conversation"]').scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "dashboards-conversation-tool-call.png"), full_page=True)

    # Back to the thread through its link, and another org's session by guessed URL: not found.
    page.click('[data-testid="thread-link"]')
    page.wait_for_url("**/sessions/thr-support/42/**")
    response = page.goto(f"{live_server.url}/dashboards/orgs/globex/sessions/{THREAD}/")
    assert response.status == 404
