"""Sessions: the per-thread rollup, the sessions list, a thread's page and the conversation view."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from dashboards import services
from dashboards.models import ThreadUsage, ThreadUser
from telemetry import threads
from telemetry.models import RequestLog
from tests.dashboards.conftest import export_logs, make_log

pytestmark = pytest.mark.django_db

THREAD = "thr-support/42"
TOOL_REQUEST = {
    "model": "gpt-4o-mini",
    "tools": [{"type": "function", "function": {"name": "lookup_refund", "parameters": {}}}],
    "messages": [
        {"role": "system", "content": "You are a support agent."},
        {"role": "user", "content": "Has my refund for order 4821 gone through?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup_refund", "arguments": '{"order_id": "4821"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "issued"}'},
    ],
}


def in_thread(log: RequestLog, thread_id: str, *, request: dict | None = None) -> RequestLog:
    log.thread_id = thread_id
    log.log_data["attributes"]["thread_id"] = thread_id
    if request is not None:
        log.log_data["attributes"]["request"] = request
    return log


@pytest.fixture
def conversations(tenancy) -> dict:
    """A support thread of three requests by two users (a tool call, then an error), a redacted
    thread, a thread without a project, requests without a thread, and a globex thread."""
    now = timezone.now()
    first = now - timedelta(hours=5)
    support = [
        in_thread(make_log(org="acme", question="Has my refund gone through?", at=first), THREAD),
        in_thread(
            make_log(org="acme", answer="Yes, it was issued.", cost=Decimal("0.0002"), at=first + timedelta(minutes=1)),
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
                output_tokens=0,
                at=first + timedelta(minutes=2),
            ),
            THREAD,
        ),
    ]
    redacted = in_thread(
        make_log(org="acme", project="extraction", redacted=True, stream=True, at=now - timedelta(hours=2)),
        "thr-private",
    )
    projectless = in_thread(make_log(org="acme", project=None, at=now - timedelta(hours=3)), "thr-loose")
    loose = make_log(org="acme", at=now - timedelta(hours=1))
    foreign = in_thread(make_log(org="globex", question="globex confidential", at=now - timedelta(hours=1)), THREAD)
    export_logs([*support, redacted, projectless, loose, foreign])
    return {"support": support, "redacted": redacted, "projectless": projectless, "foreign": foreign}


def rollup_rows() -> list[tuple]:
    return sorted(
        ThreadUsage.objects.values_list(
            "org_id",
            "project_id",
            "thread_id",
            "first_at",
            "last_at",
            "requests",
            "errors",
            "input_tokens",
            "output_tokens",
            "cost",
            "users",
        )
    )


def test_exported_records_add_up_per_thread(conversations):
    support = conversations["support"]
    row = ThreadUsage.objects.get(org_id="acme", project_id="search", thread_id=THREAD)
    assert (row.first_at, row.last_at) == (support[0].timestamp, support[2].timestamp)
    assert (row.requests, row.errors) == (3, 1)
    assert row.input_tokens == sum(log.input_tokens for log in support)
    assert row.output_tokens == sum(log.output_tokens for log in support)
    assert row.cost == Decimal("0.0001500000") + Decimal("0.0002")
    assert row.users == 2
    assert sorted(ThreadUser.objects.filter(thread_id=THREAD, org_id="acme").values_list("user_id", flat=True)) == [
        "alice@example.com",
        "bob@example.com",
    ]
    # No thread id, no thread; a missing project is "", as in the other rollups.
    assert ThreadUsage.objects.filter(org_id="acme").count() == 3
    assert ThreadUsage.objects.get(thread_id="thr-loose").project_id == ""
    assert ThreadUsage.objects.get(org_id="globex").requests == 1


def test_a_later_batch_extends_its_thread_and_counts_a_user_once(conversations):
    later = timezone.now()
    export_logs([in_thread(make_log(org="acme", user="bob@example.com", at=later), THREAD)])
    row = ThreadUsage.objects.get(org_id="acme", project_id="search", thread_id=THREAD)
    assert (row.requests, row.users, row.last_at) == (4, 2, later)


def test_rebuilding_gives_what_the_exporter_hook_gave_and_forgets_deleted_threads(conversations):
    incremental = rollup_rows()
    ThreadUsage.objects.update(requests=0, users=0)
    today = timezone.now().date()
    services.threads_rebuild(since=today - timedelta(days=1), until=today)
    assert rollup_rows() == incremental

    RequestLog.objects.filter(thread_id="thr-loose").delete()
    services.rollups_rebuild(since=today - timedelta(days=1), until=today)
    assert [row[:3] for row in rollup_rows()] == [row[:3] for row in incremental if row[2] != "thr-loose"]


def test_backfill_command_rebuilds_only_threads(conversations, capsys):
    from django.core.management import call_command

    ThreadUsage.objects.all().delete()
    ThreadUser.objects.all().delete()
    today = timezone.now().date()
    call_command("backfill_rollups", "--since", str(today - timedelta(days=1)), "--until", str(today), "--threads-only")
    assert "Rebuilt 4 thread(s)" in capsys.readouterr().out
    assert ThreadUsage.objects.get(org_id="acme", thread_id=THREAD).users == 2


def test_thread_requests_come_in_order_a_page_at_a_time(conversations):
    support = conversations["support"]
    page = threads.thread_requests(org_id="acme", thread_id=THREAD, limit=2)
    assert [log.pk for log in page.requests] == [support[0].pk, support[1].pk]
    rest = threads.thread_requests(org_id="acme", thread_id=THREAD, after=page.after, limit=2)
    assert [log.pk for log in rest.requests] == [support[2].pk]
    assert rest.after is None
    assert threads.thread_requests(org_id="acme", thread_id=THREAD, project_id="support-bot", limit=5).requests == []
    loose = threads.thread_requests(org_id="acme", thread_id="thr-loose", project_id="", limit=5)
    assert [log.pk for log in loose.requests] == [conversations["projectless"].pk]


def session_urls() -> list[str]:
    return [
        reverse("dashboards:sessions", args=["acme"]),
        reverse("dashboards:session", args=["acme", THREAD]),
        reverse("dashboards:session", args=["acme", THREAD]) + "?project=search",
    ]


@pytest.mark.parametrize("role", ["owner", "member", "staff"])
def test_people_of_the_org_and_staff_see_the_sessions_pages(conversations, client_for, tenancy, role):
    client = client_for(getattr(tenancy, role))
    for url in session_urls():
        assert client.get(url).status_code == 200, url


def test_outsiders_get_404_and_anonymous_visitors_log_in(conversations, client_for, tenancy):
    outsider = client_for(tenancy.outsider)
    for url in session_urls():
        assert outsider.get(url).status_code == 404, url
    # Their own org's thread of the same id is theirs to see, and shows nothing of acme's.
    own = outsider.get(reverse("dashboards:session", args=["globex", THREAD]))
    assert own.status_code == 200
    assert [entry.log.pk for entry in own.context["view"].entries] == [conversations["foreign"].pk]
    anonymous = client_for(None)
    for url in session_urls():
        response = anonymous.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], url


def test_an_unknown_thread_is_404(conversations, client_for, tenancy):
    assert client_for(tenancy.member).get(reverse("dashboards:session", args=["acme", "nope"])).status_code == 404


def listed(response) -> list[tuple[str, str]]:
    return [(row.thread.project_id, row.thread.thread_id) for row in response.context["session_page"].rows]


def test_the_list_shows_the_orgs_threads_with_their_numbers_and_filters(conversations, client_for, tenancy):
    client = client_for(tenancy.member)
    url = reverse("dashboards:sessions", args=["acme"])
    page = client.get(url)
    assert listed(page) == [("extraction", "thr-private"), ("", "thr-loose"), ("search", THREAD)]
    support = page.context["session_page"].rows[2]
    assert support.user_ids == ["alice@example.com", "bob@example.com"]
    html = page.content.decode()
    assert 'data-thread-id="thr-support/42"' in html
    assert "globex" not in html

    assert listed(client.get(url, {"project": "search"})) == [("search", THREAD)]
    project_page = client.get(reverse("dashboards:project", args=["acme", "search"])).content.decode()
    assert f'href="{url}?project=search"' in project_page
    assert listed(client.get(url, {"user": "bob@example.com"})) == [("search", THREAD)]
    assert listed(client.get(url, {"errors": "1"})) == [("search", THREAD)]
    assert listed(client.get(url, {"q": "thr-l"})) == [("", "thr-loose")]
    assert listed(client.get(url, {"sort": "requests"}))[0] == ("search", THREAD)
    assert listed(client.get(url, {"range": "24h", "start": "1999-01-01"})) != []
    assert client.get(url, {"range": "custom", "start": "1000-01-01"}).status_code == 400
    # Threads whose requests all fall before the range are not listed.
    assert listed(client.get(url, {"range": "custom", "start": "2001-01-01", "end": "2001-01-02"})) == []


def test_the_thread_page_reads_as_one_conversation(conversations, client_for, tenancy):
    response = client_for(tenancy.member).get(reverse("dashboards:session", args=["acme", THREAD]))
    entries = response.context["view"].entries
    assert [entry.log.pk for entry in entries] == [log.pk for log in conversations["support"]]
    # The first request shows its prompt; the next only what it added: the tool's result.
    assert [turn.role for turn in entries[0].shown_turns] == ["user"]
    assert [turn.role for turn in entries[1].shown_turns] == ["tool"]
    html = response.content.decode()
    assert "Has my refund gone through?" in html
    assert "Yes, it was issued." in html
    assert "lookup_refund" in html
    assert "rate_limit_error happened" in html
    assert response.context["summary"].requests == 3


def test_the_thread_page_hides_content_from_staff_without_the_permission(conversations, client_for, tenancy):
    url = reverse("dashboards:session", args=["acme", THREAD])
    html = client_for(tenancy.staff).get(url).content.decode()
    assert 'data-testid="content-hidden"' in html
    assert "Has my refund gone through?" not in html
    tenancy.staff.user_permissions.add(Permission.objects.get(codename="view_request_content"))
    tenancy.staff.refresh_from_db()
    assert "Has my refund gone through?" in client_for(tenancy.staff).get(url).content.decode()


def test_the_detail_page_shows_the_conversation_with_its_tool_call_and_keeps_the_raw_json(
    conversations, client_for, tenancy
):
    log = conversations["support"][1]
    response = client_for(tenancy.member).get(reverse("dashboards:log_detail", args=["acme", log.pk]))
    html = response.content.decode()
    conversation = response.context["conversation"]
    assert [turn.role for turn in conversation.turns] == ["system", "user", "assistant", "tool", "assistant"]
    assert 'data-testid="conversation"' in html
    assert 'data-part="tool_call"' in html and 'data-part="tool_result"' in html
    assert 'data-testid="raw-json"' in html and 'data-testid="request-json"' in html
    assert reverse("dashboards:session", args=["acme", THREAD]) in html


def test_a_redacted_request_says_so_and_a_streamed_one_is_assembled(conversations, client_for, tenancy):
    client = client_for(tenancy.member)
    redacted = client.get(reverse("dashboards:log_detail", args=["acme", conversations["redacted"].pk]))
    assert redacted.context["conversation"].redacted
    assert 'data-testid="redacted"' in redacted.content.decode()
    thread = client.get(reverse("dashboards:session", args=["acme", "thr-private"]))
    assert 'data-testid="redacted"' in thread.content.decode()

    streamed = make_log(org="acme", stream=True)
    pieces = ["Thirty days", " from", " purchase."]
    chunks = [{"choices": [{"index": 0, "delta": {"content": piece}}]} for piece in pieces]
    streamed.log_data["attributes"]["response"] = {"id": "chatcmpl-s", "streamed_data": chunks}
    export_logs([streamed])
    detail = client.get(reverse("dashboards:log_detail", args=["acme", streamed.pk]))
    conversation = detail.context["conversation"]
    assert conversation.streamed
    assert conversation.response_turns[0].parts[0].text == "Thirty days from purchase."
    assert 'data-testid="raw-chunks"' in detail.content.decode()


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ({"page": "0"}, 400),
        ({"page": "abc"}, 400),
        ({"page": "99999999"}, 400),
        ({"sort": "'; DROP TABLE x"}, 400),
        ({"q": "%_\\"}, 200),
        ({"user": "<script>alert(1)</script>"}, 200),
        ({"page": "500"}, 200),
    ],
)
def test_odd_list_input_gets_a_page_never_a_500(conversations, client_for, tenancy, query, status):
    response = client_for(tenancy.member).get(reverse("dashboards:sessions", args=["acme"]), query)
    assert response.status_code == status
    assert "<script>alert(1)</script>" not in response.content.decode()


def test_odd_thread_input_is_escaped_or_ignored(tenancy, client_for):
    hostile = '<img src=x onerror=alert(1)>?#"/..'
    export_logs([in_thread(make_log(org="acme", question="<b>bold?</b>"), hostile)])
    client = client_for(tenancy.member)
    url = reverse("dashboards:session", args=["acme", hostile])
    response = client.get(url, {"after": "not-a-cursor"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "<img src=x" not in html and "<b>bold?</b>" not in html
    assert "&lt;b&gt;bold?&lt;/b&gt;" in html
    listed_page = client.get(reverse("dashboards:sessions", args=["acme"])).content.decode()
    assert url in listed_page.replace("&amp;", "&")
