"""Model groups in admin: deployments and fallbacks inline, deployment keys write-only, staff only."""

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from proxy import services
from proxy.models import Deployment, Fallback, ModelGroup

pytestmark = pytest.mark.django_db

DEPLOYMENT_KEY = "sk-deploy-a1b2c3d4e5f6g7h8-5678"
DEPLOYMENTS = "deployments"
FALLBACKS = "fallbacks"


def admin_url(view, *args):
    return reverse(f"admin:proxy_modelgroup_{view}", args=args)


@pytest.fixture
def org():
    return services.organisation_get_or_create(slug="acme", name="Acme")


def management(prefix, total, initial=0):
    return {
        f"{prefix}-TOTAL_FORMS": str(total),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


def group_data(*, name="gpt-main", org=None, deployments=(), fallbacks=(), initial_deployments=0):
    data = {
        "org": org.pk if org else "",
        "name": name,
        "strategy": "least-busy",
        "num_retries": "2",
        "allowed_fails": "3",
        "cooldown_seconds": "60",
        **management(DEPLOYMENTS, len(deployments), initial_deployments),
        **management(FALLBACKS, len(fallbacks)),
    }
    for index, fields in enumerate(deployments):
        row = {
            "name": f"d{index}",
            "provider": "openai",
            "base_url": "",
            "api_key": "",
            "api_key_env": "",
            "upstream_model": "gpt-4o-mini",
            "weight": "1",
            "rpm": "",
            "tpm": "",
            "enabled": "on",
        } | fields
        data.update({f"{DEPLOYMENTS}-{index}-{name}": value for name, value in row.items()})
    for index, fields in enumerate(fallbacks):
        row = {"trigger": "failure", "position": "0"} | fields
        data.update({f"{FALLBACKS}-{index}-{name}": value for name, value in row.items()})
    return data


def raw_encrypted_key(deployment):
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key_encrypted FROM proxy_deployment WHERE id = %s", [deployment.pk])
        return cursor.fetchone()[0]


def test_the_group_pages_load(admin_client, org):
    group = ModelGroup.objects.create(name="gpt-main", org=org)
    Deployment.objects.create(group=group, name="east", provider="openai", upstream_model="gpt-4o")
    backup = ModelGroup.objects.create(name="backup")
    Fallback.objects.create(group=group, to_group=backup)

    for url in (admin_url("changelist"), admin_url("add"), admin_url("change", group.pk)):
        response = admin_client.get(url)
        assert response.status_code == 200, url
    changelist = admin_client.get(admin_url("changelist")).text
    assert "gpt-main" in changelist and "backup" in changelist


def test_a_group_is_added_with_its_deployments_and_their_keys_are_stored_encrypted_and_never_shown(admin_client, org):
    backup = ModelGroup.objects.create(name="backup")
    data = group_data(
        org=org,
        deployments=[{"name": "east", "api_key": DEPLOYMENT_KEY}, {"name": "west", "api_key_env": "WEST_KEY"}],
        fallbacks=[{"to_group": str(backup.pk), "trigger": "context_window"}],
    )

    response = admin_client.post(admin_url("add"), data)

    assert response.status_code == 302, response.context["errors"] if response.context else response
    group = ModelGroup.objects.get(name="gpt-main")
    east, west = group.deployments.order_by("name")
    assert east.api_key == DEPLOYMENT_KEY
    assert DEPLOYMENT_KEY not in raw_encrypted_key(east)
    assert (west.api_key, west.api_key_env) == ("", "WEST_KEY")
    assert list(group.fallbacks.values_list("to_group__name", "trigger")) == [("backup", "context_window")]
    page = admin_client.get(admin_url("change", group.pk)).text
    assert DEPLOYMENT_KEY not in page
    assert "••••5678" in page


def test_a_blank_key_on_change_keeps_the_stored_key_and_a_new_one_replaces_it(admin_client, org):
    group = ModelGroup.objects.create(name="gpt-main", org=org)
    deployment = Deployment(group=group, name="d0", provider="openai", upstream_model="gpt-4o-mini")
    deployment.api_key = DEPLOYMENT_KEY
    deployment.save()
    row = {"id": str(deployment.pk), "group": str(group.pk)}

    kept = admin_client.post(
        admin_url("change", group.pk), group_data(org=org, deployments=[row], initial_deployments=1)
    )
    assert kept.status_code == 302
    deployment.refresh_from_db()
    assert deployment.api_key == DEPLOYMENT_KEY

    rotated = admin_client.post(
        admin_url("change", group.pk),
        group_data(org=org, deployments=[row | {"api_key": "sk-rotated-000000000-4321"}], initial_deployments=1),
    )
    assert rotated.status_code == 302
    deployment.refresh_from_db()
    assert deployment.api_key == "sk-rotated-000000000-4321"

    cleared = admin_client.post(
        admin_url("change", group.pk),
        group_data(org=org, deployments=[row | {"clear_api_key": "on"}], initial_deployments=1),
    )
    assert cleared.status_code == 302
    deployment.refresh_from_db()
    assert deployment.api_key == ""


def test_a_group_may_fall_back_only_to_a_shared_group_or_one_of_its_own_org(admin_client, org):
    other = services.organisation_get_or_create(slug="globex", name="Globex")
    foreign = ModelGroup.objects.create(name="globex-model", org=other)
    own = ModelGroup.objects.create(name="acme-backup", org=org)
    shared = ModelGroup.objects.create(name="shared-backup")

    refused = admin_client.post(admin_url("add"), group_data(org=org, fallbacks=[{"to_group": str(foreign.pk)}]))
    assert refused.status_code == 200
    assert not ModelGroup.objects.filter(name="gpt-main").exists()
    assert "Choose a shared group or one of this group" in refused.text

    accepted = admin_client.post(
        admin_url("add"),
        group_data(org=org, fallbacks=[{"to_group": str(own.pk)}, {"to_group": str(shared.pk), "position": "1"}]),
    )
    assert accepted.status_code == 302
    group = ModelGroup.objects.get(name="gpt-main")
    assert list(group.fallbacks.values_list("to_group__name", flat=True)) == ["acme-backup", "shared-backup"]

    shared_group = admin_client.post(
        admin_url("add"), group_data(name="shared-main", fallbacks=[{"to_group": str(own.pk)}])
    )
    assert shared_group.status_code == 200, "a shared group fell back to one org's group"

    itself = admin_client.post(
        admin_url("change", group.pk), group_data(org=org, fallbacks=[{"to_group": str(group.pk)}])
    )
    assert itself.status_code == 200
    assert "cannot fall back to itself" in itself.text


def test_group_pages_are_for_staff_with_permission_only(client, org, django_user_model):
    group = ModelGroup.objects.create(name="gpt-main", org=org)
    member = django_user_model.objects.create_user("member", password="pw")  # an org member, not staff
    org.memberships.create(user=member, role="owner")
    client.force_login(member)
    for url in (admin_url("changelist"), admin_url("change", group.pk)):
        assert client.get(url).status_code == 302  # to the admin login

    staff = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    assert client.get(admin_url("changelist")).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_modelgroup"))
    assert client.get(admin_url("change", group.pk)).status_code == 200
    assert client.post(admin_url("change", group.pk), group_data(org=org, name="renamed")).status_code == 403
    group.refresh_from_db()
    assert group.name == "gpt-main"


def test_the_group_changelist_does_not_query_per_row(admin_client):
    def queries_for_changelist():
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(admin_url("changelist")).status_code == 200
        return len(captured)

    def add_groups(names):
        for name in names:
            org = services.organisation_get_or_create(slug=name)
            group = ModelGroup.objects.create(name=name, org=org)
            Deployment.objects.create(group=group, name="d", provider="openai", upstream_model="gpt-4o")

    add_groups(["a", "b"])
    few = queries_for_changelist()
    add_groups([f"group-{n}" for n in range(15)])

    assert queries_for_changelist() == few
