"""Leases: far from its limits, one admission in Redis counts room for the next requests of its second."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from budgets import clock, leases, services
from budgets.counters import ADMIT, key_prefix
from budgets.models import Scope
from tests.budgets.conftest import wait_settled
from tests.budgets.test_enforcement import budget_counter, chat, month_label

T0 = 1_800_000_000  # a whole second


def window_total(redis, kind: str) -> int:
    (key,) = redis.keys(f"{key_prefix()}:{kind}:*")
    return int(redis.hget(key, "t"))


@pytest.fixture
def frozen(monkeypatch):
    """The clock stands still in the middle of a second; `frozen(seconds)` moves it on."""
    now = [int(time.time()) + 0.5]
    monkeypatch.setattr(clock, "now", lambda: now[0])

    def move(seconds: float) -> None:
        now[0] += seconds

    return move


def metadata(published, answers) -> list[dict]:
    return [published.wait_for(answer.headers["x-request-id"])["attributes"]["metadata"] for answer in answers]


@pytest.mark.django_db(transaction=True)
def test_a_lease_admits_the_next_requests_of_its_second_and_gives_back_what_it_did_not_use(
    caller, published, limits_redis, settings, frozen
):
    settings.GATEWAY_LIMITS_LEASE_REQUESTS = 8
    services.rate_limit_set(scope=Scope.PROJECT, org=caller.org, project=caller.project, rpm=10_000, tpm=1_000_000)
    budget = services.budget_set(scope=Scope.PROJECT, org=caller.org, project=caller.project, usd="1000")

    answers = [chat(caller) for _ in range(6)]

    assert [answer.status_code for answer in answers] == [200] * 6
    # A lease holds as many requests as the second has seen: the 1st goes alone, the 2nd counts room
    # for 2 (the 3rd uses it), the 4th for 4 (the 5th and 6th use it, one is left).
    assert window_total(limits_redis, "rpm") == 1 + 2 + 4
    # Each answer's headers say what its request left, not what the lease holds.
    remaining = [answer.headers["x-ratelimit-remaining-requests"] for answer in answers]
    assert remaining == ["9999", "9998", "9997", "9996", "9995", "9994"]
    frozen(1)  # the leases' second is over: the settlement gives back the request still held
    wait_settled()
    assert window_total(limits_redis, "rpm") == 6
    counter = budget_counter(limits_redis, budget, month_label())
    assert counter["reserved"] == 0
    cost = sum(Decimal(str(item["cost"])) for item in metadata(published, answers))
    assert counter["spent"] == pytest.approx(float(cost) * 1e9, abs=6)
    # The token window holds the tokens the records bill, as without a lease.
    billed = sum(item["tokens"]["total"] for item in metadata(published, answers))
    assert window_total(limits_redis, "tpm") == billed


@pytest.mark.django_db(transaction=True)
def test_the_request_that_finds_a_lease_down_to_a_quarter_asks_for_the_next_one(caller, limits_redis, settings, frozen):
    settings.GATEWAY_LIMITS_LEASE_REQUESTS = 8
    services.rate_limit_set(scope=Scope.PROJECT, org=caller.org, project=caller.project, rpm=10_000)

    answers = [chat(caller) for _ in range(15)]

    # Counted: the 1st alone, then leases of 2, 4 and 8. The 15th finds the lease of 8 with one
    # request's room left and asks for the next lease of 8 (it takes over that room) instead of using it.
    assert window_total(limits_redis, "rpm") == 1 + 2 + 4 + 8 + 8
    remaining = [answer.headers["x-ratelimit-remaining-requests"] for answer in answers]
    assert remaining == [str(9999 - index) for index in range(15)]
    frozen(1)
    wait_settled()
    assert window_total(limits_redis, "rpm") == 15


@pytest.mark.django_db(transaction=True)
def test_a_second_of_steady_traffic_starts_with_the_lease_the_second_before_reached(
    caller, limits_redis, settings, frozen
):
    settings.GATEWAY_LIMITS_LEASE_REQUESTS = 8
    services.rate_limit_set(scope=Scope.PROJECT, org=caller.org, project=caller.project, rpm=10_000)
    assert [chat(caller).status_code for _ in range(4)] == [200] * 4  # counted 1, then leases of 2 and 4
    frozen(1)
    second = int(clock.now())

    assert [chat(caller).status_code for _ in range(4)] == [200] * 4

    # The second before brought 4 requests: the first of this one asks for a lease of 4 at once,
    # which admits the other three (growing from 1 again would have counted 1 + 2 + 4).
    (key,) = limits_redis.keys(f"{key_prefix()}:rpm:*")
    assert int(limits_redis.hget(key, str(second))) == 4


@pytest.mark.django_db(transaction=True)
def test_a_request_now_and_then_never_holds_a_lease(caller, limits_redis, settings, frozen):
    settings.GATEWAY_LIMITS_LEASE_REQUESTS = 8
    services.rate_limit_set(scope=Scope.PROJECT, org=caller.org, project=caller.project, rpm=10_000)
    for _ in range(3):
        assert chat(caller).status_code == 200
        frozen(1)
    assert window_total(limits_redis, "rpm") == 3
    assert leases.outstanding == []


@pytest.mark.django_db(transaction=True)
def test_a_limit_smaller_than_64_of_the_smallest_lease_is_admitted_request_by_request(
    caller, limits_redis, settings, frozen
):
    settings.GATEWAY_LIMITS_LEASE_REQUESTS = 8
    services.rate_limit_set(scope=Scope.PROJECT, org=caller.org, project=caller.project, rpm=64 * 2 - 1)
    assert [chat(caller).status_code for _ in range(3)] == [200] * 3
    assert window_total(limits_redis, "rpm") == 3


def test_a_lease_serves_only_its_own_second_and_only_what_fits():
    lease = leases.Lease(checks=(), second=T0, left=[3, 100], uses=[10, 500])
    assert not lease.take((1, 10), T0 + 1)
    assert not lease.take((1, 101), T0)  # short on one check: nothing is taken from the other
    assert lease.take((1, 60), T0)
    assert lease.left == [2, 40]
    assert lease.reply == [0, 0, 8, 60_000, 460, 60_000]  # the uses without what is still held
    newer = leases.Lease(checks=(), second=T0, left=[7, 70], uses=[20, 600])
    newer.absorb(lease)  # the older lease's room moves to the newer, and is given back with it
    assert (newer.left, lease.left) == ([9, 110], [0, 0])
    assert newer.reply == [0, 0, 11, 60_000, 490, 60_000]
    assert newer.give_back() == [9, 110]
    assert not newer.take((1, 1), T0)


@pytest.mark.django_db(transaction=True)
def test_no_lease_is_asked_for_when_leases_are_off(caller, limits_redis, settings, frozen):
    settings.GATEWAY_LIMITS_LEASE_REQUESTS = 0
    services.rate_limit_set(scope=Scope.PROJECT, org=caller.org, project=caller.project, rpm=10_000_000)
    assert [chat(caller).status_code for _ in range(3)] == [200] * 3
    assert window_total(limits_redis, "rpm") == 3


def admit(redis, keys: list[str], checks: list[tuple]) -> list:
    arguments = [T0 * 1000, T0]
    for check in checks:
        arguments += check
    return ADMIT.run_sync(redis, keys, arguments)


def test_redis_counts_a_lease_only_within_three_quarters_of_every_enforced_limit(limits_redis):
    window, budget = f"{key_prefix()}:rpm:1:w", f"{key_prefix()}:budget:1:x"
    limits_redis.hset(window, mapping={str(T0): 760, "t": 760, "o": T0})
    # 760 + 1 + 7 = 768, three quarters of 1024: counted.
    assert admit(limits_redis, [window], [("r", 1024, 1, "", 7)]) == [0, 0, 768, 60_000, 1]
    # One more and it would not fit: the request alone is admitted.
    assert admit(limits_redis, [window], [("r", 1024, 1, "", 7)]) == [0, 0, 769, 60_000, 0]
    # A hard budget far from its limit does not make it fit.
    both = [("r", 1024, 1, "", 7), ("b", 10**12, 10, "h0", 70)]
    assert admit(limits_redis, [window, budget], both) == [0, 0, 770, 60_000, 10, 0, 0]
    assert limits_redis.hget(budget, "reserved") == b"10"


def test_a_lease_needs_every_check_to_ask_and_a_soft_budget_never_stands_in_its_way(limits_redis):
    window, soft = f"{key_prefix()}:rpm:2:w", f"{key_prefix()}:budget:2:x"
    limits_redis.hset(soft, mapping={"spent": 5000, "reserved": 0})  # over its limit: soft budgets only alert
    assert admit(limits_redis, [window, soft], [("r", 1024, 1, "", 7), ("b", 100, 10, "s0", 70)])[-1] == 1
    assert limits_redis.hget(soft, "reserved") == b"80"
    assert int(limits_redis.hget(window, "t")) == 8
    # A check that asks for nothing: no lease anywhere.
    assert admit(limits_redis, [window, soft], [("r", 1024, 1, "", 7), ("b", 100, 10, "s0", 0)])[-1] == 0
    assert int(limits_redis.hget(window, "t")) == 9
