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


# --- Request content: the org's own people, and staff only with explicit permission -------

QUESTION = "What is the refund window?"


def grant(user, *codenames):
    from django.contrib.auth.models import Permission

    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames, content_type__app_label="telemetry"))
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(pk=user.pk)


def people(tenancy):
    from django.contrib.auth import get_user_model

    staff_with_permission = get_user_model().objects.create_user("sam", password="pw", is_staff=True)
    return {
        "owner": tenancy.owner,
        "member": tenancy.member,
        "outsider": tenancy.outsider,
        "staff": tenancy.staff,
        "staff_with_permission": grant(staff_with_permission, "view_request_content"),
        "superuser": get_user_model().objects.create_superuser("root", "root@example.com", "pw"),
    }


CONTENT_VISIBLE = {
    "owner": True,
    "member": True,
    "outsider": None,  # 404
    "staff": False,
    "staff_with_permission": True,
    "superuser": True,
}


@pytest.mark.parametrize("role", list(CONTENT_VISIBLE))
def test_log_detail_shows_content_only_to_the_orgs_people_and_permitted_staff(tenancy, traffic, client_for, role):
    log = acme_log(traffic)
    response = client_for(people(tenancy)[role]).get(reverse("dashboards:log_detail", args=["acme", log.pk]))

    if CONTENT_VISIBLE[role] is None:
        assert response.status_code == 404
        return
    assert response.status_code == 200
    text = response.content.decode()
    assert log.model in text and str(log.input_tokens) in text  # metadata for everyone who sees the org
    if CONTENT_VISIBLE[role]:
        assert "refund window" in text
        assert 'data-testid="content-hidden"' not in text
    else:
        assert "refund window" not in text
        assert "Thirty days" not in text
        assert 'data-testid="content-hidden"' in text


@pytest.mark.parametrize("role", list(CONTENT_VISIBLE))
def test_explorer_searches_content_only_for_those_who_may_read_it(tenancy, traffic, client_for, role):
    client = client_for(people(tenancy)[role])
    response = client.get(reverse("dashboards:logs", args=["acme"]), {"q": "no-such-words-anywhere"})

    if CONTENT_VISIBLE[role] is None:
        assert response.status_code == 404
        return
    assert response.status_code == 200
    rows = response.context["log_page"].rows
    if CONTENT_VISIBLE[role]:
        assert rows == []
        assert 'name="q"' in response.content.decode()
    else:
        # The search is not run at all: its answer would tell what the prompts say.
        assert rows
        assert 'name="q"' not in response.content.decode()
        assert 'data-testid="content-hidden"' in response.content.decode()


@pytest.mark.parametrize("role", ["staff", "staff_with_permission", "superuser"])
def test_admin_request_log_shows_content_only_with_the_permission(tenancy, traffic, client_for, role):
    user = people(tenancy)[role]
    if not user.is_superuser:
        user = grant(user, "view_requestlog", "view_deadletter")
    log = acme_log(traffic)
    client = client_for(user)

    page = client.get(reverse("admin:telemetry_requestlog_change", args=[log.pk]))

    assert page.status_code == 200
    text = page.content.decode()
    assert log.pk in text
    assert ("refund window" in text) is CONTENT_VISIBLE[role]

    from telemetry.models import DeadLetter

    letter = DeadLetter(record_id=log.pk, exporter="elasticsearch", error="refused")
    letter.document = log.log_data
    letter.save()
    page = client.get(reverse("admin:telemetry_deadletter_change", args=[letter.pk]))
    assert page.status_code == 200
    text = page.content.decode()
    assert "refused" in text
    assert ("refund window" in text) is CONTENT_VISIBLE[role]


def test_staff_permission_is_documented(tenancy):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "telemetry.view_request_content" in readme
