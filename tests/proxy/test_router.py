"""Routing across deployments: retries, cooldowns, Retry-After and fallbacks, against real local servers.

Every deployment is the local provider server (its model name chooses how it behaves) or a closed
port on loopback, which refuses connections as a host that is down does.
"""

import asyncio
import socket
import time
import uuid

import httpx
import orjson
import pytest
import redis
from django.conf import settings as django_settings

from proxy.models import Deployment, Fallback, ModelGroup
from proxy.router import cooldowns
from tests.conftest import Caller

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
HELLO = [{"role": "user", "content": "hello"}]
TWENTY_PIECES = "".join(f"tok{i} " for i in range(20))


@pytest.fixture(autouse=True)
def _no_cooldowns_from_earlier_tests():
    """Ids are reused once a test's tables are emptied, so Redis must not remember their cooldowns."""
    if django_settings.REDIS_URL:
        client = redis.Redis.from_url(django_settings.REDIS_URL)
        keys = list(client.scan_iter(f"{cooldowns.KEY_PREFIX}*"))
        if keys:
            client.delete(*keys)
        client.close()
    yield


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_group(name, *, org=None, **policy):
    return ModelGroup.objects.create(name=name, org=org, **policy)


def openai_deployment(group, name, server, model="gpt-4o-mini", **fields):
    return Deployment.objects.create(
        group=group, name=name, provider="openai", base_url=server.url + "/v1", upstream_model=model, **fields
    )


def anthropic_deployment(group, name, server, model="claude-3-5-haiku-latest", **fields):
    return Deployment.objects.create(
        group=group, name=name, provider="anthropic", base_url=server.url, upstream_model=model, **fields
    )


def dead_deployment(group, name, **fields):
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    return Deployment.objects.create(
        group=group, name=name, provider="openai", base_url=base_url, upstream_model="gpt-4o-mini", **fields
    )


def post(caller, path, body, *, headers=None, timeout=30):
    auth = {"x-api-key": caller.key} if path == MESSAGES else {"authorization": f"Bearer {caller.key}"}
    return httpx.post(caller.gateway_url + path, json=body, headers={**auth, **(headers or {})}, timeout=timeout)


def chat(caller, model, **extra):
    return post(caller, CHAT, {"model": model, "messages": HELLO, **extra})


def metadata_of(published, response):
    return published.wait_for(response.headers["x-request-id"])["attributes"]["metadata"]


def attempted(metadata):
    return [(attempt["deployment"], attempt["status"], attempt["error"]) for attempt in metadata["attempts"]]


def upstream_models(server):
    return [request.json.get("model") for request in server.requests if isinstance(request.json, dict)]


def sse_events(text):
    return [event for event in text.replace("\r\n", "\n").split("\n\n") if event.strip()]


def streamed_content(text):
    pieces = []
    for event in sse_events(text):
        if event.startswith("data: {"):
            chunk = orjson.loads(event[6:])
            for choice in chunk.get("choices") or []:
                pieces.append(choice["delta"].get("content") or "")
    return "".join(pieces)


# --- A dead deployment beside a healthy one -------------------------------------------------------


