import re

import pytest
from django.contrib.admin.models import LogEntry
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from proxy import services
from proxy.forms import GatewayKeyIssueForm
from proxy.models import (
    GatewayKey,
    Membership,
    ModelRoute,
    ProviderCredential,
    hash_gateway_key,
)

pytestmark = pytest.mark.django_db

MODELS = ["organisation", "project", "membership", "gatewaykey", "providercredential", "modelroute"]
PLAINTEXT_KEY = re.compile(r"tg-[A-Za-z0-9_-]{20,}")
PROVIDER_KEY = "sk-live-a1b2c3d4e5f6g7h8i9j0-9876"


def admin_url(model, view, *args):
    return reverse(f"admin:proxy_{model}_{view}", args=args)


@pytest.fixture
def org():
    return services.organisation_get_or_create(slug="acme", name="Acme")


@pytest.fixture
def project(org):
    return services.project_get_or_create(org=org, slug="web")


@pytest.fixture
def stranger_project():
    other = services.organisation_get_or_create(slug="globex", name="Globex")
    return services.project_get_or_create(org=other, slug="billing")


@pytest.fixture
def populated(org, project, admin_user):
    Membership.objects.create(org=org, user=admin_user, role=Membership.Role.OWNER)
    services.gateway_key_issue(org=org, project=project, name="web")
    services.gateway_key_issue(org=org, name="ops")
    services.provider_credential_set(org=org, provider="openai", api_key=PROVIDER_KEY)
    ModelRoute.objects.create(model_name="fast", provider="groq", upstream_model="llama-3.1-8b-instant")


@pytest.mark.usefixtures("populated")
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("view", ["changelist", "add"])
def test_every_changelist_and_add_page_loads(admin_client, model, view):
    response = admin_client.get(admin_url(model, view))

    assert response.status_code == 200


@pytest.mark.usefixtures("populated")
def test_every_change_page_loads(admin_client):
    for model in MODELS:
        obj = admin_client.get(admin_url(model, "changelist")).context["cl"].result_list[0]

        assert admin_client.get(admin_url(model, "change", obj.pk)).status_code == 200, model


def test_organisation_list_counts_projects_and_keys_and_links_the_dashboard(admin_client, org, project):
    services.project_get_or_create(org=org, slug="api")
    for _ in range(3):
        services.gateway_key_issue(org=org, project=project)
    services.organisation_get_or_create(slug="empty")

    response = admin_client.get(admin_url("organisation", "changelist"))

    rows = {row.slug: row for row in response.context["cl"].result_list}
    assert (rows["acme"].project_count, rows["acme"].key_count) == (2, 3)
    assert (rows["empty"].project_count, rows["empty"].key_count) == (0, 0)
    assert 'href="/dashboards/orgs/acme/"' in response.text


@pytest.mark.parametrize("model", ["organisation", "project", "gatewaykey", "providercredential"])
def test_changelists_do_not_query_per_row(admin_client, model):
    def queries_for_changelist():
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(admin_url(model, "changelist")).status_code == 200
        return len(captured)

    def add_orgs(slugs):
        for slug in slugs:
            org = services.organisation_get_or_create(slug=slug)
            services.gateway_key_issue(org=org, project=services.project_get_or_create(org=org, slug="p"))
            services.provider_credential_set(org=org, provider="openai", api_key=PROVIDER_KEY)

    add_orgs(["a", "b"])
    few = queries_for_changelist()
    add_orgs([f"org-{n}" for n in range(15)])

    assert queries_for_changelist() == few


def issue_via_admin(admin_client, **data):
    return admin_client.post(admin_url("gatewaykey", "add"), data)


def test_issuing_a_key_shows_the_plaintext_once_and_stores_only_its_hash(admin_client, org, project):
    response = issue_via_admin(admin_client, org=org.pk, project=project.pk, name="web")

    assert response.status_code == 200
    shown = PLAINTEXT_KEY.findall(response.text)
    assert len(set(shown)) == 1
    plaintext = shown[0]
    key = GatewayKey.objects.get()
    assert (key.org, key.project, key.name) == (org, project, "web")
    assert key.key_hash == hash_gateway_key(plaintext)
    row = GatewayKey.objects.filter(pk=key.pk).values().get()
    assert not [column for column, value in row.items() if plaintext in str(value)]
    assert not any(plaintext in entry.object_repr + entry.change_message for entry in LogEntry.objects.all())

    for page in (admin_url("gatewaykey", "change", key.pk), admin_url("gatewaykey", "changelist")):
        later = admin_client.get(page)
        assert later.status_code == 200
        assert plaintext not in later.text
        assert key.key_hash not in later.text
    assert key.prefix in later.text


def test_an_org_wide_key_can_be_issued_without_a_project(admin_client, org):
    response = issue_via_admin(admin_client, org=org.pk, project="", name="")

    assert response.status_code == 200
    key = GatewayKey.objects.get()
    assert key.project is None
    assert key.key_hash == hash_gateway_key(PLAINTEXT_KEY.search(response.text).group())


