"""The demo data command: realistic rows, their orgs and projects, and rollups that add up."""

import pytest
from django.core.management import call_command
from django.db.models import Sum

from dashboards.models import DailyProjectUsage, DailyUsage, HourlyProjectUsage, HourlyUsage
from proxy.models import Organisation, Project
from telemetry.models import RequestLog
from tests.dashboards.test_rollups import assert_rollups_match_raw


@pytest.mark.django_db(transaction=True)
def test_seed_demo_logs_loads_realistic_traffic_and_its_rollups(capsys):
    call_command("seed_demo_logs", "--count", "600", "--orgs", "3", "--days", "3")
    assert RequestLog.objects.count() == 600
    assert set(Organisation.objects.values_list("slug", flat=True)) == {"acme", "globex", "initech"}
    assert Project.objects.filter(org__slug="acme").count() >= 3
    assert set(RequestLog.objects.values_list("org_id", flat=True)) <= {"acme", "globex", "initech"}
    assert RequestLog.objects.values("provider").distinct().count() >= 4
    assert RequestLog.objects.filter(status="error").exists()
    streamed = RequestLog.objects.filter(stream=True, status="success").first()
    assert "streamed_data" in streamed.log_data["attributes"]["response"]
    assert streamed.log_data["attributes"]["id"] == streamed.pk
    assert streamed.log_data["attributes"]["metadata"]["tokens"]["input"] == streamed.input_tokens
    for rollup in (HourlyUsage, DailyUsage, HourlyProjectUsage, DailyProjectUsage):
        assert rollup.objects.aggregate(n=Sum("requests"))["n"] == 600
    assert_rollups_match_raw()
    captured = capsys.readouterr()
    assert "logs" in captured.err and "600/600" in captured.err
    assert "Added 600 demo request logs" in captured.out

    call_command("seed_demo_logs", "--count", "50", "--if-empty")
    assert RequestLog.objects.count() == 600
    assert "not empty" in capsys.readouterr().out