def test_a_dead_deployment_beside_a_healthy_one_fails_no_request_and_is_skipped_once_cooling_down(
    caller, published, provider_server
):
    group = make_group("resilient", num_retries=2, allowed_fails=2, cooldown_seconds=60)
    # The dead one is weighted to be chosen first nearly always, so it fails early and often.
    dead_deployment(group, "dead", weight=1000)
    openai_deployment(group, "healthy", provider_server, weight=1)

    responses = [chat(caller, "resilient") for _ in range(12)]

    assert [response.status_code for response in responses] == [200] * 12
    assert all(response.json()["choices"][0]["message"]["content"] == TWENTY_PIECES for response in responses)
    metadata = [metadata_of(published, response) for response in responses]
    dead_attempts = [
        (index, attempt)
        for index, m in enumerate(metadata)
        for attempt in m["attempts"]
        if attempt["deployment"] == "dead"
    ]
    assert len(dead_attempts) == 2, "the dead deployment was tried more often than its allowed failures"
    assert all(attempt["error"] == "upstream_unreachable" and attempt["status"] is None for _, attempt in dead_attempts)
    cooled_at = dead_attempts[-1][0]
    for later in metadata[cooled_at + 1 :]:
        assert attempted(later) == [("healthy", 200, None)]
    for m in metadata:
        assert (m["deployment"], m["model_group"], m["fallback_used"]) == ("healthy", "resilient", False)
        assert m["attempts"][-1] == m["attempts"][-1] | {"deployment": "healthy", "provider": "openai", "status": 200}
        assert isinstance(m["attempts"][-1]["latency_ms"], int)
        # The record's own fields describe the attempt that answered.
        assert (m["provider_status_code"], m["provider_error_type"], m["error_type"]) == (200, None, None)
        assert m["status"] == "success"


def test_a_cooled_down_deployment_is_tried_again_once_its_cooldown_is_over(caller, published, provider_server):
    group = make_group("comeback", num_retries=1, allowed_fails=1, cooldown_seconds=1)
    dead_deployment(group, "dead", weight=1000)
    openai_deployment(group, "healthy", provider_server)

    first = chat(caller, "comeback")
    while "dead" not in [a for a, _, _ in attempted(metadata_of(published, first))]:
        first = chat(caller, "comeback")  # the rare run where the healthy one came first
    during = chat(caller, "comeback")
    time.sleep(1.2)
    after = chat(caller, "comeback")

    assert {first.status_code, during.status_code, after.status_code} == {200}
    assert attempted(metadata_of(published, during)) == [("healthy", 200, None)]
    assert [a for a, _, _ in attempted(metadata_of(published, after))] == ["dead", "healthy"]


def test_cooldowns_hold_in_this_process_when_redis_is_down(caller, published, settings, provider_server):
    settings.REDIS_URL = f"redis://127.0.0.1:{closed_port()}/1"
    group = make_group("no-redis", num_retries=1, allowed_fails=1, cooldown_seconds=60)
    dead_deployment(group, "dead", weight=1000)
    openai_deployment(group, "healthy", provider_server)

    responses = [chat(caller, "no-redis") for _ in range(6)]

    assert [response.status_code for response in responses] == [200] * 6
    dead = [a for r in responses for a, _, _ in attempted(metadata_of(published, r)) if a == "dead"]
    assert len(dead) == 1


def test_a_cooldown_started_by_one_process_reaches_another_through_redis(settings):
    assert settings.REDIS_URL, "this test needs REDIS_URL"
    key = f"deployment:shared-{uuid.uuid4().hex}"

    async def two_workers_fail_once_each():
        one, other = cooldowns.CooldownStore(), cooldowns.CooldownStore()
        # Neither worker sees enough failures itself; Redis adds them up.
        assert one.failed(key, allowed_fails=2, window_seconds=30) is False
        await asyncio.gather(*one._writes)
        assert other.failed(key, allowed_fails=2, window_seconds=30) is False
        await asyncio.gather(*other._writes)
        one.watch([key])
        await one._sync_task
        fresh = cooldowns.CooldownStore()
        assert fresh.remaining(key) == 0
        fresh.watch([key])
        await fresh._sync_task
        return one.remaining(key), other.remaining(key), fresh.remaining(key)

    remaining = asyncio.run(two_workers_fail_once_each())

    assert all(25 < seconds <= 30 for seconds in remaining), remaining


# --- Retries, backoff and Retry-After --------------------------------------------------------------


