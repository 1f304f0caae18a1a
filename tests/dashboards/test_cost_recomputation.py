"""Repricing the request log after a price override: the task, its progress, and the admin action."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.urls import reverse

from dashboards.models import DailyProjectUsage, DailyUsage
from telemetry import recomputation as services
from telemetry.models import CostRecomputation, PriceOverride, RequestLog
from tests.dashboards.conftest import export_logs, make_log

OLD_COST = Decimal("0.0001500000")
INPUT_PER_MTOK, OUTPUT_PER_MTOK = Decimal("1.5"), Decimal("6")


def new_price(log: RequestLog) -> Decimal:
    return ((INPUT_PER_MTOK * log.input_tokens + OUTPUT_PER_MTOK * log.output_tokens) / 1_000_000).quantize(
        Decimal("1e-10")
    )


@pytest.fixture
def now():
    return datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)


@pytest.fixture
def override(db, now):
    return PriceOverride.objects.create(
        provider="openai",
        model="gpt-4o-mini",
        input_per_mtok=INPUT_PER_MTOK,
        output_per_mtok=OUTPUT_PER_MTOK,
        valid_from=now - timedelta(days=30),
    )


@pytest.fixture
def logs(db, now):
    """Logs of the overridden model in the range, one before it, and another model's in it."""
    in_range = [
        make_log(
            org="acme", input_tokens=100 + index, output_tokens=10 + 20 * index, at=now - timedelta(days=index % 3)
        )
        for index in range(5)
    ]
    routed = make_log(org="acme", model="fast", input_tokens=400, output_tokens=80, at=now - timedelta(days=1))
    routed.log_data["attributes"]["metadata"]["upstream_model"] = "gpt-4o-mini"
    before = make_log(org="acme", at=now - timedelta(days=10))
    other_model = make_log(org="acme", model="claude-3-5-haiku", provider="anthropic", at=now - timedelta(days=1))
    export_logs([*in_range, routed, before, other_model])
    return {"in_range": [*in_range, routed], "before": before, "other_model": other_model}


def run_recomputation(django_capture_on_commit_callbacks, **kwargs) -> CostRecomputation:
    with django_capture_on_commit_callbacks(execute=True):
        recomputation = services.cost_recomputation_start(**kwargs)
    recomputation.refresh_from_db()
    return recomputation


@pytest.fixture
def eager(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True


@pytest.mark.usefixtures("eager", "override")
def test_recomputation_reprices_the_range_and_its_rollups(logs, now, django_capture_on_commit_callbacks):
    since, until = (now - timedelta(days=3)).date(), now.date()

    recomputation = run_recomputation(
        django_capture_on_commit_callbacks, provider="openai", model="gpt-4o-mini", since=since, until=until
    )

    assert recomputation.status == CostRecomputation.Status.DONE
    assert recomputation.total == recomputation.processed == len(logs["in_range"])
    assert recomputation.changed == len(logs["in_range"])
    assert recomputation.progress == 100
    assert recomputation.started_at and recomputation.finished_at
    for log in logs["in_range"]:
        stored = RequestLog.objects.get(pk=log.pk)
        assert stored.cost == new_price(log)
        assert Decimal(str(stored.log_data["attributes"]["metadata"]["cost"])) == new_price(log)
    for untouched in (logs["before"], logs["other_model"]):
        stored = RequestLog.objects.get(pk=untouched.pk)
        assert stored.cost == OLD_COST
        assert stored.log_data["attributes"]["metadata"]["cost"] == float(OLD_COST)

    expected = sum(new_price(log) for log in logs["in_range"])
    for rollup in (DailyUsage, DailyProjectUsage):
        in_range = rollup.objects.filter(
            bucket__date__gte=since, provider="openai", model__in=["gpt-4o-mini", "fast"]
        ).aggregate(cost=Sum("cost"))["cost"]
        assert in_range == expected, rollup
        assert rollup.objects.filter(bucket__date__lt=since).aggregate(cost=Sum("cost"))["cost"] == OLD_COST
        assert rollup.objects.filter(model="claude-3-5-haiku").aggregate(cost=Sum("cost"))["cost"] == OLD_COST


@pytest.mark.usefixtures("eager", "override")
def test_running_again_changes_nothing(logs, now, django_capture_on_commit_callbacks):
    kwargs = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "since": (now - timedelta(days=3)).date(),
        "until": now.date(),
    }
    run_recomputation(django_capture_on_commit_callbacks, **kwargs)

    again = run_recomputation(django_capture_on_commit_callbacks, **kwargs)

    assert again.status == CostRecomputation.Status.DONE
    assert again.processed == again.total == len(logs["in_range"])
    assert again.changed == 0


