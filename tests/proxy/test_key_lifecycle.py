"""A key's life against the live gateway: revocation and project changes apply to the very next request,
in this process and in another gateway process; expiry; last use; the key id on the request record;
bogus keys refused without reaching the database or pushing valid keys out of the cache."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import connections
from django.urls import reverse
from django.utils import timezone

from proxy import auth, invalidation, services
from proxy.db import run_in_db_thread
from proxy.errors import GatewayError
from proxy.models import GatewayKey, Project

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "my diagnosis is private"}]}
requires_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="announcing to other processes needs REDIS_URL")


def chat(base_url: str, key: str, **headers) -> httpx.Response:
    sent = {"authorization": f"Bearer {key}"} | headers
    return httpx.post(base_url + "/v1/chat/completions", json=BODY, headers=sent, timeout=30)


def test_a_key_revoked_in_admin_is_refused_on_the_very_next_request(caller, admin_client):
    issued = services.gateway_key_issue(org=caller.org, name="ci")
    assert chat(caller.gateway_url, issued.plaintext).status_code == 200

    revoked = admin_client.post(reverse("admin:proxy_gatewaykey_revoke", args=[issued.key.pk]))
    assert revoked.status_code == 302

    response = chat(caller.gateway_url, issued.plaintext)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_switching_a_project_to_metadata_only_applies_to_the_next_request(caller, published):
    project = services.project_get_or_create(org=caller.org, slug="medical")
    pinned = services.gateway_key_issue(org=caller.org, project=project).plaintext
    for key, headers in ((caller.key, {"x-project-id": "medical"}), (pinned, {})):
        stored_in_full = chat(caller.gateway_url, key, **headers)
        assert "diagnosis" in str(published.wait_for(stored_in_full.headers["x-request-id"]))
    project.content_logging = Project.ContentLogging.METADATA
    project.save()

    for key, headers in ((caller.key, {"x-project-id": "medical"}), (pinned, {})):
        response = chat(caller.gateway_url, key, **headers)
        document = published.wait_for(response.headers["x-request-id"])
        assert document["attributes"]["metadata"]["content_redacted"] is True
        assert "diagnosis" not in str(document)


def wait_until_listening(caller, base_url: str, key: str) -> None:
    """The other process subscribes on its first request; afterwards an announcement cannot be missed."""
    import redis

    assert chat(caller.gateway_url, caller.key).status_code == 200  # this process subscribes too
    client = redis.Redis.from_url(settings.REDIS_URL)
    deadline = time.monotonic() + 10
    while (subscribed_here := client.pubsub_numsub(invalidation.channel())[0][1]) < 1:
        assert time.monotonic() < deadline, "this process never subscribed"
        time.sleep(0.05)
    assert chat(base_url, key).status_code == 200
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    deadline = time.monotonic() + 10
    while client.pubsub_numsub(invalidation.channel())[0][1] < subscribed_here + 1:
        assert time.monotonic() < deadline, "the other gateway never subscribed"
        time.sleep(0.05)


@requires_redis
def test_revocation_reaches_another_gateway_process_on_its_very_next_request(caller, other_gateway):
    issued = services.gateway_key_issue(org=caller.org)
    wait_until_listening(caller, other_gateway, issued.plaintext)
    assert chat(other_gateway, issued.plaintext).status_code == 200  # now cached there

    services.gateway_key_revoke(key=issued.key)

    assert chat(other_gateway, issued.plaintext).status_code == 401
    assert chat(other_gateway, caller.key).status_code == 200


@requires_redis
def test_a_project_change_reaches_another_gateway_process_on_its_very_next_request(caller, other_gateway):
    project = services.project_get_or_create(org=caller.org, slug="medical")
    pinned = services.gateway_key_issue(org=caller.org, project=project).plaintext
    wait_until_listening(caller, other_gateway, pinned)
    assert chat(other_gateway, caller.key, **{"x-project-id": "medical"}).status_code == 200

    project.delete()

    response = chat(other_gateway, caller.key, **{"x-project-id": "medical"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "project_forbidden"
    assert chat(other_gateway, pinned).status_code == 401


def test_an_expired_key_is_refused_with_a_clear_message(caller, published):
    issued = services.gateway_key_issue(org=caller.org, expires_at=timezone.now() + timedelta(seconds=30))
    assert chat(caller.gateway_url, issued.plaintext).status_code == 200
    GatewayKey.objects.filter(pk=issued.key.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    auth.clear_caches()  # a change made without saving through the model, as a clock running out would be

    response = chat(caller.gateway_url, issued.plaintext)

    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "expired_api_key"
    assert "expired at" in error["message"]
    assert published.wait_for(response.headers["x-request-id"])["attributes"]["metadata"]["status_code"] == 401


def test_an_expiry_passing_while_the_key_is_cached_stops_it(caller):
    issued = services.gateway_key_issue(org=caller.org, expires_at=timezone.now() + timedelta(seconds=1.5))
    assert chat(caller.gateway_url, issued.plaintext).status_code == 200
    time.sleep(2)

    assert chat(caller.gateway_url, issued.plaintext).json()["error"]["code"] == "expired_api_key"


def test_last_use_is_written_once_per_interval_off_the_request(caller, settings):
    settings.GATEWAY_KEY_LAST_USED_INTERVAL = 3600
    issued = services.gateway_key_issue(org=caller.org)
    assert GatewayKey.objects.get(pk=issued.key.pk).last_used_at is None

    for _ in range(3):
        assert chat(caller.gateway_url, issued.plaintext).status_code == 200

    deadline = time.monotonic() + 10
    while (first := GatewayKey.objects.get(pk=issued.key.pk).last_used_at) is None:
        assert time.monotonic() < deadline, "last use was never written"
        time.sleep(0.05)
    assert abs((timezone.now() - first).total_seconds()) < 60
    time.sleep(1.5)
    assert chat(caller.gateway_url, issued.plaintext).status_code == 200
    time.sleep(1.5)
    assert GatewayKey.objects.get(pk=issued.key.pk).last_used_at == first  # within the interval: no new write


def test_the_request_record_names_the_key_by_id_never_the_key(caller, published):
    response = chat(caller.gateway_url, caller.key)

    document = published.wait_for(response.headers["x-request-id"])
    key = GatewayKey.objects.get(org=caller.org)
    assert document["attributes"]["metadata"]["gateway_key_id"] == key.pk
    text = str(document)
    assert caller.key not in text and key.key_hash not in text


class DatabaseThreadQueries:
    """Counts the queries the gateway's database thread runs, where key lookups happen."""

    def __init__(self):
        self.sql: list[str] = []
        self.all_sql: list[str] = []

    def __call__(self, execute, sql, params, many, context):
        self.all_sql.append(sql)
        if "key_hash" in sql:  # key lookups, not the last-used writes that may run meanwhile
            self.sql.append(sql)
        return execute(sql, params, many, context)

    async def install(self):
        await run_in_db_thread(lambda: connections["default"].execute_wrappers.append(self))

    async def remove(self):
        await run_in_db_thread(lambda: connections["default"].execute_wrappers.remove(self))