def test_retry_after_is_honoured_before_the_same_deployment_is_tried_again(caller, published, provider_server):
    model = f"fail-1-429-after-1-{uuid.uuid4().hex[:8]}"
    group = make_group("patient", num_retries=1, allowed_fails=3, cooldown_seconds=60)
    openai_deployment(group, "only", provider_server, model=model)
    provider_server.clear()

    response = chat(caller, "patient")

    assert response.status_code == 200
    calls = [request for request in provider_server.requests if request.json.get("model") == model]
    assert len(calls) == 2
    assert calls[1].received_at - calls[0].received_at >= 1.0, "the retry did not wait for Retry-After"
    assert attempted(metadata_of(published, response)) == [("only", 429, "requests"), ("only", 200, None)]


def test_a_retry_after_past_the_cap_sends_the_request_to_another_deployment_at_once(caller, published, provider_server):
    group = make_group("spread", num_retries=2, allowed_fails=5, cooldown_seconds=60)
    openai_deployment(group, "limited", provider_server, model="status-429-after-30", weight=1000)
    openai_deployment(group, "spare", provider_server)

    first = chat(caller, "spread")
    while "limited" not in [a for a, _, _ in attempted(metadata_of(published, first))]:
        first = chat(caller, "spread")  # the rare run where the spare one came first
    second = chat(caller, "spread")

    assert (first.status_code, second.status_code) == (200, 200)
    assert attempted(metadata_of(published, first)) == [("limited", 429, "requests"), ("spare", 200, None)]
    # The provider asked for 30 s: until then the deployment is not asked again.
    assert attempted(metadata_of(published, second)) == [("spare", 200, None)]


def test_a_retry_after_past_the_cap_with_nowhere_else_to_go_returns_the_429(
    caller, published, settings, provider_server
):
    settings.GATEWAY_RETRY_AFTER_MAX_SECONDS = 2
    group = make_group("capped", num_retries=3, allowed_fails=5, cooldown_seconds=60)
    openai_deployment(group, "limited", provider_server, model="status-429-after-30")

    response = chat(caller, "capped")

    assert response.status_code == 429
    assert response.headers["retry-after"] == "30"
    assert attempted(metadata_of(published, response)) == [("limited", 429, "requests")]


def test_5xx_is_retried_with_backoff_and_the_group_count_bounds_the_attempts(
    caller, published, settings, provider_server
):
    settings.GATEWAY_RETRY_BACKOFF_SECONDS = 0.05
    group = make_group("stubborn", num_retries=2, allowed_fails=10, cooldown_seconds=60)
    openai_deployment(group, "broken", provider_server, model="status-503")
    provider_server.clear()

    response = chat(caller, "stubborn")

    assert response.status_code == 503
    assert response.json()["error"]["type"] == "server_error"
    assert upstream_models(provider_server) == ["status-503"] * 3
    metadata = metadata_of(published, response)
    assert attempted(metadata) == [("broken", 503, "server_error")] * 3
    assert (metadata["status_code"], metadata["provider_status_code"]) == (503, 503)


def test_a_4xx_the_request_caused_is_never_retried_nor_sent_to_a_fallback(caller, published, provider_server):
    group = make_group("strict", num_retries=3)
    openai_deployment(group, "one", provider_server, model="status-400")
    openai_deployment(group, "two", provider_server, model="status-400")
    backup = make_group("strict-backup")
    openai_deployment(backup, "backup", provider_server)
    Fallback.objects.create(group=group, to_group=backup, trigger="failure")
    provider_server.clear()

    response = chat(caller, "strict")

    assert response.status_code == 400
    assert len(provider_server.requests) == 1
    metadata = metadata_of(published, response)
    assert len(metadata["attempts"]) == 1
    assert metadata["fallback_used"] is False


# --- Fallbacks to other groups ----------------------------------------------------------------------


@pytest.fixture
def failing_group_with_anthropic_fallback(caller, provider_server):
    group = make_group("flaky-gpt", num_retries=1, allowed_fails=10, cooldown_seconds=60)
    openai_deployment(group, "east", provider_server, model="status-500")
    openai_deployment(group, "west", provider_server, model="status-502")
    backup = make_group("claude-backup")
    anthropic_deployment(backup, "claude", provider_server)
    Fallback.objects.create(group=group, to_group=backup, trigger="failure")
    provider_server.clear()
    return group


