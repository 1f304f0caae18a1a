"""Finding one request by the id a caller has at hand: the gateway's x-request-id or the provider's."""

import pytest
from django.urls import reverse

from tests.dashboards.conftest import export_logs, make_log

pytestmark = pytest.mark.django_db

FIND = "/dashboards/find"


def with_provider_id(log, provider_request_id):
    log.log_data["attributes"]["metadata"]["provider_request_id"] = provider_request_id
    return log


@pytest.fixture
def requests_of_both_orgs(tenancy):
    acme, globex = export_logs(
        [
            with_provider_id(make_log(org="acme"), "chatcmpl-acme42"),
            with_provider_id(make_log(org="globex", user="eve@globex.example"), "msg_01GlobexOnly"),
        ]
    )
    return acme, globex


def detail_url(log):
    return reverse("dashboards:log_detail", args=[log.org_id, log.pk])


def find(client, value):
    return client.get(FIND, {"id": value})


@pytest.mark.parametrize("role", ["owner", "member"])
def test_people_of_an_org_find_its_requests_and_nothing_else(tenancy, requests_of_both_orgs, client_for, role):
    acme, globex = requests_of_both_orgs
    client = client_for(getattr(tenancy, role))
    for value in (acme.pk, "chatcmpl-acme42", f"  {acme.pk} "):
        response = find(client, value)
        assert response.status_code == 302, value
        assert response["Location"] == detail_url(acme)
    for value in (globex.pk, "msg_01GlobexOnly", "no-such-request", ""):
        assert find(client, value).status_code == 404, value


def test_staff_find_requests_of_every_org(tenancy, requests_of_both_orgs, client_for):
    acme, globex = requests_of_both_orgs
    client = client_for(tenancy.staff)
    assert find(client, acme.pk)["Location"] == detail_url(acme)
    assert find(client, globex.pk)["Location"] == detail_url(globex)
    assert find(client, "msg_01GlobexOnly")["Location"] == detail_url(globex)
    assert find(client, "no-such-request").status_code == 404


def test_outsiders_find_only_their_own_orgs_requests(tenancy, requests_of_both_orgs, client_for):
    acme, globex = requests_of_both_orgs
    client = client_for(tenancy.outsider)
    assert find(client, globex.pk)["Location"] == detail_url(globex)
    response = find(client, acme.pk)
    assert response.status_code == 404
    assert "acme" not in response.content.decode().lower()
    assert find(client, "chatcmpl-acme42").status_code == 404


def test_anonymous_visitors_are_sent_to_log_in(requests_of_both_orgs, client_for):
    acme, _ = requests_of_both_orgs
    response = find(client_for(None), acme.pk)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_searching_an_id_in_the_explorer_opens_the_request(tenancy, traffic, requests_of_both_orgs, client_for):
    acme, globex = requests_of_both_orgs
    client = client_for(tenancy.member)
    explorer = reverse("dashboards:logs", args=["acme"])
    for value in (acme.pk, "chatcmpl-acme42"):
        response = client.get(explorer, {"q": value})
        assert response.status_code == 302, value
        assert response["Location"] == detail_url(acme)
    # Another org's id is searched as text, finds nothing, and says nothing about that org.
    for value in (globex.pk, "msg_01GlobexOnly"):
        response = client.get(explorer, {"q": value})
        assert response.status_code == 200
        assert response.context["log_page"].rows == []
    # Plain words are still a text search.
    assert client.get(explorer, {"q": "refund"}).status_code == 200


def test_every_page_offers_the_lookup(tenancy, traffic, client_for):
    html = client_for(tenancy.member).get(reverse("dashboards:org", args=["acme"])).content.decode()
    assert f'action="{FIND}"' in html
