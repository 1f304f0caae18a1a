"""Budgets and limits hold exactly under concurrent requests served by two uvicorn worker processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from budgets import services
from budgets.counters import key_prefix
from budgets.models import Scope
from proxy import services as proxy_services
from tests.budgets.file_publisher import read_published
from tests.conftest import _free_port, wait_until_serving

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "Say hello in few words."  # 23 characters: 6 input tokens billed, 6 estimated
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 20}


def start_two_workers(*, database_url: str, tmp_path: Path, provider_url: str, extra_env: dict):
    """The gateway under uvicorn with --workers 2 (WEB_CONCURRENCY=2), on the tests' database and Redis:
    its process, URL, the directory its records are published to, and its log file."""
    port = _free_port()
    published = tmp_path / "published"
    published.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": settings.REDIS_URL,
        "GATEWAY_VAR_DIR": str(tmp_path),
        "OPENAI_BASE_URL": provider_url + "/v1",
        "OPENAI_API_KEY": "sk-test",
        "TELEMETRY_PUBLISHER": "tests.budgets.file_publisher.FilePublisher",
        "TEST_PUBLISHED_DIR": str(published),
        "WEB_CONCURRENCY": "2",
        "LOG_LEVEL": "WARNING",
        **extra_env,
    }
    command = [
        sys.executable, "-m", "uvicorn", "gateway_project.asgi:application",
        "--port", str(port), "--workers", "2", "--no-access-log",
    ]  # fmt: skip
    log = (tmp_path / "gateway.log").open("wb")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(url, process, tmp_path / "gateway.log", timeout=60)
    return process, url, published, log


@pytest.fixture
def two_workers(test_database_url, tmp_path, provider_server, request):
    """The gateway of `start_two_workers`, stopped after the test.

    Leases (`budgets.leases`) have the product's size, too large to serve these tests' small limits,
    unless a test asks for another with `@pytest.mark.parametrize("two_workers", [size], indirect=True)`.
    """
    lease_env = {"GATEWAY_LIMITS_LEASE_REQUESTS": str(request.param)} if hasattr(request, "param") else {}
    process, url, published, log = start_two_workers(
        database_url=test_database_url, tmp_path=tmp_path, provider_url=provider_server.url, extra_env=lease_env
    )
    yield url, published
    process.terminate()
    process.wait(timeout=30)
    log.close()


async def _burst(url: str, key: str, count: int, project: str) -> list[httpx.Response]:
    headers = {"authorization": f"Bearer {key}", "x-project-id": project}
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        return await asyncio.gather(
            *(client.post(url + "/v1/chat/completions", json=CHAT, headers=headers) for _ in range(count))
        )


def burst(url: str, key: str, count: int, project: str = "search") -> list[httpx.Response]:
    return asyncio.run(_burst(url, key, count, project))


async def _from_senders(url: str, key: str, count: int, senders: int) -> list[int]:
    headers = {"authorization": f"Bearer {key}", "x-project-id": "search"}
    statuses: list[int] = []
    unsent = [count]

    async def send(client: httpx.AsyncClient) -> None:
        while unsent[0] > 0:
            unsent[0] -= 1
            answer = await client.post(url + "/v1/chat/completions", json=CHAT, headers=headers)
            statuses.append(answer.status_code)

    limits = httpx.Limits(max_connections=senders, max_keepalive_connections=senders)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        await asyncio.gather(*(send(client) for _ in range(senders)))
    return statuses


def from_senders(url: str, key: str, count: int, senders: int) -> list[int]:
    """The statuses of `count` requests sent by `senders` concurrent clients, each one request after another."""
    return asyncio.run(_from_senders(url, key, count, senders))


def wait_for_documents(directory: Path, count: int, timeout: float = 30) -> dict[str, list[dict]]:
    deadline = time.monotonic() + timeout
    while True:
        by_process = read_published(directory)
        if sum(len(documents) for documents in by_process.values()) >= count:
            return by_process
        assert time.monotonic() < deadline, f"only {sum(map(len, by_process.values()))} of {count} records arrived"
        time.sleep(0.1)


def one_request_cost() -> Decimal:
    from datetime import UTC, datetime

    from telemetry import pricing

    usage = pricing.TokenUsage(input=6, output=20)
    return Decimal(str(pricing.request_cost(provider="openai", model="gpt-4o-mini", at=datetime.now(UTC), usage=usage)))


@pytest.mark.django_db(transaction=True)
def test_200_concurrent_requests_never_overspend_a_project_budget_that_fits_40(two_workers, limits_redis):
    url, published = two_workers
    org = proxy_services.organisation_get_or_create(slug="acme")
    project = proxy_services.project_get_or_create(org=org, slug="search")
    key = proxy_services.gateway_key_issue(org=org).plaintext
    cost = one_request_cost()
    budget = services.budget_set(scope=Scope.PROJECT, org=org, project=project, usd=cost * Decimal("40.5"))

    answers = burst(url, key, 200)

    statuses = [answer.status_code for answer in answers]
    assert statuses.count(200) == 40, statuses
    assert statuses.count(429) == 160
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert refused.json()["error"]["code"] == "insufficient_quota"
    by_process = wait_for_documents(published, 200)
    assert len(by_process) == 2, "both worker processes served requests"
    documents = [document for documents in by_process.values() for document in documents]
    spent = sum(Decimal(str(d["attributes"]["metadata"]["cost"] or 0)) for d in documents)
    assert spent <= budget.amount_usd
    assert budget.amount_usd - spent < cost, "no more than one request's worth is left unused"
    refusals = [d["attributes"]["metadata"]["limit_refused"] for d in documents]
    assert refusals.count("project_budget") == 160
    # Redis holds what the records say, and no reservation is left once all are settled.
    deadline = time.monotonic() + 10
    label = time.strftime("%Y%m01", time.gmtime())
    while True:
        counter = limits_redis.hgetall(f"{key_prefix()}:budget:{budget.pk}:{label}")
        if int(counter[b"reserved"]) == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert int(counter[b"reserved"]) == 0
    assert int(counter[b"spent"]) == pytest.approx(float(spent) * 1e9, abs=40)


def key_of_an_org_limited_to(*, rpm: int) -> str:
    org = proxy_services.organisation_get_or_create(slug="acme")
    proxy_services.project_get_or_create(org=org, slug="search")
    services.rate_limit_set(scope=Scope.ORG, org=org, rpm=rpm)
    return proxy_services.gateway_key_issue(org=org).plaintext


@pytest.mark.django_db(transaction=True)
def test_three_times_rpm_requests_at_once_admit_exactly_rpm(two_workers):
    url, published = two_workers
    key = key_of_an_org_limited_to(rpm=50)

    answers = burst(url, key, 150)

    statuses = [answer.status_code for answer in answers]
    assert statuses.count(200) == 50, statuses
    assert statuses.count(429) == 100
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(refused.headers["retry-after"]) >= 1
    remaining = sorted(int(a.headers["x-ratelimit-remaining-requests"]) for a in answers if a.status_code == 200)
    assert remaining == list(range(50))
    by_process = wait_for_documents(published, 150)
    assert len(by_process) == 2, "both worker processes served requests"


@pytest.mark.parametrize("two_workers", [4], indirect=True)
@pytest.mark.django_db(transaction=True)
def test_leases_never_admit_more_than_rpm_and_give_back_what_they_did_not_use(two_workers):
    url, published = two_workers
    key = key_of_an_org_limited_to(rpm=256)  # 64 leases of 4: the smallest limit such leases serve

    calls = evalsha_calls()
    first = from_senders(url, key, 768, senders=48)
    # Leases served: fewer script calls (admissions, and settlements giving leases back) than requests.
    assert evalsha_calls() - calls < 768 - 32
    admitted = first.count(200)
    # Never more than the limit. Fewer only by what a lease of each worker still held when its
    # second ended: at most 3 requests each, since a lease of 4 counts the request that asked for it.
    assert 256 - 2 * 3 <= admitted <= 256, first
    assert first.count(429) == 768 - admitted
    time.sleep(1.5)  # every lease's second is over, and the settlement has given back what it held
    second = from_senders(url, key, 300, senders=48)
    # The last quarter of the limit is admitted request by request: exactly the rpm, in all.
    assert admitted + second.count(200) == 256, (admitted, second.count(200))
    by_process = wait_for_documents(published, 768 + 300)
    assert len(by_process) == 2, "both worker processes served requests"


def evalsha_calls() -> int:
    """Script calls Redis has run (the tests run one at a time: the gateway under test made the new ones)."""
    import redis

    return redis.Redis.from_url(settings.REDIS_URL).info("commandstats")["cmdstat_evalsha"]["calls"]
