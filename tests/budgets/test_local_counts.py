"""The counters a process keeps while Redis is unreachable, on their own: the same answers as admit.lua."""

from __future__ import annotations

import pytest

from budgets import local_counts
from budgets.enforcement import Admission, Check
from budgets.plans import Rule

NOW = 1_800_000_000.0
TOKENS = Check(Rule(1, "tpm", "org", 60), "tokens-window")
BUDGET = Check(Rule(2, "budget", "org", 1000), "budget-counter")


@pytest.fixture(autouse=True)
def clean_process():
    local_counts.forget()
    yield
    local_counts.forget()


def test_a_token_window_settles_to_the_real_count_and_frees_the_room():
    first = local_counts.admit((TOKENS,), (26,), NOW)
    assert first == [0, 0, 26, 60_000]
    assert local_counts.admit((TOKENS,), (26,), NOW + 1)[:3] == [0, 0, 52]
    assert local_counts.admit((TOKENS,), (26,), NOW + 2) == [1, 58_000, 52, 60_000]  # the first leaves at +60
    local_counts.settled(Admission((TOKENS,), (26,), NOW, 6), cost=0, tokens=6)
    assert local_counts.admit((TOKENS,), (26,), NOW + 2)[:3] == [0, 0, 58]


def test_a_budget_counts_from_the_last_use_redis_reported_and_keeps_local_spend_until_redis_has_it():
    local_counts.last_use[BUDGET.key] = 700
    assert local_counts.admit((BUDGET,), (200,), NOW)[:3] == [0, 0, 900]
    local_counts.settled(Admission((BUDGET,), (200,), NOW, 0), cost=150, tokens=0)
    assert local_counts.admit((BUDGET,), (200,), NOW) == [1, 0, 850, 0]
    local_counts.reconciled({BUDGET.key: 150})
    assert local_counts.admit((BUDGET,), (200,), NOW) == [1, 0, 850, 0]  # moved into the last use, not lost
    local_counts.last_use[BUDGET.key] = 100  # Redis's own word, at its next reply
    assert local_counts.admit((BUDGET,), (200,), NOW)[:3] == [0, 0, 300]


def test_nothing_is_counted_unless_every_check_passes():
    local_counts.last_use[BUDGET.key] = 1000
    assert local_counts.admit((TOKENS, BUDGET), (26, 1), NOW)[0] == 2
    assert local_counts.windows == {}
