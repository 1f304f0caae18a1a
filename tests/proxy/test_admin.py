import re

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from proxy import services
from proxy.admin import _ISSUED_SESSION_KEY
from proxy.forms import GatewayKeyIssueForm
from proxy.models import (
    GatewayKey,
    Membership,
    ModelRoute,
    Organisation,
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

    assert response.status_code == 302
    key = GatewayKey.objects.get()
    assert response["Location"] == admin_url("gatewaykey", "issued", key.pk)
    assert not PLAINTEXT_KEY.search(response.text)
    shown_page = admin_client.get(response["Location"])
    assert shown_page.status_code == 200
    assert "no-store" in shown_page["Cache-Control"]
    shown = PLAINTEXT_KEY.findall(shown_page.text)
    assert len(set(shown)) == 1
    plaintext = shown[0]
    assert (key.org, key.project, key.name) == (org, project, "web")
    assert key.key_hash == hash_gateway_key(plaintext)
    row = GatewayKey.objects.filter(pk=key.pk).values().get()
    assert not [column for column, value in row.items() if plaintext in str(value)]
    assert not any(plaintext in entry.object_repr + entry.change_message for entry in LogEntry.objects.all())
    assert not any(plaintext in session.session_data for session in Session.objects.all())

    for page in (admin_url("gatewaykey", "change", key.pk), admin_url("gatewaykey", "changelist")):
        later = admin_client.get(page)
        assert later.status_code == 200
        assert plaintext not in later.text
        assert key.key_hash not in later.text
    assert key.prefix in later.text


def test_reloading_the_key_issued_page_issues_no_second_key_and_shows_the_key_no_more(admin_client, org):
    issued_url = issue_via_admin(admin_client, org=org.pk, project="", name="ci")["Location"]
    first = admin_client.get(issued_url)
    assert PLAINTEXT_KEY.search(first.text)

    reloaded = admin_client.get(issued_url)

    assert reloaded.status_code == 200
    assert not PLAINTEXT_KEY.search(reloaded.text)
    assert "cannot be shown again" in reloaded.text
    assert GatewayKey.objects.count() == 1
    assert not any(_ISSUED_SESSION_KEY in session.get_decoded() for session in Session.objects.all())


def test_the_key_issued_page_shows_the_key_only_to_the_session_that_issued_it(admin_client, admin_user, org):
    from django.test import Client

    issued_url = issue_via_admin(admin_client, org=org.pk, project="", name="ci")["Location"]
    other_browser = Client()
    other_browser.force_login(admin_user)

    assert not PLAINTEXT_KEY.search(other_browser.get(issued_url).text)
    assert PLAINTEXT_KEY.search(admin_client.get(issued_url).text)


def test_an_org_wide_key_can_be_issued_without_a_project(admin_client, org):
    response = issue_via_admin(admin_client, org=org.pk, project="", name="")
    response = admin_client.get(response["Location"])

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
    credential = services.provider_credential_set(
        org=org, provider="openai", api_key=PROVIDER_KEY, base_url="https://proxy.local/v1"
    )

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


# --- Tenant keys: logs and rollups are keyed by slugs, so a slug never changes -----------

CREATED_AT = {"created_at_0": "2026-01-02", "created_at_1": "03:04:05"}


def test_an_org_slug_cannot_be_renamed_in_admin(admin_client, org):
    response = admin_client.post(
        admin_url("organisation", "change", org.pk),
        {
            "slug": "initech",
            "name": "Acme renamed",
            **CREATED_AT,
            "projects-TOTAL_FORMS": "0",
            "projects-INITIAL_FORMS": "0",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302
    org.refresh_from_db()
    assert (org.slug, org.name) == ("acme", "Acme renamed")
    page = admin_client.get(admin_url("organisation", "change", org.pk))
    assert 'name="slug"' not in page.text
    assert 'name="slug"' in admin_client.get(admin_url("organisation", "add")).text


def test_a_project_slug_and_org_cannot_be_changed_in_admin(admin_client, org, project, stranger_project):
    response = admin_client.post(
        admin_url("project", "change", project.pk),
        {"org": stranger_project.org.pk, "slug": "renamed", "name": "Web", "content_logging": "full", **CREATED_AT},
    )

    assert response.status_code == 302
    project.refresh_from_db()
    assert (project.org, project.slug, project.name) == (org, "web", "Web")


def test_a_project_slug_cannot_be_renamed_through_the_org_inline(admin_client, org, project):
    response = admin_client.post(
        admin_url("organisation", "change", org.pk),
        {
            "name": "Acme",
            **CREATED_AT,
            "projects-0-created_at_0": CREATED_AT["created_at_0"],
            "projects-0-created_at_1": CREATED_AT["created_at_1"],
            "projects-TOTAL_FORMS": "1",
            "projects-INITIAL_FORMS": "1",
            "projects-0-id": project.pk,
            "projects-0-org": org.pk,
            "projects-0-slug": "renamed",
            "projects-0-name": "Web",
            "projects-0-content_logging": "full",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302
    project.refresh_from_db()
    assert project.slug == "web"


def test_models_refuse_to_save_a_changed_slug(org, project):
    from django.core.exceptions import ValidationError

    from proxy.models import Organisation, Project

    org.slug = "globex"
    with pytest.raises(ValidationError, match="slug"):
        org.save()
    project.slug = "renamed"
    with pytest.raises(ValidationError, match="slug"):
        project.save()
    moved = Project.objects.get(pk=project.pk)
    moved.org = services.organisation_get_or_create(slug="globex")
    with pytest.raises(ValidationError, match="organisation"):
        moved.save()
    with pytest.raises(ValidationError, match="slug"):
        Organisation.objects.filter(pk=org.pk).update(slug="globex")
    assert Organisation.objects.get(pk=org.pk).slug == "acme"
    assert Project.objects.get(pk=project.pk).slug == "web"
    # Other fields still change, and a new row may take any free slug.
    fresh = Organisation.objects.get(pk=org.pk)
    fresh.name = "Acme Corp"
    fresh.save()
    assert Organisation.objects.get(pk=org.pk).name == "Acme Corp"


# --- A changed destination drops the secret ----------------------------------------------


def test_changing_the_base_url_without_the_key_clears_the_stored_key(admin_client, org):
    credential = services.provider_credential_set(
        org=org, provider="openai", api_key=PROVIDER_KEY, base_url="https://llm.internal/v1"
    )

    response = admin_client.post(
        admin_url("providercredential", "change", credential.pk),
        {"api_key": "", "base_url": "https://attacker.example/v1"},
        follow=True,
    )

    assert response.status_code == 200
    credential.refresh_from_db()
    assert credential.base_url == "https://attacker.example/v1"
    assert credential.api_key == ""
    assert raw_encrypted_column(credential) == ""
    assert "base URL changed" in response.text
    assert PROVIDER_KEY not in response.text


def test_changing_the_base_url_with_the_key_re_entered_keeps_the_new_key(admin_client, org):
    credential = services.provider_credential_set(org=org, provider="openai", api_key=PROVIDER_KEY)

    response = admin_client.post(
        admin_url("providercredential", "change", credential.pk),
        {"api_key": "sk-for-the-new-host-000000-1111", "base_url": "https://llm.internal/v1"},
    )

    assert response.status_code == 302
    credential.refresh_from_db()
    assert (credential.api_key, credential.base_url) == ("sk-for-the-new-host-000000-1111", "https://llm.internal/v1")


@pytest.mark.django_db(transaction=True)
def test_an_org_base_url_never_receives_the_deployment_key(monkeypatch):
    from asgiref.sync import async_to_sync

    from proxy.credentials import upstream_credentials
    from proxy.providers.registry import PROVIDERS

    monkeypatch.setenv("OPENAI_API_KEY", "sk-deployment-wide-key-0000")
    org = Organisation.objects.create(slug="cleared", name="Cleared")
    credential = ProviderCredential(org=org, provider="openai", base_url="https://attacker.example/v1")
    credential.api_key = ""
    credential.save()

    api_key, base_url = async_to_sync(upstream_credentials)(org_pk=org.pk, spec=PROVIDERS["openai"], caller_key=None)

    assert (api_key, base_url) == ("", "https://attacker.example/v1")


def test_a_key_is_revoked_with_the_button_on_its_own_page(admin_client, org):
    key = services.gateway_key_issue(org=org, name="ci").key
    page = admin_client.get(admin_url("gatewaykey", "change", key.pk))
    assert f'action="{admin_url("gatewaykey", "revoke", key.pk)}"' in page.text
    assert "Revoke this key" in page.text

    response = admin_client.post(admin_url("gatewaykey", "revoke", key.pk), follow=True)

    assert response.status_code == 200
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert "stops working at once" in response.text
    assert "Revoke this key" not in response.text
    assert LogEntry.objects.get(object_id=str(key.pk)).change_message == "Revoked."


def test_revoking_takes_a_post_and_the_change_permission(client, org, django_user_model):
    key = services.gateway_key_issue(org=org).key
    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_gatewaykey"))
    client.force_login(viewer)

    assert "Revoke this key" not in client.get(admin_url("gatewaykey", "change", key.pk)).text
    assert client.post(admin_url("gatewaykey", "revoke", key.pk)).status_code == 403
    key.refresh_from_db()
    assert key.revoked_at is None

    outsider = django_user_model.objects.create_user("outsider", password="pw")  # not staff
    client.force_login(outsider)
    assert client.post(admin_url("gatewaykey", "revoke", key.pk)).status_code == 302  # to the admin login
    key.refresh_from_db()
    assert key.revoked_at is None


def test_revoke_is_post_only(admin_client, org):
    key = services.gateway_key_issue(org=org).key

    assert admin_client.get(admin_url("gatewaykey", "revoke", key.pk)).status_code == 405
    key.refresh_from_db()
    assert key.revoked_at is None


def test_key_form_offers_each_project_with_its_org_and_only_the_chosen_orgs(admin_client, org, project):
    other = services.organisation_get_or_create(slug="globex")
    foreign = services.project_get_or_create(org=other, slug="billing")

    page = admin_client.get(admin_url("gatewaykey", "add"))
    assert f'value="{project.pk}" data-org="{org.pk}"' in page.text
    assert f'value="{foreign.pk}" data-org="{other.pk}"' in page.text
    assert "proxy/gateway_key_form.js" in page.text

    for_org = admin_client.get(admin_url("gatewaykey", "add"), {"org": org.pk})
    choices = {value for value, _ in for_org.context["adminform"].form.fields["project"].choices if value}
    assert {choice.value for choice in choices} == {project.pk}


def test_a_key_can_be_issued_with_an_expiry_but_not_in_the_past(admin_client, org):
    past = issue_via_admin(admin_client, org=org.pk, expires_at_0="2020-01-01", expires_at_1="00:00:00")
    assert past.status_code == 200
    assert "expires_at" in past.context["adminform"].form.errors
    assert "In UTC." in past.text

    response = issue_via_admin(admin_client, org=org.pk, expires_at_0="2099-01-01", expires_at_1="12:00:00")

    assert response.status_code == 302
    assert GatewayKey.objects.get().expires_at.isoformat() == "2099-01-01T12:00:00+00:00"


def test_key_pages_show_name_expiry_last_use_and_spend_with_their_time_zone(admin_client, org):
    from telemetry.models import RequestLog

    key = services.gateway_key_issue(org=org, name="billing-batch").key
    GatewayKey.objects.filter(pk=key.pk).update(last_used_at="2026-03-04T05:06:00Z")
    for n, cost in enumerate(["0.25", "0.5", None]):
        RequestLog.objects.create(
            id=f"log-{n}",
            timestamp="2026-03-04T05:06:00Z",
            log_data={"attributes": {"metadata": {"gateway_key_id": key.pk}}},
            org_id="acme",
            status="success",
            status_code=200,
            input_tokens=1,
            output_tokens=1,
            total_tokens=2,
            cost=cost,
            path="/v1/chat/completions",
            stream=False,
        )
    RequestLog.objects.create(
        id="log-other-key",
        timestamp="2026-03-04T05:06:00Z",
        log_data={"attributes": {"metadata": {"gateway_key_id": key.pk + 1}}},
        org_id="acme",
        status="success",
        status_code=200,
        input_tokens=1,
        output_tokens=1,
        total_tokens=2,
        cost="7",
        path="/v1/chat/completions",
        stream=False,
    )

    changelist = admin_client.get(admin_url("gatewaykey", "changelist"))
    page = admin_client.get(admin_url("gatewaykey", "change", key.pk))

    assert "billing-batch" in changelist.text
    assert "2026-03-04 05:06 UTC" in changelist.text
    assert "2026-03-04 05:06 UTC" in page.text
    assert "0.7500" in page.text
    assert "Updated at most once a minute" in page.text


def test_provider_credential_form_says_base_url(admin_client):
    page = admin_client.get(admin_url("providercredential", "add"))

    assert ">Base URL:<" in page.text


def test_issue_key_command_names_the_key(capsys):
    from django.core.management import call_command

    call_command("issue_key", "--org", "acme", "--name", "nightly-eval", "--expires-in-days", "30")

    plaintext = capsys.readouterr().out.strip().splitlines()[-1]
    key = GatewayKey.objects.get(key_hash=hash_gateway_key(plaintext))
    assert key.name == "nightly-eval"
    assert 29 < (key.expires_at - key.created_at).days + 1 <= 31
