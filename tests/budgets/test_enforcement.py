"""Budgets and rate limits on the live gateway: refusals in each provider's format, headers, settlement."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import httpx
import pytest

from budgets import clock, services
from budgets.counters import key_prefix
from budgets.models import Scope
from tests.budgets.conftest import wait_settled

# 23 characters: the provider server bills 23 // 4 + 1 = 6 input tokens, what the gateway estimates.
PROMPT = "Say hello in few words."
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 20}


def chat(caller, body=None, **headers) -> httpx.Response:
    headers = {"authorization": f"Bearer {caller.key}", "x-project-id": caller.project.slug, **headers}
    return httpx.post(caller.openai_base_url + "/chat/completions", json=body or CHAT, headers=headers, timeout=10)


def messages(caller, **headers) -> httpx.Response:
    body = {"model": "claude-3-5-haiku-latest", "max_tokens": 20, "messages": [{"role": "user", "content": PROMPT}]}
    headers = {
        "x-api-key": caller.key,
        "anthropic-version": "2023-06-01",
        "x-project-id": caller.project.slug,
        **headers,
    }
    return httpx.post(caller.gateway_url + "/v1/messages", json=body, headers=headers, timeout=10)


def budget_counter(redis, budget, label: str, user: str | None = None) -> dict:
    user_part = f":u:{user}" if user else ""
    raw = redis.hgetall(f"{key_prefix()}:budget:{budget.pk}{user_part}:{label}")
    return {k.decode(): int(v) for k, v in raw.items()}


def price_at_1000_per_mtok(model: str) -> None:
    """An OpenAI price override for a model the provider server plays: $1000 per million tokens each way."""
    from django.utils import timezone

    from telemetry.models import PriceOverride

    PriceOverride.objects.create(
        provider="openai",
        model=model,
        valid_from=timezone.now() - timedelta(days=1),
        input_per_mtok=1000,
        output_per_mtok=1000,
    )


def month_label() -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(clock.now(), tz=UTC).strftime("%Y%m01")


@pytest.mark.django_db(transaction=True)
def test_a_project_rpm_limit_admits_exactly_rpm_and_refuses_the_next_in_openai_format(caller, published):
    services.rate_limit_set(scope=Scope.PROJECT, org=caller.org, project=caller.project, rpm=3)
    answers = [chat(caller) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[0].headers["x-ratelimit-limit-requests"] == "3"
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers[:3]] == ["2", "1", "0"]
    # The gateway's own replace the provider's (it sends x-ratelimit-remaining-requests: 9999).
    assert answers[0].headers.get_list("x-ratelimit-remaining-requests") == ["2"]
    assert answers[0].headers["x-ratelimit-reset-requests"].endswith("s")
    refused = answers[3]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.json()["error"]["type"] == "requests"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    document = published.wait_for(refused.headers["x-request-id"])
    metadata = document["attributes"]["metadata"]
    assert metadata["limit_refused"] == "project_rpm"
    assert metadata["error_type"] == "rate_limit_exceeded"
    assert published.wait_for(answers[0].headers["x-request-id"])["attributes"]["metadata"]["limit_refused"] is None


@pytest.mark.django_db(transaction=True)
def test_a_hard_budget_reserves_the_worst_case_settles_the_real_cost_and_refuses_past_it(
    caller, published, limits_redis
):
    first = chat(caller)
    assert first.status_code == 200
    cost = published.wait_for(first.headers["x-request-id"])["attributes"]["metadata"]["cost"]
    assert cost > 0
    budget = services.budget_set(
        scope=Scope.PROJECT, org=caller.org, project=caller.project, usd=Decimal(str(cost)) * 2, period="month"
    )
    assert [chat(caller).status_code for _ in range(3)] == [200, 200, 429]
    wait_settled()
    counter = budget_counter(limits_redis, budget, month_label())
    assert counter["reserved"] == 0
    assert counter["spent"] == pytest.approx(2 * cost * 1e9, abs=2)
    refused = chat(caller)
    body = refused.json()
    assert refused.status_code == 429
    assert body["error"]["code"] == "insufficient_quota" and body["error"]["type"] == "insufficient_quota"
    assert int(refused.headers["retry-after"]) > 0
    metadata = published.wait_for(refused.headers["x-request-id"])["attributes"]["metadata"]
    assert metadata["limit_refused"] == "project_budget"
    assert metadata["error_type"] == "insufficient_quota"


@pytest.mark.django_db(transaction=True)
def test_a_failed_request_releases_its_reservation(caller, limits_redis):

    price_at_1000_per_mtok("status-500")  # so that the failing request reserves something
    budget = services.budget_set(scope=Scope.ORG, org=caller.org, usd="0.03")
    # 26 tokens at $1000 per million: $0.026 reserved, which leaves no room for a second at once.
    failed = chat(caller, CHAT | {"model": "status-500"})
    assert failed.status_code == 500
    wait_settled()
    assert budget_counter(limits_redis, budget, month_label()) == {"reserved": 0, "spent": 0}
    assert chat(caller, CHAT | {"model": "status-500"}).status_code == 500  # not 429: nothing was kept


@pytest.mark.django_db(transaction=True)
def test_anthropic_routes_refuse_in_anthropics_shape_with_its_rate_limit_headers(caller):
    services.rate_limit_set(scope=Scope.KEY, org=caller.org, key=_key(caller), rpm=1, tpm=100000)
    admitted = messages(caller)
    assert admitted.status_code == 200
    assert admitted.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert admitted.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert admitted.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert admitted.headers["anthropic-ratelimit-tokens-limit"] == "100000"
    assert "x-ratelimit-limit-requests" not in admitted.headers
    refused = messages(caller)
    assert refused.status_code == 429
    assert refused.json() == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": refused.json()["error"]["message"]},
    }
    assert "retry-after" in refused.headers


def _key(caller):
    from proxy.models import GatewayKey

    return GatewayKey.objects.get(org=caller.org)


@pytest.mark.django_db(transaction=True)
def test_a_tpm_limit_counts_input_plus_output_tokens(caller, limits_redis):
    # Each request: 6 input tokens reserved with 20 max_tokens, 26 in all, settled at 6 + 20.
    services.rate_limit_set(scope=Scope.ORG, org=caller.org, tpm=60)
    first, second = chat(caller), chat(caller)
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["x-ratelimit-remaining-tokens"] == "34"
    third = chat(caller)
    assert third.status_code == 429
    assert third.json()["error"]["type"] == "tokens"
    wait_settled()
    small = chat(caller, CHAT | {"max_tokens": 0})
    assert small.status_code == 200  # 52 used, 6 reserved
    assert small.headers["x-ratelimit-remaining-tokens"] == "2"


@pytest.mark.django_db(transaction=True)
def test_end_users_have_a_project_default_and_overrides(caller):
    services.rate_limit_set(scope=Scope.USER, org=caller.org, project=caller.project, rpm=1)
    services.rate_limit_set(scope=Scope.USER, org=caller.org, project=caller.project, user_id="vip", rpm=3)
    assert [chat(caller, **{"x-user-id": "alice"}).status_code for _ in range(2)] == [200, 429]
    assert chat(caller, **{"x-user-id": "bob"}).status_code == 200
    assert [chat(caller, **{"x-user-id": "vip"}).status_code for _ in range(4)] == [200, 200, 200, 429]
    refused = chat(caller, **{"x-user-id": "alice"})
    assert refused.status_code == 429


@pytest.mark.django_db(transaction=True)
def test_a_soft_budget_never_refuses(caller):
    services.budget_set(scope=Scope.ORG, org=caller.org, usd="0", hard=False)
    assert chat(caller).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_a_model_limit_counts_only_that_model(caller):
    services.rate_limit_set(scope=Scope.ORG, org=caller.org, model="gpt-4o-mini", rpm=1)
    assert chat(caller).status_code == 200
    assert chat(caller).status_code == 429
    assert chat(caller, CHAT | {"model": "gpt-4o"}).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_requests_without_limits_carry_no_rate_limit_headers(caller):
    answer = chat(caller)
    assert answer.status_code == 200
    assert "x-ratelimit-limit-requests" not in answer.headers


@pytest.mark.django_db(transaction=True)
def test_a_stream_settles_at_its_end_to_the_cost_its_record_holds(caller, published, limits_redis):
    budget = services.budget_set(scope=Scope.ORG, org=caller.org, usd="1")
    body = CHAT | {"stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream(
        "POST",
        caller.openai_base_url + "/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {caller.key}"},
        timeout=10,
    ) as streamed:
        assert streamed.status_code == 200
        b"".join(streamed.iter_bytes())
        record_id = streamed.headers["x-request-id"]
    cost = published.wait_for(record_id)["attributes"]["metadata"]["cost"]
    wait_settled()
    counter = budget_counter(limits_redis, budget, month_label())
    assert counter["reserved"] == 0
    assert counter["spent"] == pytest.approx(cost * 1e9, abs=2)


@pytest.mark.django_db(transaction=True)
def test_a_stream_whose_client_leaves_settles_too(caller, published, limits_redis):

    price_at_1000_per_mtok("endless-20")
    budget = services.budget_set(scope=Scope.ORG, org=caller.org, usd="1")
    body = CHAT | {"model": "endless-20", "stream": True}
    with httpx.stream(
        "POST",
        caller.openai_base_url + "/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {caller.key}"},
        timeout=10,
    ) as streamed:
        assert streamed.status_code == 200
        record_id = streamed.headers["x-request-id"]
        for _ in streamed.iter_bytes():
            break  # the client leaves after the first bytes
    document = published.wait_for(record_id, timeout=15)
    assert document["attributes"]["metadata"]["client_disconnected"] is True
    wait_settled()
    counter = budget_counter(limits_redis, budget, month_label())
    assert counter["reserved"] == 0
    cost = document["attributes"]["metadata"]["cost"]
    assert cost > 0  # an estimate: the stream ended before its usage
    assert counter["spent"] == pytest.approx(cost * 1e9, abs=2)


@pytest.mark.django_db(transaction=True)
def test_each_end_user_has_a_budget_of_their_own(caller, published, limits_redis):
    first = chat(caller)
    cost = Decimal(str(published.wait_for(first.headers["x-request-id"])["attributes"]["metadata"]["cost"]))
    budget = services.budget_set(scope=Scope.USER, org=caller.org, project=caller.project, usd=cost * Decimal("1.5"))
    services.budget_set(scope=Scope.USER, org=caller.org, project=caller.project, user_id="vip", usd=cost * 3)
    assert chat(caller, **{"x-user-id": "alice"}).status_code == 200
    wait_settled()
    refused = chat(caller, **{"x-user-id": "alice"})
    assert refused.status_code == 429
    assert (
        published.wait_for(refused.headers["x-request-id"])["attributes"]["metadata"]["limit_refused"] == "user_budget"
    )
    assert chat(caller, **{"x-user-id": "bob"}).status_code == 200
    assert [chat(caller, **{"x-user-id": "vip"}).status_code for _ in range(3)] == [200, 200, 200]
    wait_settled()
    assert budget_counter(limits_redis, budget, month_label(), user="alice")["spent"] == pytest.approx(
        float(cost) * 1e9, abs=2
    )


@pytest.mark.django_db(transaction=True)
def test_an_exhausted_budget_refuses_anthropic_routes_in_anthropics_shape(caller, published):
    services.budget_set(scope=Scope.PROJECT, org=caller.org, project=caller.project, usd="0")
    refused = messages(caller)
    assert refused.status_code == 429
    body = refused.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert "budget" in body["error"]["message"]
    assert int(refused.headers["retry-after"]) > 0
    metadata = published.wait_for(refused.headers["x-request-id"])["attributes"]["metadata"]
    assert (metadata["limit_refused"], metadata["error_type"]) == ("project_budget", "insufficient_quota")


@pytest.mark.django_db(transaction=True)
def test_a_group_with_no_enabled_deployment_reserves_the_worst_case_of_its_fallback(
    caller, published, limits_redis, provider_server
):
    from proxy.models import Deployment, Fallback, ModelGroup

    first = chat(caller)
    cost = published.wait_for(first.headers["x-request-id"])["attributes"]["metadata"]["cost"]
    all_off = ModelGroup.objects.create(name="all-off")
    Deployment.objects.create(
        group=all_off, name="off", provider="openai", base_url=provider_server.url + "/v1", enabled=False
    )
    spare = ModelGroup.objects.create(name="spare")
    Deployment.objects.create(
        group=spare,
        name="spare-1",
        provider="openai",
        base_url=provider_server.url + "/v1",
        upstream_model="gpt-4o-mini",
    )
    Fallback.objects.create(group=all_off, to_group=spare, trigger="failure")
    # Room for one request's worst case (its real cost here: 20 output tokens of 20), not for two.
    services.budget_set(
        scope=Scope.PROJECT, org=caller.org, project=caller.project, usd=Decimal(str(cost)) * Decimal("1.5")
    )
    body = {**CHAT, "model": "all-off"}

    served = chat(caller, body)
    assert served.status_code == 200
    assert published.wait_for(served.headers["x-request-id"])["attributes"]["metadata"]["deployment"] == "spare-1"
    wait_settled()
    refused = chat(caller, body)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"


@pytest.mark.django_db(transaction=True)
def test_a_refused_request_never_reaches_the_provider_and_records_no_attempt(caller, published, provider_server):
    # The admission's round trip overlaps the preparation of the provider call: nothing may leave before it.
    services.rate_limit_set(scope=Scope.PROJECT, org=caller.org, project=caller.project, rpm=1)
    marked = CHAT | {"messages": [{"role": "user", "content": "refused-or-not " + PROMPT}]}
    assert chat(caller, marked).status_code == 200
    refused = chat(caller, marked)
    assert refused.status_code == 429
    sent = [r for r in provider_server.requests if b"refused-or-not" in r.body]
    assert len(sent) == 1
    metadata = published.wait_for(refused.headers["x-request-id"])["attributes"]["metadata"]
    assert metadata["attempts"] == []
    assert metadata["limit_refused"] == "project_rpm"


@pytest.mark.django_db(transaction=True)
def test_a_request_that_fails_before_any_provider_releases_its_reservation(caller, published, limits_redis):
    from proxy.models import Deployment, ModelGroup

    group = ModelGroup.objects.create(name="nowhere")
    Deployment.objects.create(
        group=group, name="off", provider="openai", base_url="http://127.0.0.1:9/v1", enabled=False
    )
    budget = services.budget_set(scope=Scope.PROJECT, org=caller.org, project=caller.project, usd="5")
    failed = chat(caller, CHAT | {"model": "nowhere"})
    assert failed.status_code == 503
    assert failed.json()["error"]["code"] == "no_deployment_available"
    published.wait_for(failed.headers["x-request-id"])
    wait_settled()
    assert budget_counter(limits_redis, budget, month_label()) == {"reserved": 0, "spent": 0}


@pytest.mark.django_db(transaction=True)
def test_a_budget_refusal_carries_the_rate_limit_headers_too(caller, published):
    services.rate_limit_set(scope=Scope.PROJECT, org=caller.org, project=caller.project, rpm=50, tpm=10_000)
    services.budget_set(scope=Scope.PROJECT, org=caller.org, project=caller.project, usd="0.000000001")
    refused = chat(caller)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"
    # Nothing was counted: the windows are as they were.
    assert refused.headers["x-ratelimit-limit-requests"] == "50"
    assert refused.headers["x-ratelimit-remaining-requests"] == "50"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "10000"
    assert refused.headers["x-ratelimit-reset-tokens"] == "1m0s"


@pytest.mark.django_db(transaction=True)
def test_a_spent_budget_refuses_a_model_without_a_known_price_too(caller, published, limits_redis):
    unpriced = CHAT | {"model": "a-model-nobody-prices"}
    budget = services.budget_set(scope=Scope.PROJECT, org=caller.org, project=caller.project, usd="0.000001")
    served = chat(caller, unpriced)
    assert served.status_code == 200
    assert published.wait_for(served.headers["x-request-id"])["attributes"]["metadata"]["cost_unknown"] is True
    wait_settled()
    limits_redis.hset(f"{key_prefix()}:budget:{budget.pk}:{month_label()}", "spent", 1000)  # all of it spent
    refused = chat(caller, unpriced)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"
