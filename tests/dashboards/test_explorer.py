"""The log explorer and the request detail page."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from telemetry.models import RequestLog
from telemetry.read import search
from tests.dashboards.conftest import export_logs, make_log

pytestmark = pytest.mark.django_db


def listed_ids(response) -> list[str]:
    return [log.pk for log in response.context["log_page"].rows]


def test_explorer_lists_the_orgs_requests_newest_first(tenancy, traffic, client_for):
    response = client_for(tenancy.member).get(reverse("dashboards:logs", args=["acme"]), {"range": "7d"})
    ids = listed_ids(response)
    expected = list(RequestLog.objects.filter(org_id="acme").order_by("-timestamp", "-id").values_list("id", flat=True))
    assert ids == expected
    assert response.context["next_url"] is None
    assert "globex confidential" not in response.content.decode()


def test_keyset_pages_walk_every_row_once_in_order(tenancy, client_for):
    now = timezone.now().replace(microsecond=0)
    # Pairs of rows share a timestamp, so that the id breaks ties across page boundaries.
    export_logs(
        [make_log(org="acme", project="paging", at=now - timedelta(minutes=index // 2)) for index in range(121)]
    )
    client = client_for(tenancy.member)
    url = reverse("dashboards:logs", args=["acme"]) + "?range=24h&project=paging"
    seen, pages = [], 0
    while url:
        response = client.get(url)
        seen += listed_ids(response)
        url = response.context["next_url"]
        pages += 1
    assert pages == 3
    expected = list(
        RequestLog.objects.filter(project_id="paging").order_by("-timestamp", "-id").values_list("id", flat=True)
    )
    assert seen == expected


def test_explorer_filters(tenancy, traffic, client_for):
    client = client_for(tenancy.member)
    url = reverse("dashboards:logs", args=["acme"])
    cases = [
        ({"provider": "anthropic"}, {"provider": "anthropic"}),
        ({"status": "error"}, {"status": "error"}),
        ({"status": "error", "error_type": "rate_limit_error"}, {"error_type": "rate_limit_error"}),
        ({"user": "bob@example.com"}, {"user_id": "bob@example.com"}),
        ({"project": "support-bot", "model": "gpt-4o-mini"}, {"project_id": "support-bot", "model": "gpt-4o-mini"}),
        ({"experiment": "prompt-v2"}, {"experiment_id": "prompt-v2"}),
    ]
    for query, filters in cases:
        ids = set(listed_ids(client.get(url, {"range": "7d", **query})))
        assert ids == set(RequestLog.objects.filter(org_id="acme", **filters).values_list("id", flat=True)), query
        assert ids


def test_search_finds_request_and_response_text_within_the_org(tenancy, traffic, client_for):
    export_logs([make_log(org="acme", question="Where is my parcel?", answer="It ships Tuesday.")])
    client = client_for(tenancy.member)
    url = reverse("dashboards:logs", args=["acme"])
    by_question = listed_ids(client.get(url, {"q": "PARCEL"}))
    by_answer = listed_ids(client.get(url, {"q": "ships tuesday"}))
    assert by_question == by_answer
    assert len(by_question) == 1
    assert listed_ids(client.get(url, {"q": "globex confidential"})) == []
    # Metadata-only projects never stored the text, so it cannot be found either.
    assert listed_ids(client.get(url, {"q": "secret prompt"})) == []


def test_search_scans_a_bounded_window_and_offers_to_go_on(tenancy, traffic, client_for, monkeypatch):
    monkeypatch.setattr(search, "SEARCH_SCAN_ROWS", 6)
    monkeypatch.setattr(search, "SEARCH_CHUNK_ROWS", 3)
    old = make_log(org="acme", question="needle in the haystack", at=timezone.now() - timedelta(hours=30))
    export_logs([old])
    client = client_for(tenancy.member)
    first = client.get(reverse("dashboards:logs", args=["acme"]), {"range": "7d", "q": "needle"})
    assert listed_ids(first) == []
    assert first.context["log_page"].search_stopped_early
    assert "Search older requests" in first.content.decode()
    found = []
    url = first.context["next_url"]
    while url and not found:
        response = client.get(url)
        found = listed_ids(response)
        url = response.context["next_url"]
    assert found == [old.pk]


def test_a_mangled_cursor_shows_the_first_page(tenancy, traffic, client_for):
    response = client_for(tenancy.member).get(reverse("dashboards:logs", args=["acme"]), {"cursor": "!!not-a-cursor"})
    assert response.status_code == 200
    assert len(listed_ids(response)) == 28


def test_detail_shows_the_whole_record(tenancy, client_for):
    [log] = export_logs(
        [make_log(org="acme", stream=True, question="How do refunds work?", answer="Within thirty days")]
    )
    response = client_for(tenancy.member).get(reverse("dashboards:log_detail", args=["acme", log.pk]))
    html = response.content.decode()
    assert "How do refunds work?" in html
    assert "Streamed chunks (3)" in html
    assert "thirty" in html
    assert 'data-testid="ttfb">300 ms<' in html
    assert 'data-testid="latency">800 ms<' in html
    assert "Content redacted" not in html
    # The streamed chunks are shown apart from the response itself.
    assert "streamed_data" not in response.context["response_json"]


def test_detail_of_a_redacted_record_says_so(tenancy, traffic, client_for):
    redacted = next(log for log in traffic if log.project_id == "extraction")
    html = client_for(tenancy.member).get(reverse("dashboards:log_detail", args=["acme", redacted.pk])).content.decode()
    assert 'data-testid="redacted"' in html
    assert "Chunks redacted." in html
    assert "secret" not in html


def test_detail_of_an_error(tenancy, traffic, client_for):
    failed = next(log for log in traffic if log.error_type == "server_error")
    html = client_for(tenancy.member).get(reverse("dashboards:log_detail", args=["acme", failed.pk])).content.decode()
    assert 'data-testid="error-type">server_error' in html
    assert "server_error happened" in html


def test_detail_says_when_usage_was_estimated_the_price_unknown_and_why_it_failed(tenancy, client_for):
    log = make_log(org="acme", model="house-model", cost=None, status="error", error_type="upstream_unreachable")
    log.log_data["attributes"]["metadata"] |= {
        "usage_estimated": True,
        "cost_unknown": True,
        "error_message": "openai at 127.0.0.1:9 could not be reached: connection refused",
    }
    [log] = export_logs([log])

    html = client_for(tenancy.member).get(reverse("dashboards:log_detail", args=["acme", log.pk])).content.decode()

    assert 'data-testid="usage-estimated">estimated' in html
    assert 'data-testid="cost">unknown' in html
    assert "127.0.0.1:9 could not be reached: connection refused" in html
