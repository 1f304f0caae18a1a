"""A gateway that stops gracefully (SIGTERM, as a deploy or a restart does) leaves nothing reserved in Redis."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from budgets import services
from budgets.counters import key_prefix
from budgets.models import Scope
from proxy import services as proxy_services
from tests.budgets.test_concurrency import from_senders, start_two_workers, wait_for_documents


@pytest.mark.django_db(transaction=True)
def test_a_graceful_stop_settles_every_request_and_gives_back_every_lease(
    test_database_url, tmp_path, provider_server, limits_redis
):
    org = proxy_services.organisation_get_or_create(slug="acme")
    project = proxy_services.project_get_or_create(org=org, slug="search")
    key = proxy_services.gateway_key_issue(org=org).plaintext
    budget = services.budget_set(scope=Scope.PROJECT, org=org, project=project, usd=Decimal("1000"))
    services.rate_limit_set(scope=Scope.ORG, org=org, rpm=1_000_000, tpm=100_000_000)
    # No settlement on its own within the test: whatever the processes hold when stopped is what they settle.
    process, url, published, log = start_two_workers(
        database_url=test_database_url,
        tmp_path=tmp_path,
        provider_url=provider_server.url,
        extra_env={"GATEWAY_LIMITS_SETTLE_INTERVAL": "60"},
    )
    counter_key = f"{key_prefix()}:budget:{budget.pk}:{time.strftime('%Y%m01', time.gmtime())}"
    try:
        statuses = from_senders(url, key, 120, senders=8)  # fast enough for leases to be granted
        assert statuses == [200] * 120
        documents = [d for ds in wait_for_documents(published, 120).values() for d in ds]
        assert int(limits_redis.hget(counter_key, "reserved")) > 0, "nothing settled before the stop"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()

    counter = limits_redis.hgetall(counter_key)
    assert int(counter[b"reserved"]) == 0
    spent = sum(Decimal(str(d["attributes"]["metadata"]["cost"])) for d in documents)
    assert int(counter[b"spent"]) == pytest.approx(float(spent) * 1e9, abs=120)
    windows = {
        name.decode().split(":")[-3]: int(limits_redis.hget(name, "t"))
        for name in limits_redis.scan_iter(f"{key_prefix()}:*:w")
    }
    assert windows == {"rpm": 120, "tpm": sum(d["attributes"]["metadata"]["tokens"]["total"] for d in documents)}