@pytest.mark.usefixtures("eager", "override")
def test_chunks_walk_every_row_once(logs, now, monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setattr(services, "RECOMPUTE_CHUNK_ROWS", 2)

    recomputation = run_recomputation(
        django_capture_on_commit_callbacks, since=(now - timedelta(days=3)).date(), until=now.date()
    )

    # Provider and model left empty: every log in the range, of any model.
    assert recomputation.total == recomputation.processed == len(logs["in_range"]) + 1
    assert RequestLog.objects.get(pk=logs["in_range"][-1].pk).cost == new_price(logs["in_range"][-1])


def test_a_failed_recomputation_records_its_error_and_raises(logs, now, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("price table unavailable")

    monkeypatch.setattr(services, "_reprice_chunk", broken)
    recomputation = CostRecomputation.objects.create(since=now.date(), until=now.date())

    with pytest.raises(RuntimeError):
        services.cost_recomputation_run(recomputation_id=recomputation.pk)

    recomputation.refresh_from_db()
    assert recomputation.status == CostRecomputation.Status.FAILED
    assert "price table unavailable" in recomputation.error
    assert recomputation.finished_at is not None


def test_progress_reads_as_a_fraction():
    recomputation = CostRecomputation(
        since=datetime(2025, 1, 1).date(), until=datetime(2025, 1, 2).date(), total=5000, processed=1234
    )

    assert recomputation.progress == 24
    recomputation.processed = 1250
    assert recomputation.progress == 25


def test_the_admin_action_asks_for_a_range_then_starts_a_recomputation(
    admin_client, override, now, django_capture_on_commit_callbacks
):
    changelist = reverse("admin:telemetry_priceoverride_changelist")
    selection = {"action": "recompute_costs", "_selected_action": [override.pk]}

    form_page = admin_client.post(changelist, selection)

    assert form_page.status_code == 200
    assert form_page.context["form"].initial == {"since": override.valid_from.date(), "until": now.date()}
    assert b"Recompute costs" in form_page.content

    since = (now - timedelta(days=2)).date()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin_client.post(
            changelist, {**selection, "apply": "1", "since": since.isoformat(), "until": now.date().isoformat()}
        )

    assert response.status_code == 302
    assert response.url == reverse("admin:telemetry_costrecomputation_changelist")
    recomputation = CostRecomputation.objects.get()
    assert (recomputation.provider, recomputation.model) == ("openai", "gpt-4o-mini")
    assert (recomputation.since, recomputation.until) == (since, now.date())
    assert recomputation.status == CostRecomputation.Status.PENDING
    assert len(callbacks) == 1

    listing = admin_client.get(response.url)
    assert listing.status_code == 200
    assert b"0 / 0 (0%)" in listing.content


def test_the_admin_action_rejects_a_backwards_range(admin_client, override, now):
    response = admin_client.post(
        reverse("admin:telemetry_priceoverride_changelist"),
        {
            "action": "recompute_costs",
            "_selected_action": [override.pk],
            "apply": "1",
            "since": now.date().isoformat(),
            "until": (now - timedelta(days=1)).date().isoformat(),
        },
    )

    assert response.status_code == 200
    assert response.context["form"].errors
    assert not CostRecomputation.objects.exists()
