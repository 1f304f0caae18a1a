"""The budgets page: each budget's use and remaining amount, limits, and refusals by limit; scoped to the caller."""

from __future__ import annotations

import pytest

from budgets import services
from budgets.counters import key_prefix
from budgets.models import Scope
from telemetry.models import RequestLog
from tests.dashboards.conftest import client_for, make_log, tenancy  # noqa: F401 - fixtures

URL = "/dashboards/orgs/acme/budgets/"


def _refused(limit: str, **kwargs) -> RequestLog:
    log = make_log(org="acme", status="error", status_code=429, error_type="insufficient_quota", cost=None, **kwargs)
    log.log_data["attributes"]["metadata"]["limit_refused"] = limit
    return log


@pytest.fixture
def budgets_page(tenancy, limits_redis):  # noqa: F811
    budget = services.budget_set(scope=Scope.PROJECT, org=tenancy.org, project=tenancy.project, usd="10")
    services.budget_set(scope=Scope.USER, org=tenancy.org, project=tenancy.project, usd="1", period="day")
    services.rate_limit_set(scope=Scope.ORG, org=tenancy.org, rpm=600, tpm=200000)
    from datetime import UTC, datetime

    label = datetime.now(UTC).strftime("%Y%m01")
    limits_redis.hset(f"{key_prefix()}:budget:{budget.pk}:{label}", mapping={"spent": 2_500_000_000, "reserved": 0})
    RequestLog.objects.bulk_create(
        [_refused("project_budget"), _refused("project_budget"), _refused("key_rpm"), make_log(org="acme")]
    )
    other = services.budget_set(scope=Scope.ORG, org=tenancy.other_org, usd="99")
    return budget, other


def test_owner_and_member_see_use_remaining_and_refusals_by_limit(tenancy, client_for, budgets_page):  # noqa: F811
    for user in (tenancy.owner, tenancy.member):
        page = client_for(user).get(URL)
        assert page.status_code == 200
        html = page.content.decode()
        assert "project search" in html
        assert "10.0000" in html and "2.500000" in html and "7.500000" in html and "25.0%" in html
        assert "each user of project search" in html
        assert "600" in html and "200000" in html
        assert 'project_budget</td><td class="num">2' in html
        assert 'key_rpm</td><td class="num">1' in html
        assert "99.0000" not in html  # another org's budget


def test_outsiders_get_a_404_and_anonymous_users_the_login_page(tenancy, client_for, budgets_page):  # noqa: F811
    assert client_for(tenancy.outsider).get(URL).status_code == 404
    anonymous = client_for(None).get(URL)
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["location"]


def test_staff_see_any_org(tenancy, client_for, budgets_page):  # noqa: F811
    assert client_for(tenancy.staff).get(URL).status_code == 200
    assert "99.0000" in client_for(tenancy.staff).get("/dashboards/orgs/globex/budgets/").content.decode()


def test_the_org_page_links_to_the_budgets_page(tenancy, client_for):  # noqa: F811
    assert URL in client_for(tenancy.owner).get("/dashboards/orgs/acme/").content.decode()


def test_the_page_falls_back_to_the_logs_when_redis_is_unreachable(tenancy, client_for, budgets_page, settings):  # noqa: F811
    from tests.conftest import _free_port

    settings.GATEWAY_LIMITS_REDIS_URL = f"redis://127.0.0.1:{_free_port()}/3"
    html = client_for(tenancy.owner).get(URL).content.decode()
    assert "estimated from the request logs" in html
    assert "0.000150" in html  # the one successful log's cost
