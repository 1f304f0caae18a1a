"""Budgets and limits set through the config file's sections, `issue_key`, and admin."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from budgets import config_sections
from budgets.models import Budget, BudgetAlert, RateLimit, Scope
from gateway_project.config_file.sections import entry_sections
from proxy import services as proxy_services


@pytest.fixture
def org(db):
    return proxy_services.organisation_get_or_create(slug="acme")


@pytest.fixture
def project(org):
    return proxy_services.project_get_or_create(org=org, slug="search")


def test_the_four_sections_are_registered_for_orgs_and_projects():
    for kind in ("org", "project"):
        keys = {section.key for section in entry_sections(kind)}
        assert {"budget", "limits", "user_budget", "user_limits"} <= keys


def test_a_project_entry_applies_and_exports_the_same_values(project):
    budget = {"usd": 10, "period": "month", "hard": True}
    limits = {"rpm": 600, "tpm": 200000}
    user_budget = {
        "usd": 1.5,
        "period": "day",
        "hard": False,
        "overrides": {"alice": {"usd": 5, "period": "day", "hard": True}},
    }
    user_limits = {"rpm": 60, "overrides": {"alice": {"rpm": 600}}}
    config_sections.apply_budget(project, budget)
    config_sections.apply_limits(project, limits)
    config_sections.apply_user_budget(project, user_budget)
    config_sections.apply_user_limits(project, user_limits)

    assert Budget.objects.get(scope=Scope.PROJECT, project=project).amount_usd == Decimal(10)
    assert Budget.objects.get(scope=Scope.USER, project=project, user_id="alice").amount_usd == Decimal(5)
    assert RateLimit.objects.get(scope=Scope.USER, project=project, user_id="").rpm == 60
    assert config_sections.export_budget(project) == budget
    assert config_sections.export_limits(project) == limits
    assert config_sections.export_user_budget(project) == user_budget
    assert config_sections.export_user_limits(project) == user_limits
    # Applying the same file again changes nothing.
    config_sections.apply_user_budget(project, user_budget)
    assert Budget.objects.filter(project=project).count() == 3


def test_an_absent_key_removes_what_it_set(project):
    config_sections.apply_budget(project, {"usd": 10})
    config_sections.apply_user_limits(project, {"rpm": 5, "overrides": {"bob": {"rpm": 50}}})
    config_sections.apply_user_limits(project, {"rpm": 5})
    assert list(RateLimit.objects.filter(project=project).values_list("user_id", flat=True)) == [""]
    config_sections.apply_budget(project, None)
    config_sections.apply_user_limits(project, None)
    assert not Budget.objects.filter(project=project).exists()
    assert not RateLimit.objects.filter(project=project).exists()
    assert config_sections.export_budget(project) is None


def test_an_org_entry_sets_org_wide_rows(org):
    config_sections.apply_budget(org, {"usd": "25.5", "period": "week"})
    config_sections.apply_limits(org, {"tpm": 1000})
    assert Budget.objects.get(scope=Scope.ORG, org=org).period == "week"
    assert config_sections.export_budget(org) == {"usd": 25.5, "period": "week", "hard": True}
    assert config_sections.export_limits(org) == {"tpm": 1000}


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ("budget", {"usd": 10, "period": "year"}, "period must be one of"),
        ("budget", {"period": "day"}, "budget.usd is required"),
        ("budget", {"usd": -1}, "must not be negative"),
        ("budget", {"usd": "ten"}, "usd must be a number"),
        ("budget", {"usd": 1, "hard": "yes"}, "hard must be true or false"),
        ("budget", [10], "must be a mapping"),
        ("limits", {"rpm": -5}, "rpm must be a whole number"),
        ("limits", {"rpm": 1.5}, "rpm must be a whole number"),
        ("limits", {"rps": 5}, "unknown keys rps"),
        ("limits", {}, "needs rpm, tpm or both"),
        ("user_limits", {"rpm": 5, "overrides": ["alice"]}, "overrides must map user ids"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(project, section, value, message):
    with pytest.raises(ValueError, match=message):
        getattr(config_sections, f"apply_{section}")(project, value)


def test_issue_key_sets_the_keys_budget_and_limits(db):
    out = StringIO()
    call_command(
        "issue_key", "--org", "acme", "--budget-usd", "12.5", "--budget-period", "week", "--rpm", "60", "--tpm", "9000",
        stdout=out,
    )  # fmt: skip
    lines = out.getvalue().strip().splitlines()
    assert lines[-1].startswith("tg-")  # the key is still the last line
    budget = Budget.objects.get(scope=Scope.KEY)
    assert (budget.amount_usd, budget.period, budget.hard) == (Decimal("12.5"), "week", True)
    limit = RateLimit.objects.get(scope=Scope.KEY)
    assert (limit.rpm, limit.tpm, limit.key_id) == (60, 9000, budget.key_id)


def test_admin_lists_budgets_limits_and_the_alerts_sent(admin_client, project):
    from django.utils import timezone

    budget = Budget.objects.create(scope=Scope.PROJECT, org=project.org, project=project, amount_usd=5)
    RateLimit.objects.create(scope=Scope.ORG, org=project.org, rpm=10)
    BudgetAlert.objects.create(
        budget=budget, period_start=timezone.now(), threshold=80, spent_usd=4, limit_usd=5, webhook_status="HTTP 204"
    )
    assert "project search" in admin_client.get("/admin/budgets/budget/").content.decode()
    assert "10 rpm" in admin_client.get("/admin/budgets/ratelimit/").content.decode()
    alerts = admin_client.get("/admin/budgets/budgetalert/").content.decode()
    assert "HTTP 204" in alerts
    assert admin_client.get("/admin/budgets/budgetalert/add/").status_code == 403