@pytest.mark.usefixtures("failing_group_with_anthropic_fallback")
def test_a_group_that_always_fails_falls_back_to_another_provider(caller, published, provider_server):
    response = chat(caller, "flaky-gpt")

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == TWENTY_PIECES
    paths = [request.path for request in provider_server.requests]
    assert paths == ["/v1/chat/completions", "/v1/chat/completions", "/v1/messages"]
    metadata = metadata_of(published, response)
    assert sorted(attempted(metadata)[:2]) == [("east", 500, "server_error"), ("west", 502, "server_error")]
    assert attempted(metadata)[2] == ("claude", 200, None)
    assert [attempt["provider"] for attempt in metadata["attempts"]] == ["openai", "openai", "anthropic"]
    assert (metadata["deployment"], metadata["model_group"], metadata["fallback_used"]) == (
        "claude",
        "claude-backup",
        True,
    )
    document = published.wait_for(response.headers["x-request-id"])
    assert document["attributes"]["provider"] == "anthropic"
    assert document["attributes"]["model"] == "flaky-gpt"
    assert metadata["upstream_model"] == "claude-3-5-haiku-latest"
    assert (metadata["status_code"], metadata["provider_status_code"], metadata["error_type"]) == (200, 200, None)


@pytest.mark.usefixtures("failing_group_with_anthropic_fallback")
def test_a_streamed_request_to_a_group_that_always_fails_falls_back_before_its_first_byte(caller, published):
    response = chat(caller, "flaky-gpt", stream=True)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert streamed_content(response.text) == TWENTY_PIECES
    assert sse_events(response.text)[-1] == "data: [DONE]"
    metadata = metadata_of(published, response)
    assert [a for a, _, _ in attempted(metadata)][-1] == "claude"
    assert len(metadata["attempts"]) == 3
    assert metadata["fallback_used"] is True
    assert metadata["stream"] is True
    assert metadata["tokens"]["output"] > 0


def test_fallbacks_are_tried_in_order_and_the_first_that_answers_wins(caller, published, provider_server):
    group = make_group("primary", num_retries=0)
    openai_deployment(group, "down", provider_server, model="status-500")
    second = make_group("second", num_retries=0)
    openai_deployment(second, "also-down", provider_server, model="status-529")
    third = make_group("third")
    openai_deployment(third, "up", provider_server)
    Fallback.objects.create(group=group, to_group=third, trigger="failure", position=2)
    Fallback.objects.create(group=group, to_group=second, trigger="failure", position=1)

    response = chat(caller, "primary")

    assert response.status_code == 200
    assert attempted(metadata_of(published, response)) == [
        ("down", 500, "server_error"),
        ("also-down", 529, "server_error"),
        ("up", 200, None),
    ]


def test_a_context_window_error_falls_back_to_the_long_context_group(caller, published, provider_server):
    group = make_group("short-context")
    openai_deployment(group, "small", provider_server, model="context-overflow")
    openai_deployment(group, "small-2", provider_server, model="context-overflow")
    failure_backup = make_group("any-backup")
    openai_deployment(failure_backup, "other", provider_server, model="chunks-2")
    long_context = make_group("long-context")
    anthropic_deployment(long_context, "big", provider_server)
    Fallback.objects.create(group=group, to_group=failure_backup, trigger="failure")
    Fallback.objects.create(group=group, to_group=long_context, trigger="context_window")
    provider_server.clear()

    response = chat(caller, "short-context")

    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == TWENTY_PIECES
    metadata = metadata_of(published, response)
    # Not retried on the group's other deployment: it has the same window.
    assert [a for a, _, _ in attempted(metadata)] in (["small", "big"], ["small-2", "big"])
    assert metadata["attempts"][0]["status"] == 400
    assert metadata["fallback_used"] is True