@pytest.mark.parametrize(
    "key",
    [
        "sk-not-ours",
        "tg-short",
        "tg-" + "a" * 44,  # one character too many
        "tg-" + "a" * 42 + "!",  # outside the alphabet
        "x" * 10_000,
    ],
)
def test_a_malformed_key_is_refused_without_a_database_query(caller, published, key):
    queries = DatabaseThreadQueries()
    asyncio.run(queries.install())
    try:
        response = chat(caller.gateway_url, key)
        anthropic = httpx.post(
            caller.gateway_url + "/v1/messages",
            json={"model": "claude-3-5-haiku-latest", "max_tokens": 5, "messages": []},
            headers={"x-api-key": key},
        )
    finally:
        asyncio.run(queries.remove())

    assert response.status_code == anthropic.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert "start with 'tg-'" in response.json()["error"]["message"]
    assert anthropic.json()["error"]["type"] == "authentication_error"
    assert queries.sql == []
    assert not queries.all_sql
    assert published.wait_for(response.headers["x-request-id"])["attributes"]["metadata"]["status_code"] == 401


def test_a_flood_of_unknown_well_formed_keys_does_not_evict_a_valid_key(caller, settings, monkeypatch):
    settings.REDIS_URL = ""  # embedded mode: this test's own event loop needs no listener
    # Smaller than the flood, so that unknown keys sharing the valid keys' cache would push them out;
    # a long TTL, so that only eviction (not expiry during a slow run) could lose the valid key.
    monkeypatch.setattr(auth._keys, "max_entries", 10_000)
    monkeypatch.setattr(auth._keys, "ttl", 3600)
    valid = services.gateway_key_issue(org=caller.org).plaintext
    bogus = [GatewayKey.generate_plaintext() for _ in range(20_000)]
    queries = DatabaseThreadQueries()

    async def refused(key) -> bool:
        try:
            await auth.authenticate_key(key)
        except GatewayError as error:
            return error.code == "invalid_api_key"
        return False

    async def flood():
        grant = await auth.authenticate_key(valid)
        await queries.install()
        try:
            for start in range(0, len(bogus), 500):
                assert all(await asyncio.gather(*(refused(key) for key in bogus[start : start + 500])))
            looked_up = len(queries.sql)
            assert all([await refused(key) for key in bogus[-100:]])  # recently refused
            assert len(queries.sql) == looked_up  # answered from the negative cache
            assert await auth.authenticate_key(valid) == grant
            return len(queries.sql) - looked_up
        finally:
            await queries.remove()

    lookups_for_valid = asyncio.run(flood())

    assert lookups_for_valid == 0  # the valid key was still cached
    assert len(queries.sql) == len(bogus)  # each unknown key was looked up once
    assert len(auth._unknown_keys) <= settings.GATEWAY_KEY_NEGATIVE_CACHE_MAX


def test_routes_credentials_and_prices_from_admin_apply_to_the_next_request(caller, published, provider_server):
    from proxy.models import ModelRoute
    from telemetry.models import PriceOverride

    house = {"model": "house-model", "messages": [{"role": "user", "content": "x"}]}
    headers = {"authorization": f"Bearer {caller.key}"}

    def send():
        response = httpx.post(caller.openai_base_url + "/chat/completions", json=house, headers=headers)
        assert response.status_code == 200
        return published.wait_for(response.headers["x-request-id"])["attributes"]

    assert send()["provider"] == "openai"  # routes and credentials now cached
    ModelRoute.objects.create(model_name="house-model", provider="openai", upstream_model="gpt-4o-mini")
    services.provider_credential_set(org=caller.org, provider="openai", api_key="sk-acme-rotated")
    override = PriceOverride.objects.create(
        provider="openai", model="gpt-4o-mini", input_per_mtok="100000", output_per_mtok="0"
    )
    try:
        recorded = send()
    finally:
        override.delete()  # announced like any admin change, so that later tests price without it

    upstream = [r for r in provider_server.requests if r.path == "/v1/chat/completions"][-1]
    assert upstream.json["model"] == "gpt-4o-mini"
    assert upstream.headers["authorization"] == "Bearer sk-acme-rotated"
    assert recorded["metadata"]["cost"] == pytest.approx(recorded["metadata"]["tokens"]["input"] / 10)
