"""How the router chooses a deployment and reads an attempt's answer; no server needed for either."""

import email.utils
import random
import time
from collections import Counter

import orjson
import pytest

from proxy.errors import GatewayError
from proxy.providers.registry import PROVIDERS
from proxy.router import strategies
from proxy.router.groups import Group, GroupTable, Target
from proxy.router.outcomes import Outcome, classify_error, classify_status, retry_after_seconds

OPENAI = PROVIDERS["openai"]


def target(name, weight=1):
    return Target(provider=OPENAI, upstream_model="gpt-4o-mini", name=name, key=f"deployment:{name}", weight=weight)


@pytest.fixture(autouse=True)
def _fresh_load():
    strategies.forget_load()
    yield
    strategies.forget_load()


def test_weighted_random_follows_the_weights():
    random.seed(7)
    heavy, light = target("heavy", weight=3), target("light", weight=1)

    counts = Counter(strategies.choose("weighted", [heavy, light]).name for _ in range(8000))

    assert 0.72 < counts["heavy"] / 8000 < 0.78


def test_least_busy_takes_the_deployment_with_fewest_requests_in_flight():
    busy, idle = target("busy"), target("idle")
    strategies.started(busy)
    strategies.started(busy)
    strategies.started(idle)

    assert {strategies.choose("least-busy", [busy, idle]).name for _ in range(50)} == {"idle"}

    strategies.ended(busy)
    strategies.ended(busy)
    assert {strategies.choose("least-busy", [busy, idle]).name for _ in range(50)} == {"busy"}


def test_lowest_latency_measures_every_deployment_first_then_takes_the_fastest():
    slow, fast, new = target("slow"), target("fast"), target("new")
    strategies.measured(slow, 900.0)
    strategies.measured(fast, 120.0)

    assert strategies.choose("latency", [slow, fast, new]).name == "new"
    assert strategies.choose("latency", [slow, fast]).name == "fast"
    for _ in range(10):
        strategies.measured(fast, 2000.0)
    assert strategies.choose("latency", [slow, fast]).name == "slow"


def error_body(**error):
    return orjson.dumps({"error": {"message": "", "type": "invalid_request_error", "code": None} | error})


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, b"{}", Outcome.SUCCESS),
        (429, error_body(code="rate_limit_exceeded"), Outcome.RETRYABLE),
        (500, b"<html>", Outcome.RETRYABLE),
        (503, b"", Outcome.RETRYABLE),
        (529, orjson.dumps({"type": "error", "error": {"type": "overloaded_error"}}), Outcome.RETRYABLE),
        (408, b"", Outcome.RETRYABLE),
        (400, error_body(code="context_length_exceeded"), Outcome.CONTEXT_WINDOW),
        (
            400,
            orjson.dumps(
                {"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long"}}
            ),
            Outcome.CONTEXT_WINDOW,
        ),
        (400, error_body(message="This model's maximum context length is 4096 tokens."), Outcome.CONTEXT_WINDOW),
        (400, error_body(code="content_policy_violation"), Outcome.CONTENT_POLICY),
        (400, error_body(code="content_filter"), Outcome.CONTENT_POLICY),
        (400, error_body(code="invalid_value"), Outcome.CLIENT_ERROR),
        (401, error_body(code="invalid_api_key"), Outcome.CLIENT_ERROR),
        (404, b"not json", Outcome.CLIENT_ERROR),
    ],
)
def test_an_answer_is_classified_by_its_status_and_error(status, body, outcome):
    assert classify_status(status, body) is outcome


def test_failed_exchanges_are_retryable_and_the_requests_own_errors_are_not():
    for code in ("upstream_unreachable", "upstream_timeout", "upstream_connection_error", "bad_upstream_response"):
        assert classify_error(GatewayError("", kind="bad_gateway", code=code)) is Outcome.RETRYABLE
    assert classify_error(GatewayError("", kind="invalid_request", code="unsupported_parameter")) is None
    assert classify_error(GatewayError("", kind="bad_gateway", code="upstream_response_too_large")) is None


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("0.5") == 0.5
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 <= retry_after_seconds(in_ten) <= 10
    assert retry_after_seconds(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0


def test_an_org_group_wins_and_fallbacks_reach_only_shared_or_own_groups():
    shared = Group(name="gpt", targets=(target("a"),), id=1)
    own = Group(name="gpt", targets=(target("b"),), id=2, org_pk=10, fallbacks={"failure": (3, 4, 5, 6)})
    foreign = Group(name="other", targets=(target("c"),), id=3, org_pk=11)
    same_org = Group(name="backup", targets=(target("d"),), id=4, org_pk=10)
    empty = Group(name="empty", targets=(), id=5)
    table = GroupTable(
        by_name={(None, "gpt"): shared, (10, "gpt"): own, (11, "other"): foreign, (10, "backup"): same_org},
        by_id={1: shared, 2: own, 3: foreign, 4: same_org, 5: empty, 6: shared},
    )

    assert table.find(org_pk=10, model="gpt") is own
    assert table.find(org_pk=12, model="gpt") is shared
    assert table.find(org_pk=10, model="other") is None
    assert table.fallbacks(own, "failure") == [same_org, shared]
    assert table.fallbacks(own, "context_window") == []