def test_an_anthropic_prompt_too_long_counts_as_a_context_window_error(caller, published, provider_server):
    group = make_group("claude-short")
    anthropic_deployment(group, "claude", provider_server, model="claude-context-overflow")
    roomy = make_group("roomy")
    openai_deployment(roomy, "gpt", provider_server)
    Fallback.objects.create(group=group, to_group=roomy, trigger="context_window")

    for path, body in (
        (CHAT, {"model": "claude-short", "messages": HELLO}),
        (MESSAGES, {"model": "claude-short", "max_tokens": 10, "messages": HELLO}),
    ):
        response = post(caller, path, body)
        metadata = metadata_of(published, response)
        assert metadata["attempts"][0]["status"] == 400
        # Both routes fall back to the OpenAI group: /v1/messages is translated for it.
        assert response.status_code == 200
        assert attempted(metadata)[-1] == ("gpt", 200, None)
        assert response.json()["object" if path == CHAT else "type"] == (
            "chat.completion" if path == CHAT else "message"
        )


def test_a_content_policy_refusal_falls_back_only_where_configured(caller, published, provider_server):
    group = make_group("careful")
    openai_deployment(group, "strict", provider_server, model="content-policy")
    lenient = make_group("lenient")
    openai_deployment(lenient, "other", provider_server)
    Fallback.objects.create(group=group, to_group=lenient, trigger="content_policy")
    unconfigured = make_group("careful-only-on-failure")
    openai_deployment(unconfigured, "strict", provider_server, model="content-policy")
    Fallback.objects.create(group=unconfigured, to_group=lenient, trigger="failure")

    served = chat(caller, "careful")
    refused = chat(caller, "careful-only-on-failure")

    assert served.status_code == 200
    assert attempted(metadata_of(published, served)) == [
        ("strict", 400, "invalid_request_error"),
        ("other", 200, None),
    ]
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "content_policy_violation"
    assert metadata_of(published, refused)["fallback_used"] is False


# --- Streams: retried only before the first byte --------------------------------------------------------


def test_a_stream_is_retried_on_another_deployment_before_its_first_byte(caller, published, provider_server):
    group = make_group("stream-group", num_retries=2, allowed_fails=10)
    dead_deployment(group, "dead", weight=1000)
    openai_deployment(group, "busy", provider_server, model="status-503", weight=1000)
    openai_deployment(group, "healthy", provider_server, model="chunks-4", weight=1)

    response = chat(caller, "stream-group", stream=True)

    assert response.status_code == 200
    assert streamed_content(response.text) == "tok0 tok1 tok2 tok3 "
    metadata = metadata_of(published, response)
    assert attempted(metadata)[-1] == ("healthy", 200, None)
    assert metadata["response_size"] == 0 or metadata["response_size"] >= 0
    assert metadata["error_type"] is None


def test_a_stream_that_breaks_after_its_first_byte_ends_with_an_openai_error_event(caller, published, provider_server):
    group = make_group("breaks", num_retries=3, allowed_fails=10)
    openai_deployment(group, "fragile", provider_server, model="die-midstream")
    backup = make_group("breaks-backup")
    openai_deployment(backup, "backup", provider_server)
    Fallback.objects.create(group=group, to_group=backup, trigger="failure")
    provider_server.clear()

    response = chat(caller, "breaks", stream=True)

    assert response.status_code == 200
    events = sse_events(response.text)
    assert streamed_content(response.text) == "tok0 tok1 tok2 "
    last = orjson.loads(events[-1].removeprefix("data: "))
    assert last["error"]["type"] == "api_error"
    assert "data: [DONE]" not in events
    # Part of the answer had reached the client: no second deployment, no fallback.
    assert len(provider_server.requests) == 1
    metadata = metadata_of(published, response)
    assert attempted(metadata) == [("fragile", 200, "upstream_stream_interrupted")]
    assert metadata["fallback_used"] is False
    assert metadata["error_type"] == "upstream_stream_interrupted"


