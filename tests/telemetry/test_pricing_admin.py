"""Pricing in telemetry: overrides and recomputations in its admin, unpriced models listed, no import cycles."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.urls import reverse

from telemetry.models import CostRecomputation, PriceOverride
from tests.dashboards.conftest import export_logs, make_log

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


def imports_of(app: str) -> set[str]:
    """The top-level packages imported anywhere in an app's modules (migrations included)."""
    found = set()
    for source in (ROOT / app).rglob("*.py"):
        for match in re.finditer(r"^\s*(?:from|import)\s+([a-z_]+)", source.read_text(), re.MULTILINE):
            found.add(match.group(1))
    return found


def test_proxy_does_not_import_dashboards_and_telemetry_does_not_import_proxy():
    assert "dashboards" not in imports_of("proxy")
    assert "proxy" not in imports_of("telemetry")
    assert "dashboards" not in imports_of("telemetry")


def test_the_moved_models_keep_their_tables():
    assert PriceOverride._meta.db_table == "proxy_priceoverride"
    assert CostRecomputation._meta.db_table == "dashboards_costrecomputation"


@pytest.fixture
def now():
    return datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)


@pytest.fixture
def late_override(now):
    return PriceOverride.objects.create(
        provider="openai",
        model="gpt-4o-mini",
        input_per_mtok=Decimal("1.5"),
        output_per_mtok=Decimal("6"),
        valid_from=now - timedelta(days=1),
    )


def test_pricing_admin_pages_load(admin_client, late_override):
    for name in ("priceoverride", "costrecomputation"):
        assert admin_client.get(reverse(f"admin:telemetry_{name}_changelist")).status_code == 200
    assert admin_client.get(reverse("admin:telemetry_priceoverride_add")).status_code == 200
    assert admin_client.get(reverse("admin:telemetry_priceoverride_change", args=[late_override.pk])).status_code == 200


def test_unpriced_models_are_listed_with_their_counts(admin_client):
    export_logs(
        [
            make_log(org="acme", model="mystery-model", provider="openai", cost=None, input_tokens=30),
            make_log(org="acme", model="mystery-model", provider="openai", cost=None, input_tokens=70),
            make_log(org="acme", model="gpt-4o-mini", provider="openai"),
        ]
    )

    changelist = admin_client.get(reverse("admin:telemetry_priceoverride_changelist"))
    assert reverse("admin:telemetry_priceoverride_unpriced").encode() in changelist.content
    response = admin_client.get(reverse("admin:telemetry_priceoverride_unpriced"))

    assert response.status_code == 200
    rows = response.context["rows"]
    assert [(row["provider"], row["model"], row["requests"]) for row in rows] == [("openai", "mystery-model", 2)]
    assert rows[0]["tokens"] == 30 + 70 + 2 * 50
    assert b"mystery-model" in response.content
    assert b"gpt-4o-mini" not in response.content


def test_the_range_form_warns_when_an_override_starts_after_it(
    admin_client, late_override, now, django_capture_on_commit_callbacks
):
    changelist = reverse("admin:telemetry_priceoverride_changelist")
    selection = {"action": "recompute_costs", "_selected_action": [late_override.pk], "apply": "1"}
    too_early = {
        "since": (now - timedelta(days=5)).date().isoformat(),
        "until": (now - timedelta(days=2)).date().isoformat(),
    }

    response = admin_client.post(changelist, {**selection, **too_early})

    assert response.status_code == 200
    assert b"start after the range" in response.content
    assert b"openai/gpt-4o-mini from" in response.content
    assert not CostRecomputation.objects.exists()

    with django_capture_on_commit_callbacks(execute=False):
        confirmed = admin_client.post(changelist, {**selection, **too_early, "confirm": "on"})
    assert confirmed.status_code == 302
    assert CostRecomputation.objects.count() == 1


def test_a_finished_recomputation_shows_how_many_costs_changed(
    admin_client, late_override, now, settings, django_capture_on_commit_callbacks
):
    from telemetry import recomputation

    settings.CELERY_TASK_ALWAYS_EAGER = True
    export_logs([make_log(org="acme", at=now - timedelta(hours=index)) for index in range(3)])
    # Before the override: already at genai-prices' price, so repricing it changes nothing.
    library_cost = Decimal("0.15") * 100 / 1_000_000 + Decimal("0.6") * 50 / 1_000_000
    export_logs([make_log(org="acme", at=now - timedelta(days=3), cost=library_cost.quantize(Decimal("1e-10")))])

    with django_capture_on_commit_callbacks(execute=True):
        changed = recomputation.cost_recomputation_start(
            provider="openai", model="gpt-4o-mini", since=(now - timedelta(days=1)).date(), until=now.date()
        )
        unchanged = recomputation.cost_recomputation_start(
            provider="openai",
            model="gpt-4o-mini",
            since=(now - timedelta(days=3)).date(),
            until=(now - timedelta(days=3)).date(),
        )

    listing = admin_client.get(reverse("admin:telemetry_costrecomputation_changelist"))

    changed.refresh_from_db()
    unchanged.refresh_from_db()
    assert (changed.status, changed.changed, unchanged.changed) == ("done", 3, 0)
    assert b"3 changed" in listing.content
    assert b"0 changed" in listing.content
