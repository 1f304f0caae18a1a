"""The explorer's thread and deployment filters, and its user and error-type pickers."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.dashboards.conftest import export_logs, make_log

pytestmark = pytest.mark.django_db


def listed_ids(response) -> list[str]:
    return [log.pk for log in response.context["log_page"].rows]


@pytest.fixture
def routed(tenancy):
    """Acme requests in two threads over two deployments, and a globex one in a same-named thread."""
    at = timezone.now() - timedelta(hours=1)
    logs = {
        "eu-a": make_log(org="acme", thread="thr_a", deployment="openai-eu", at=at),
        "us-a": make_log(org="acme", thread="thr_a", deployment="openai-us", at=at - timedelta(minutes=1)),
        "eu-b": make_log(org="acme", thread="thr_b", deployment="openai-eu", at=at - timedelta(minutes=2)),
        "none": make_log(org="acme", at=at - timedelta(minutes=3)),
        "globex": make_log(org="globex", thread="thr_a", deployment="openai-eu", at=at),
    }
    export_logs(list(logs.values()))
    return {name: log.pk for name, log in logs.items()}


@pytest.mark.parametrize("who", ["owner", "member", "staff"])
def test_thread_and_deployment_filters_narrow_to_the_orgs_matching_requests(tenancy, routed, client_for, who):
    client = client_for(getattr(tenancy, who))
    url = reverse("dashboards:logs", args=["acme"])
    assert listed_ids(client.get(url, {"thread": "thr_a"})) == [routed["eu-a"], routed["us-a"]]
    assert listed_ids(client.get(url, {"deployment": "openai-eu"})) == [routed["eu-a"], routed["eu-b"]]
    assert listed_ids(client.get(url, {"thread": "thr_a", "deployment": "openai-us"})) == [routed["us-a"]]
    assert listed_ids(client.get(url, {"deployment": "nowhere"})) == []


def test_an_outsider_cannot_filter_another_orgs_threads(tenancy, routed, client_for):
    response = client_for(tenancy.outsider).get(reverse("dashboards:logs", args=["acme"]), {"thread": "thr_a"})
    assert response.status_code == 404
    own = client_for(tenancy.outsider).get(reverse("dashboards:logs", args=["globex"]), {"thread": "thr_a"})
    assert listed_ids(own) == [routed["globex"]]


def test_the_filters_are_kept_on_the_next_page(tenancy, client_for):
    at = timezone.now() - timedelta(hours=1)
    export_logs([make_log(org="acme", thread="long", at=at - timedelta(seconds=i)) for i in range(60)])
    export_logs([make_log(org="acme", thread="other", at=at)])
    client = client_for(tenancy.member)
    first = client.get(reverse("dashboards:logs", args=["acme"]), {"thread": "long"})
    assert "thread=long" in first.context["next_url"]
    second = client.get(first.context["next_url"])
    assert len(listed_ids(first)) + len(listed_ids(second)) == 60


def test_user_and_error_type_pickers_offer_the_orgs_values_from_the_rollups(tenancy, traffic, client_for):
    response = client_for(tenancy.member).get(reverse("dashboards:logs", args=["acme"]), {"range": "7d"})
    choices = response.context["choices"]
    assert choices["user_id"] == ["alice@example.com", "bob@example.com", "carol/with-slash", "dana@example.com"]
    assert choices["error_type"] == ["rate_limit_error", "server_error"]
    html = response.content.decode()
    assert '<option value="bob@example.com">' in html
    assert "<option>rate_limit_error</option>" in html
    assert "eve@globex.example" not in html


@pytest.mark.parametrize("range_key", ["24h", "30d"])
def test_pickers_read_hours_and_days_alike(tenancy, traffic, client_for, range_key):
    response = client_for(tenancy.staff).get(reverse("dashboards:logs", args=["globex"]), {"range": range_key})
    assert response.context["choices"]["user_id"] == ["eve@globex.example"]
    assert response.context["choices"]["error_type"] == []


def test_a_picked_error_type_stays_selected(tenancy, traffic, client_for):
    response = client_for(tenancy.owner).get(
        reverse("dashboards:logs", args=["acme"]), {"status": "error", "error_type": "server_error"}
    )
    assert "<option selected>server_error</option>" in response.content.decode()
    assert len(listed_ids(response)) == 1
