"""Budgets and limits tests run against the real Redis of REDIS_URL, in keys of their own."""

from __future__ import annotations

import pytest
from django.conf import settings

from budgets import enforcement, leases, local_counts, plans
from budgets.counters import key_prefix, sync_client
from budgets.settlement import settler


def clear_counters() -> None:
    client = sync_client()
    keys = list(client.scan_iter(f"{key_prefix()}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture(autouse=True)
def limits_redis():
    if not settings.GATEWAY_LIMITS_REDIS_URL:
        pytest.fail("the budgets tests need REDIS_URL")
    clear_counters()
    plans.forget_plans()
    enforcement.outage.until = float("-inf")
    local_counts.forget()
    leases.forget()
    yield sync_client()
    plans.forget_plans()
    local_counts.forget()
    leases.forget()


def wait_settled(timeout: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while settler.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # the batch in flight
