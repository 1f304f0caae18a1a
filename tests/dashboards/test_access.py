"""Who sees what: owners, members and staff see an org; anyone else gets a 404, never a hint."""

import pytest
from django.urls import reverse

from dashboards import access

pytestmark = pytest.mark.django_db


def org_urls(org_slug: str, log_id: str) -> list[str]:
    return [
        reverse("dashboards:org", args=[org_slug]),
        reverse("dashboards:org_export", args=[org_slug]) + "?by=project_id",
        reverse("dashboards:project", args=[org_slug, "search"]),
        reverse("dashboards:project_export", args=[org_slug, "search"]) + "?by=user_id",
        reverse("dashboards:user", args=[org_slug, "alice@example.com"]),
        reverse("dashboards:user_export", args=[org_slug, "alice@example.com"]) + "?by=model",
        reverse("dashboards:logs", args=[org_slug]),
        reverse("dashboards:log_detail", args=[org_slug, log_id]),
    ]


def acme_log(traffic):
    return next(log for log in traffic if log.org_id == "acme")


def globex_log(traffic):
    return next(log for log in traffic if log.org_id == "globex")


@pytest.mark.parametrize("role", ["owner", "member", "staff"])
def test_people_of_the_org_and_staff_see_every_page(tenancy, traffic, client_for, role):
    client = client_for(getattr(tenancy, role))
    for url in [
        reverse("dashboards:overview"),
        reverse("dashboards:overview_export"),
        *org_urls("acme", acme_log(traffic).pk),
    ]:
        response = client.get(url)
        assert response.status_code == 200, url


def test_outsider_gets_404_on_every_page_of_the_org(tenancy, traffic, client_for):
    client = client_for(tenancy.outsider)
    for url in org_urls("acme", acme_log(traffic).pk):
        assert client.get(url).status_code == 404, url


def test_outsider_overview_and_export_list_only_their_own_org(tenancy, traffic, client_for):
    client = client_for(tenancy.outsider)
    page = client.get(reverse("dashboards:overview"), {"range": "7d"})
    assert page.status_code == 200
    keys = [row.stats.key for row in page.context["page"].breakdowns[0].rows]
    assert keys == ["globex"]
    assert "Acme" not in page.content.decode()
    csv = client.get(reverse("dashboards:overview_export"), {"by": "org_id", "range": "7d"}).content.decode()
    assert "globex" in csv
    assert "acme" not in csv


def test_guessed_log_urls_of_another_org_are_404(tenancy, traffic, client_for):
    member = client_for(tenancy.member)
    foreign = globex_log(traffic)
    # The other org's log under the member's own org, and under the other org's own URL.
    assert member.get(reverse("dashboards:log_detail", args=["acme", foreign.pk])).status_code == 404
    assert member.get(reverse("dashboards:log_detail", args=["globex", foreign.pk])).status_code == 404
    assert member.get(reverse("dashboards:log_detail", args=["acme", "0" * 32])).status_code == 404
    # Unknown orgs look exactly like orgs one may not see.
    assert member.get(reverse("dashboards:org", args=["no-such-org"])).status_code == 404


def test_another_orgs_project_slug_is_404_even_when_the_slug_exists_there(tenancy, traffic, client_for):
    outsider = client_for(tenancy.outsider)
    assert outsider.get(reverse("dashboards:project", args=["globex", "search"])).status_code == 200
    assert outsider.get(reverse("dashboards:project", args=["acme", "search"])).status_code == 404
    assert client_for(tenancy.member).get(reverse("dashboards:project", args=["acme", "nope"])).status_code == 404


def test_anonymous_visitors_are_sent_to_log_in(traffic, client_for):
    client = client_for(None)
    for url in [reverse("dashboards:overview"), *org_urls("acme", acme_log(traffic).pk)]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/?next=")


def test_inactive_accounts_see_nothing(tenancy):
    tenancy.member.is_active = False
    assert list(access.visible_orgs(user=tenancy.member)) == []


def test_login_page_logs_in_and_lands_on_the_dashboards(tenancy, client_for):
    from tests.dashboards.conftest import PASSWORD

    client = client_for(None)
    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert b"Log in to Tollgate" in page.content
    response = client.post(reverse("login"), {"username": "olivia", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/dashboards/"
    assert client.get("/dashboards/").status_code == 200


def test_dashboards_link_to_admin_for_staff_only(tenancy, traffic, client_for):
    staff_page = client_for(tenancy.staff).get(reverse("dashboards:org", args=["acme"])).content.decode()
    member_page = client_for(tenancy.member).get(reverse("dashboards:org", args=["acme"])).content.decode()
    assert reverse("admin:index") in staff_page
    assert reverse("admin:proxy_organisation_change", args=[tenancy.org.pk]) in staff_page
    assert reverse("admin:index") not in member_page


def test_admin_lists_rollups_with_links_to_the_dashboards(tenancy, traffic, client_for):
    page = client_for(get_superuser()).get(reverse("admin:dashboards_hourlyprojectusage_changelist"))
    assert page.status_code == 200
    assert reverse("dashboards:project", args=["acme", "search"]) in page.content.decode()


def get_superuser():
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_superuser("root", "root@example.com", "pw")