def test_an_anthropic_stream_that_breaks_ends_with_an_anthropic_error_event(caller, published, provider_server):
    group = make_group("claude-breaks", num_retries=2)
    anthropic_deployment(group, "fragile", provider_server, model="claude-die-midstream")
    provider_server.clear()

    response = post(caller, MESSAGES, {"model": "claude-breaks", "max_tokens": 10, "messages": HELLO, "stream": True})

    assert response.status_code == 200
    events = sse_events(response.text)
    assert events[-1].startswith("event: error\ndata: ")
    error = orjson.loads(events[-1].split("data: ", 1)[1])
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert not any("message_stop" in event for event in events)
    assert len(provider_server.requests) == 1
    assert attempted(metadata_of(published, response)) == [("fragile", 200, "upstream_stream_interrupted")]


# --- Legacy routes, orgs and the caller's choice ----------------------------------------------------------


def test_a_model_without_a_group_is_one_attempt_at_the_legacy_route_and_never_retried(
    caller, published, provider_server
):
    provider_server.clear()

    ok = chat(caller, "gpt-4o-mini")
    failed = chat(caller, "status-500")

    assert (ok.status_code, failed.status_code) == (200, 500)
    assert upstream_models(provider_server) == ["gpt-4o-mini", "status-500"]
    metadata = metadata_of(published, ok)
    assert (metadata["deployment"], metadata["model_group"], metadata["fallback_used"]) == (None, None, False)
    assert metadata["attempts"] == [
        metadata["attempts"][0] | {"deployment": None, "provider": "openai", "status": 200, "error": None}
    ]
    assert attempted(metadata_of(published, failed)) == [(None, 500, "server_error")]


def test_an_orgs_own_group_wins_over_the_shared_one_and_other_orgs_never_see_it(caller, published, provider_server):
    from proxy import services

    shared = make_group("house-model")
    openai_deployment(shared, "shared", provider_server, model="chunks-2")
    own = make_group("house-model", org=caller.org)
    openai_deployment(own, "own", provider_server, model="chunks-3")
    private = make_group("acme-only", org=caller.org)
    openai_deployment(private, "private", provider_server, model="chunks-4")
    globex = services.organisation_get_or_create(slug="globex", name="Globex")
    outsider_key = services.gateway_key_issue(org=globex).plaintext
    provider_server.clear()

    mine = chat(caller, "house-model")
    outsider = httpx.post(
        caller.gateway_url + CHAT,
        json={"model": "house-model", "messages": HELLO},
        headers={"authorization": f"Bearer {outsider_key}"},
        timeout=30,
    )
    outsider_private = httpx.post(
        caller.gateway_url + CHAT,
        json={"model": "acme-only", "messages": HELLO},
        headers={"authorization": f"Bearer {outsider_key}"},
        timeout=30,
    )

    assert mine.json()["choices"][0]["message"]["content"] == "tok0 tok1 tok2 "
    assert outsider.json()["choices"][0]["message"]["content"] == "tok0 tok1 "
    # Another org's group name is just a model name to the outsider: the legacy route sends it as is.
    assert upstream_models(provider_server) == ["chunks-3", "chunks-2", "acme-only"]
    assert metadata_of(published, outsider_private)["model_group"] is None


def test_the_x_provider_header_bypasses_the_groups(caller, published, provider_server):
    group = make_group("gpt-4o-mini")
    openai_deployment(group, "renamed", provider_server, model="chunks-1")
    provider_server.clear()

    response = post(caller, CHAT, {"model": "gpt-4o-mini", "messages": HELLO}, headers={"x-provider": "openai"})

    assert response.status_code == 200
    assert upstream_models(provider_server) == ["gpt-4o-mini"]
    assert metadata_of(published, response)["model_group"] is None