def test_a_key_cannot_be_pinned_to_another_orgs_project(admin_client, org, stranger_project):
    response = issue_via_admin(admin_client, org=org.pk, project=stranger_project.pk, name="sneaky")

    assert response.status_code == 200
    assert "project" in response.context["adminform"].form.errors
    assert not GatewayKey.objects.exists()
    assert not PLAINTEXT_KEY.search(response.text)


def test_issue_form_rejects_a_project_of_another_org(org, project, stranger_project):
    assert GatewayKeyIssueForm(data={"org": org.pk, "project": project.pk}).is_valid()
    form = GatewayKeyIssueForm(data={"org": org.pk, "project": stranger_project.pk})

    assert not form.is_valid()
    assert list(form.errors) == ["project"]


def test_issued_keys_cannot_be_edited(admin_client, org):
    key = services.gateway_key_issue(org=org, name="before").key

    response = admin_client.post(admin_url("gatewaykey", "change", key.pk), {"org": org.pk, "name": "after"})

    assert response.status_code == 403
    key.refresh_from_db()
    assert key.name == "before"


def test_revoke_action_revokes_only_the_selected_active_keys(admin_client, org):
    chosen = services.gateway_key_issue(org=org).key
    already = services.gateway_key_issue(org=org).key
    services.gateway_key_revoke(key=already)
    already.refresh_from_db()
    untouched = services.gateway_key_issue(org=org).key

    response = admin_client.post(
        admin_url("gatewaykey", "changelist"),
        {"action": "revoke_keys", "_selected_action": [chosen.pk, already.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert "Revoked 1 key(s)." in response.text
    revoked_at = dict(GatewayKey.objects.values_list("pk", "revoked_at"))
    assert revoked_at[chosen.pk] is not None
    assert revoked_at[already.pk] == already.revoked_at
    assert revoked_at[untouched.pk] is None


def test_revoked_filter(admin_client, org):
    active = services.gateway_key_issue(org=org).key
    revoked = services.gateway_key_issue(org=org).key
    services.gateway_key_revoke(key=revoked)

    def listed(value):
        response = admin_client.get(admin_url("gatewaykey", "changelist"), {"revoked": value})
        return {key.pk for key in response.context["cl"].result_list}

    assert listed("no") == {active.pk}
    assert listed("yes") == {revoked.pk}


def raw_encrypted_column(credential):
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key_encrypted FROM proxy_providercredential WHERE id = %s", [credential.pk])
        return cursor.fetchone()[0]


def add_credential_via_admin(admin_client, org, **overrides):
    data = {"org": org.pk, "provider": "openai", "api_key": PROVIDER_KEY, "base_url": ""} | overrides
    return admin_client.post(admin_url("providercredential", "add"), data)


def test_provider_credential_added_in_admin_is_encrypted_and_never_shown(admin_client, org):
    response = add_credential_via_admin(admin_client, org, base_url="https://llm.internal/v1")

    assert response.status_code == 302
    credential = ProviderCredential.objects.get()
    assert (credential.org, credential.provider, credential.base_url) == (org, "openai", "https://llm.internal/v1")
    assert PROVIDER_KEY not in raw_encrypted_column(credential)
    assert credential.api_key == PROVIDER_KEY
    change_page = admin_client.get(admin_url("providercredential", "change", credential.pk))
    changelist = admin_client.get(admin_url("providercredential", "changelist"))
    for page in (change_page, changelist):
        assert page.status_code == 200
        assert PROVIDER_KEY not in page.text
        assert "••••9876" in page.text
    assert not any(PROVIDER_KEY in entry.change_message for entry in LogEntry.objects.all())


def test_provider_credential_needs_a_key_when_added(admin_client, org):
    response = add_credential_via_admin(admin_client, org, api_key="")

    assert response.status_code == 200
    assert "api_key" in response.context["adminform"].form.errors
    assert not ProviderCredential.objects.exists()


def test_blank_key_on_change_keeps_the_stored_key(admin_client, org):
    credential = services.provider_credential_set(org=org, provider="openai", api_key=PROVIDER_KEY)

    response = admin_client.post(
        admin_url("providercredential", "change", credential.pk), {"api_key": "", "base_url": "https://proxy.local/v1"}
    )

    assert response.status_code == 302
    credential.refresh_from_db()
    assert credential.api_key == PROVIDER_KEY
    assert credential.base_url == "https://proxy.local/v1"


def test_new_key_on_change_replaces_the_stored_key(admin_client, org):
    credential = services.provider_credential_set(org=org, provider="openai", api_key=PROVIDER_KEY)

    response = admin_client.post(
        admin_url("providercredential", "change", credential.pk), {"api_key": "sk-rotated-0000000000-4321"}
    )

    assert response.status_code == 302
    credential.refresh_from_db()
    assert credential.api_key == "sk-rotated-0000000000-4321"
    assert "sk-rotated" not in raw_encrypted_column(credential)
    assert ProviderCredential.objects.count() == 1


def test_short_provider_keys_are_fully_masked(admin_client, org):
    services.provider_credential_set(org=org, provider="groq", api_key="abc12345")

    response = admin_client.get(admin_url("providercredential", "changelist"))

    assert "2345" not in response.text
