"""Period rollover (a frozen clock), Redis down (fail open, counted per process, and fail closed), counters
rebuilt from the logs."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.core.management import call_command

from budgets import clock, services
from budgets.counters import key_prefix
from budgets.models import Scope
from tests.budgets.conftest import clear_counters, wait_settled
from tests.budgets.test_enforcement import chat
from tests.conftest import _free_port

NEW_YEARS_EVE = datetime(2026, 12, 31, 23, 59, tzinfo=UTC).timestamp()


def request_cost(caller, published) -> float:
    answer = chat(caller)
    assert answer.status_code == 200
    return published.wait_for(answer.headers["x-request-id"])["attributes"]["metadata"]["cost"]


@pytest.mark.django_db(transaction=True)
def test_a_daily_budget_rolls_over_at_midnight_utc(caller, published, monkeypatch):
    cost = request_cost(caller, published)
    services.budget_set(
        scope=Scope.PROJECT, org=caller.org, project=caller.project, usd=Decimal(str(cost)) * 2, period="day"
    )
    monkeypatch.setattr(clock, "now", lambda: NEW_YEARS_EVE)
    assert chat(caller).status_code == 200
    wait_settled()
    assert chat(caller).status_code == 200
    wait_settled()
    refused = chat(caller)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert refused.headers["retry-after"] == "60"  # the day ends at midnight UTC
    monkeypatch.setattr(clock, "now", lambda: NEW_YEARS_EVE + 61)
    assert [chat(caller).status_code for _ in range(3)] == [200, 200, 429]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("counted_by", ["redis", "the process while Redis is unreachable"])
def test_a_minute_window_moves_with_the_clock(caller, monkeypatch, settings, counted_by):
    services.rate_limit_set(scope=Scope.KEY, org=caller.org, key=_key(caller), rpm=2)
    if counted_by != "redis":
        settings.GATEWAY_LIMITS_REDIS_URL = _unreachable(settings.GATEWAY_LIMITS_REDIS_URL)
    monkeypatch.setattr(clock, "now", lambda: NEW_YEARS_EVE)
    assert chat(caller).status_code == 200
    monkeypatch.setattr(clock, "now", lambda: NEW_YEARS_EVE + 30)
    assert chat(caller).status_code == 200
    refused = chat(caller)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "30"  # when the first request leaves the window
    monkeypatch.setattr(clock, "now", lambda: NEW_YEARS_EVE + 60)
    assert [chat(caller).status_code for _ in range(2)] == [200, 429]
    # The request of second 30 has left the window, the one of second 60 has not.
    monkeypatch.setattr(clock, "now", lambda: NEW_YEARS_EVE + 91)
    assert [chat(caller).status_code for _ in range(2)] == [200, 429]


def _key(caller):
    from proxy.models import GatewayKey

    return GatewayKey.objects.get(org=caller.org)


@pytest.mark.django_db(transaction=True)
def test_redis_down_fails_open_by_default_and_the_spend_reaches_redis_once_it_is_back(
    caller, published, settings, limits_redis
):
    from budgets import enforcement

    cost = request_cost(caller, published)
    budget = services.budget_set(scope=Scope.ORG, org=caller.org, usd="10")
    working_url = settings.GATEWAY_LIMITS_REDIS_URL
    settings.GATEWAY_LIMITS_REDIS_URL = _unreachable(working_url)
    served = chat(caller)
    assert served.status_code == 200
    assert "x-ratelimit-limit-requests" not in served.headers
    time.sleep(0.2)
    settings.GATEWAY_LIMITS_REDIS_URL = working_url
    enforcement.outage.until = float("-inf")
    label = datetime.now(UTC).strftime("%Y%m01")
    deadline = time.monotonic() + 10
    counter = {}
    while time.monotonic() < deadline:
        counter = limits_redis.hgetall(f"{key_prefix()}:budget:{budget.pk}:{label}")
        if counter.get(b"spent"):
            break
        time.sleep(0.05)
    assert int(counter[b"spent"]) == pytest.approx(cost * 1e9, abs=2)


@pytest.mark.django_db(transaction=True)
def test_redis_down_a_rate_limit_still_holds_counted_in_the_process(caller, published, settings):
    services.rate_limit_set(scope=Scope.KEY, org=caller.org, key=_key(caller), rpm=2)
    settings.GATEWAY_LIMITS_REDIS_URL = _unreachable(settings.GATEWAY_LIMITS_REDIS_URL)
    answers = [chat(caller) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["1", "0", "0"]
    refused = answers[2]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.json()["error"]["type"] == "requests"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    metadata = published.wait_for(refused.headers["x-request-id"])["attributes"]["metadata"]
    assert metadata["limit_refused"] == "key_rpm"


@pytest.mark.django_db(transaction=True)
def test_once_redis_is_back_it_counts_the_windows_again_and_the_local_counts_go(caller, settings):
    from budgets import enforcement

    services.rate_limit_set(scope=Scope.KEY, org=caller.org, key=_key(caller), rpm=1)
    working_url = settings.GATEWAY_LIMITS_REDIS_URL
    settings.GATEWAY_LIMITS_REDIS_URL = _unreachable(working_url)
    assert [chat(caller).status_code for _ in range(2)] == [200, 429]
    settings.GATEWAY_LIMITS_REDIS_URL = working_url
    enforcement.outage.until = float("-inf")
    # Redis never saw the request admitted locally: it admits one of its own, then refuses.
    assert [chat(caller).status_code for _ in range(2)] == [200, 429]
    settings.GATEWAY_LIMITS_REDIS_URL = _unreachable(working_url)
    assert [chat(caller).status_code for _ in range(2)] == [200, 429]


@pytest.mark.django_db(transaction=True)
def test_redis_down_a_budget_redis_reported_nearly_spent_refuses_once_local_spend_passes_it(
    caller, published, settings, limits_redis
):
    from budgets import enforcement

    # With max_tokens 20 a request reserves its real cost (20 output tokens), so each one adds `cost`.
    cost = request_cost(caller, published)
    budget = services.budget_set(
        scope=Scope.PROJECT, org=caller.org, project=caller.project, usd=Decimal(str(cost)) * 10
    )
    counter = f"{key_prefix()}:budget:{budget.pk}:{datetime.now(UTC).strftime('%Y%m01')}"
    limits_redis.hset(counter, "spent", int(cost * 1e9 * 7.5))
    assert chat(caller).status_code == 200  # Redis reports 8.5 costs used of 10
    wait_settled()
    working_url = settings.GATEWAY_LIMITS_REDIS_URL
    settings.GATEWAY_LIMITS_REDIS_URL = _unreachable(working_url)
    served = chat(caller)
    assert served.status_code == 200  # 9.5 of 10, counted here
    refused = chat(caller)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert int(refused.headers["retry-after"]) > 0
    metadata = published.wait_for(refused.headers["x-request-id"])["attributes"]["metadata"]
    assert metadata["limit_refused"] == "project_budget"
    # Back: the local request's spend reaches Redis, and Redis refuses the next one itself.
    settings.GATEWAY_LIMITS_REDIS_URL = working_url
    enforcement.outage.until = float("-inf")
    deadline = time.monotonic() + 10
    while int(limits_redis.hget(counter, "spent")) < int(cost * 1e9 * 9.5) - 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert int(limits_redis.hget(counter, "spent")) == pytest.approx(cost * 1e9 * 9.5, abs=5)
    assert chat(caller).status_code == 429


def _unreachable(url: str) -> str:
    """The same Redis database on a port nothing listens on: an outage, with the counters' key prefix unchanged
    (it is per database, so another database number would put the spend under keys of its own)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{_free_port()}"))


