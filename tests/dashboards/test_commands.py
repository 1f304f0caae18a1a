"""The demo data command: realistic rows, their orgs and projects, and rollups that add up."""

import pytest
from django.core.management import call_command
from django.db.models import Sum

from dashboards.conversation import conversation_from
from dashboards.models import (
    DailyFacetUsage,
    DailyProjectUsage,
    DailyUsage,
    HourlyFacetUsage,
    HourlyProjectUsage,
    HourlyUsage,
    ThreadUsage,
    ThreadUser,
)
from proxy import services as proxy_services
from proxy.models import Organisation, Project
from telemetry.models import RequestLog
from tests.dashboards.conftest import export_logs, make_log
from tests.dashboards.test_rollups import assert_rollups_match_raw


@pytest.mark.django_db(transaction=True)
def test_seed_demo_logs_loads_realistic_traffic_and_its_rollups(capsys):
    call_command("seed_demo_logs", "--count", "600", "--orgs", "3", "--days", "3")
    assert RequestLog.objects.count() == 600
    demo_orgs = {"demo-acme": "Demo: Acme Corporation", "demo-globex": "Demo: Globex", "demo-initech": "Demo: Initech"}
    assert dict(Organisation.objects.values_list("slug", "name")) == demo_orgs
    assert Project.objects.filter(org__slug="demo-acme").count() >= 3
    assert set(RequestLog.objects.values_list("org_id", flat=True)) <= set(demo_orgs)
    assert RequestLog.objects.values("provider").distinct().count() >= 4
    assert RequestLog.objects.filter(status="error").exists()
    streamed = RequestLog.objects.filter(stream=True, status="success").first()
    assert "streamed_data" in streamed.log_data["attributes"]["response"]
    assert streamed.log_data["attributes"]["id"] == streamed.pk
    assert streamed.log_data["attributes"]["metadata"]["tokens"]["input"] == streamed.input_tokens
    for rollup in (HourlyUsage, DailyUsage, HourlyProjectUsage, DailyProjectUsage):
        assert rollup.objects.aggregate(n=Sum("requests"))["n"] == 600
    assert_rollups_match_raw()
    # Every demo request is in a thread, and the support bot's threads have tool calls in them.
    assert ThreadUsage.objects.aggregate(n=Sum("requests"))["n"] == 600
    assert ThreadUsage.objects.filter(users__gt=0).count() == ThreadUsage.objects.count()
    support = RequestLog.objects.filter(project_id="support-bot", status="success")
    with_tools = [log for log in support if "tools" in log.log_data["attributes"]["request"]]
    assert with_tools
    assert any(
        conversation_from(log.log_data["attributes"]["request"], log.log_data["attributes"]["response"]).turns[-2].role
        == "tool"
        for log in with_tools
        if not log.log_data["attributes"]["metadata"]["content_redacted"]
    )
    captured = capsys.readouterr()
    assert "logs" in captured.err and "600/600" in captured.err
    assert "Added 600 demo request logs" in captured.out

    call_command("seed_demo_logs", "--count", "50", "--if-empty")
    assert RequestLog.objects.count() == 600
    assert "already holds" in capsys.readouterr().out


@pytest.mark.django_db
def test_seed_demo_logs_with_a_count_of_zero_adds_nothing(capsys):
    call_command("seed_demo_logs", "--count", "0")
    assert not RequestLog.objects.exists() and not Organisation.objects.exists()
    assert "No demo logs" in capsys.readouterr().out


@pytest.mark.django_db
def test_seed_demo_logs_embedded_only_leaves_a_database_url_database_alone(capsys):
    """The tests run on the database DATABASE_URL names, as a real deployment does."""
    call_command("seed_demo_logs", "--count", "50", "--days", "1", "--if-empty", "--embedded-only")
    assert not RequestLog.objects.exists() and not Organisation.objects.exists()
    assert "DATABASE_URL" in capsys.readouterr().out


@pytest.mark.django_db
def test_seed_demo_logs_if_empty_leaves_a_database_with_a_real_org_alone():
    Organisation.objects.create(slug="acme", name="Acme")
    call_command("seed_demo_logs", "--count", "50", "--days", "1", "--if-empty")
    assert not RequestLog.objects.exists()
    assert list(Organisation.objects.values_list("slug", flat=True)) == ["acme"]


@pytest.mark.django_db(transaction=True)
def test_remove_demo_data_removes_demo_orgs_logs_and_rollups_and_nothing_else(capsys):
    call_command("seed_demo_logs", "--count", "300", "--orgs", "2", "--days", "2")
    # A real org called acme, whose key was issued the way the README says, with traffic of its own.
    acme = proxy_services.organisation_get_or_create(slug="acme")
    project = proxy_services.project_get_or_create(org=acme, slug="search")
    proxy_services.gateway_key_issue(org=acme, project=project, name="")
    export_logs([make_log(org="acme", project="search") for _ in range(3)])
    capsys.readouterr()

    call_command("remove_demo_data")

    assert "Removed 300 demo request logs" in capsys.readouterr().out
    assert list(Organisation.objects.values_list("slug", flat=True)) == ["acme"]
    assert list(Project.objects.values_list("org__slug", "slug")) == [("acme", "search")]
    assert set(RequestLog.objects.values_list("org_id", flat=True)) == {"acme"}
    assert RequestLog.objects.count() == 3
    for rollup in (HourlyUsage, DailyUsage, HourlyProjectUsage, DailyProjectUsage, HourlyFacetUsage, DailyFacetUsage):
        assert set(rollup.objects.values_list("org_id", flat=True)) == {"acme"}, rollup
    assert_rollups_match_raw()
    assert not ThreadUsage.objects.exists() and not ThreadUser.objects.exists()

    call_command("remove_demo_data")
    assert "No demo data" in capsys.readouterr().out


@pytest.mark.django_db(transaction=True)
def test_demo_data_goes_into_an_embedded_database_once_and_removed_demo_data_stays_removed(settings, tmp_path):
    settings.DATABASE_IS_EMBEDDED, settings.VAR_DIR = True, tmp_path
    first_run = ("seed_demo_logs", "--count", "100", "--days", "1", "--if-empty", "--embedded-only")
    call_command(*first_run)
    assert RequestLog.objects.count() == 100
    call_command("remove_demo_data")
    assert not RequestLog.objects.exists() and not Organisation.objects.exists()

    call_command(*first_run)

    assert not RequestLog.objects.exists() and not Organisation.objects.exists()