def test_a_change_to_a_group_applies_to_the_next_request(caller, published, provider_server):
    group = make_group("live-edit")
    deployment = openai_deployment(group, "first", provider_server, model="chunks-1")
    assert chat(caller, "live-edit").json()["choices"][0]["message"]["content"] == "tok0 "

    deployment.upstream_model = "chunks-2"
    deployment.save()
    assert chat(caller, "live-edit").json()["choices"][0]["message"]["content"] == "tok0 tok1 "

    deployment.enabled = False
    deployment.save()
    response = chat(caller, "live-edit")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_deployment_available"


def test_a_group_with_no_enabled_deployment_is_served_by_its_failure_fallback(caller, published, provider_server):
    group = make_group("all-off")
    openai_deployment(group, "off", provider_server, model="chunks-1", enabled=False)
    spare = make_group("spare")
    openai_deployment(spare, "spare-1", provider_server, model="chunks-2")
    Fallback.objects.create(group=group, to_group=spare, trigger="failure")

    response = chat(caller, "all-off")

    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "tok0 tok1 "
    metadata = metadata_of(published, response)
    assert attempted(metadata) == [("spare-1", 200, None)]
    assert metadata["fallback_used"] is True


def test_a_deployments_own_key_is_sent_and_never_the_deployment_wide_key(caller, monkeypatch, provider_server):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-deployment-wide")
    group = make_group("keyed")
    keyed = openai_deployment(group, "keyed", provider_server)
    keyed.api_key = "sk-own-key"
    keyed.save()
    keyless = make_group("keyless")
    openai_deployment(keyless, "keyless", provider_server)
    provider_server.clear()

    assert chat(caller, "keyed").status_code == 200
    assert chat(caller, "keyless").status_code == 200

    first, second = provider_server.requests
    assert first.headers["authorization"] == "Bearer sk-own-key"
    # Its own base URL: the deployment-wide key was meant for the provider's URL, not this one.
    assert "authorization" not in second.headers


# --- Across gateway processes ------------------------------------------------------------------------------


def count_requests_for(server, model):
    return sum(
        1 for request in server.requests if isinstance(request.json, dict) and request.json.get("model") == model
    )


@pytest.mark.skipif(not django_settings.REDIS_URL, reason="sharing cooldowns between processes needs REDIS_URL")
def test_failures_seen_by_two_gateway_processes_add_up_to_a_cooldown_both_honour(
    caller, published, provider_server, other_gateway
):
    failing_model = f"fail-1000-503-{uuid.uuid4().hex[:8]}"
    group = make_group("shared-fate", num_retries=1, allowed_fails=2, cooldown_seconds=60)
    openai_deployment(group, "failing", provider_server, model=failing_model, weight=1000)
    openai_deployment(group, "healthy", provider_server)
    other = Caller(org=caller.org, project=caller.project, key=caller.key, gateway_url=other_gateway)

    # One failure seen here, one in the other process: neither reaches allowed_fails on its own.
    while count_requests_for(provider_server, failing_model) < 1:
        assert chat(caller, "shared-fate").status_code == 200
    while count_requests_for(provider_server, failing_model) < 2:
        assert chat(other, "shared-fate").status_code == 200
    time.sleep(cooldowns.SYNC_SECONDS + 0.2)
    assert chat(caller, "shared-fate").status_code == 200  # starts this process's read of Redis
    deadline = time.monotonic() + 5
    while cooldowns.store.remaining(f"deployment:{group.deployments.get(name='failing').pk}") <= 0:
        assert time.monotonic() < deadline, "this process never learnt of the cooldown"
        time.sleep(0.05)
    seen = count_requests_for(provider_server, failing_model)

    for gateway in (caller, other, caller, other, caller, other):
        assert chat(gateway, "shared-fate").status_code == 200

    assert count_requests_for(provider_server, failing_model) == seen