@pytest.mark.django_db(transaction=True)
def test_redis_down_fails_closed_with_a_503_when_so_configured(caller, published, settings):
    services.budget_set(scope=Scope.ORG, org=caller.org, usd="10")
    settings.GATEWAY_LIMITS_FAIL_MODE = "closed"
    settings.GATEWAY_LIMITS_REDIS_URL = _unreachable(settings.GATEWAY_LIMITS_REDIS_URL)
    refused = chat(caller)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "limits_unavailable"
    assert refused.headers["retry-after"] == "1"
    metadata = published.wait_for(refused.headers["x-request-id"])["attributes"]["metadata"]
    assert metadata["error_type"] == "limits_unavailable"


@pytest.mark.django_db(transaction=True)
def test_budgets_rebuild_restores_spend_from_the_postgres_logs_after_a_redis_flush(caller, published, limits_redis):
    from telemetry.exporters.postgres import PostgresExporter

    cost = request_cost(caller, published)
    budget = services.budget_set(
        scope=Scope.PROJECT, org=caller.org, project=caller.project, usd=Decimal(str(cost)) * Decimal("2.5")
    )
    answers = [chat(caller) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200]
    documents = [published.wait_for(a.headers["x-request-id"]) for a in answers]
    first = published.all()[0]
    exported = PostgresExporter("postgres").export([first, *documents])
    assert (exported.failed, exported.transient_error) == ({}, "")
    assert len(exported.succeeded) == 3
    wait_settled()
    clear_counters()  # what a Redis flush would do: the next request would be admitted against nothing
    call_command("budgets_rebuild")
    label = datetime.now(UTC).strftime("%Y%m01")
    counter = limits_redis.hgetall(f"{key_prefix()}:budget:{budget.pk}:{label}")
    assert int(counter[b"spent"]) == pytest.approx(3 * cost * 1e9, abs=3)
    assert chat(caller).status_code == 429


@pytest.mark.django_db(transaction=True)
def test_budgets_rebuild_releases_the_reservations_a_killed_worker_left_only_when_asked(
    caller, published, limits_redis
):
    from telemetry.exporters.postgres import PostgresExporter

    budget = services.budget_set(scope=Scope.PROJECT, org=caller.org, project=caller.project, usd=Decimal("10"))
    user_budget = services.budget_set(scope=Scope.USER, org=caller.org, project=caller.project, usd=Decimal("1"))
    answer = chat(caller, **{"x-user-id": "alice"})
    assert answer.status_code == 200
    document = published.wait_for(answer.headers["x-request-id"])
    assert PostgresExporter("postgres").export([document]).succeeded
    wait_settled()
    label = datetime.now(UTC).strftime("%Y%m01")
    project_key = f"{key_prefix()}:budget:{budget.pk}:{label}"
    # What a killed worker leaves: reservations nobody will settle, one of them an end user's with no logged spend.
    stranded = [project_key, f"{key_prefix()}:budget:{user_budget.pk}:u:bob:{label}"]
    for key in stranded:
        limits_redis.hincrby(key, "reserved", 5_000_000)

    call_command("budgets_rebuild")
    assert [int(limits_redis.hget(key, "reserved")) for key in stranded] == [5_000_000, 5_000_000]

    call_command("budgets_rebuild", "--release-reservations")
    assert [int(limits_redis.hget(key, "reserved")) for key in stranded] == [0, 0]
    cost = document["attributes"]["metadata"]["cost"]
    assert int(limits_redis.hget(project_key, "spent")) == pytest.approx(cost * 1e9, abs=1)
