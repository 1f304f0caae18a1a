"""The hot path: admit a request against its limits and budgets in one Redis round trip.

`admit()` runs after the request is authenticated, parsed and routed, before the provider is
called. Budgets reserve the request's worst-case cost (input tokens estimated from the body,
output tokens from max_tokens or GATEWAY_BUDGET_DEFAULT_OUTPUT_TOKENS); token windows reserve
the estimated input plus max_tokens. When the record is finished (`budgets.settlement`) each
reservation becomes the real amount, or is released if nothing was used.

Redis unreachable: GATEWAY_LIMITS_FAIL_MODE "open" serves the request and keeps its spend in
this process until Redis is back; "closed" answers 503.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

from django.conf import settings

from budgets import clock, plans, refusals
from budgets.counters import ADMIT, clients, key_prefix
from budgets.periods import period_end, period_label, period_start
from budgets.resp import RedisReplyError
from proxy.db import run_in_db_thread
from proxy.errors import ErrorFormat, GatewayError
from telemetry import pricing

logger = logging.getLogger(__name__)

# Where the text of a request is, in both protocols; only used to estimate its input tokens.
_PROMPT_KEYS = ("messages", "prompt", "input", "system", "instructions", "tools")
_TEXT_KEYS = ("content", "text", "arguments", "description", "parameters", "input_schema")
_CHARS_PER_TOKEN = 4
_OUTPUT_LIMIT_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
_SECONDS_KEPT_AFTER_PERIOD = 7 * 86400


@dataclass(slots=True)
class Check:
    rule: plans.Rule
    key: str
    amount: int
    # Budgets: the period the reservation was made in, for settling and alerting.
    period_start: datetime | None = None
    ttl: int = 0
    user_id: str = ""


@dataclass(slots=True)
class Admission:
    """What one admitted request holds until its record is finished."""

    checks: list[Check]
    now: float
    input_tokens: int
    headers: dict[str, str] = field(default_factory=dict)
    # Not counted in Redis (it was unreachable): the spend is reconciled later.
    local: bool = False

    def add_headers(self, response) -> None:
        for name, value in self.headers.items():
            response[name] = value


class _Outage:
    """Redis failed: skip it for GATEWAY_LIMITS_RETRY_SECONDS rather than make every request wait on it."""

    def __init__(self):
        self.until = float("-inf")

    def down(self) -> bool:
        return time.monotonic() < self.until

    def failed(self) -> None:
        self.until = time.monotonic() + settings.GATEWAY_LIMITS_RETRY_SECONDS


outage = _Outage()


def _text_chars(value) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_chars(item) for item in value)
    if isinstance(value, dict):
        return sum(_text_chars(value[key]) for key in _TEXT_KEYS if key in value)
    return 0


def estimated_input_tokens(payload: dict) -> int:
    chars = sum(_text_chars(payload[key]) for key in _PROMPT_KEYS if key in payload)
    return -(-chars // _CHARS_PER_TOKEN)


def declared_output_tokens(payload: dict) -> int | None:
    for name in _OUTPUT_LIMIT_KEYS:
        value = payload.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def worst_case_nano(*, provider: str, model: str, at: float, input_tokens: int, output_tokens: int) -> int:
    """The request's highest possible cost in nano-USD; 0 for a model without a known price."""
    # Prices change by the day at most (and overrides within their 30 s refresh, which clears this cache).
    return _worst_case_nano(provider, model, int(at // 86400), input_tokens, output_tokens, pricing.overrides_version())


@lru_cache(maxsize=4096)
def _worst_case_nano(provider: str, model: str, day: int, input_tokens: int, output_tokens: int, _version) -> int:
    usage = pricing.TokenUsage(input=input_tokens, output=output_tokens)
    at = datetime.fromtimestamp(day * 86400, tz=UTC)
    cost = pricing.request_cost(provider=provider, model=model, at=at, usage=usage)
    return math.ceil(cost * 1e9) if cost else 0


@lru_cache(maxsize=64)
def _period(period: str, day: int) -> tuple[datetime, datetime | None, str]:
    """Every period starts at a UTC midnight, so a day number names the period holding it."""
    start = period_start(period, datetime.fromtimestamp(day * 86400, tz=UTC))
    return start, period_end(period, start), period_label(period, start)


def counter_key(prefix: str, rule: plans.Rule, user_id: str | None, suffix: str) -> str:
    user = f":u:{user_id}" if rule.per_user else ""
    return f"{prefix}:{rule.kind}:{rule.id}{user}:{suffix}"


def _checks(rules, *, now: float, payload: dict, record, user_id: str | None) -> tuple[list[Check], int]:
    prefix = key_prefix()
    input_tokens = estimated_input_tokens(payload)
    declared = declared_output_tokens(payload)
    day = int(now // 86400)
    cost = None
    checks = []
    for rule in rules:
        if rule.kind == "budget":
            if cost is None:
                output = declared if declared is not None else settings.GATEWAY_BUDGET_DEFAULT_OUTPUT_TOKENS
                cost = worst_case_nano(
                    provider=record.provider or "",
                    model=record.upstream_model or record.model or "",
                    at=now,
                    input_tokens=input_tokens,
                    output_tokens=output,
                )
            start, end, label = _period(rule.period, day)
            ttl = int(end.timestamp() - now) + _SECONDS_KEPT_AFTER_PERIOD if end else 0
            key = counter_key(prefix, rule, user_id, label)
            checks.append(Check(rule, key, cost, start, ttl, user_id or ""))
        else:
            amount = 1 if rule.kind == "rpm" else input_tokens + (declared or 0)
            checks.append(Check(rule, counter_key(prefix, rule, user_id, "w"), amount))
    return checks, input_tokens


def _arguments(checks: list[Check], now: float) -> list:
    now_ms = int(now * 1000)
    args: list = [now_ms, now_ms // 1000]
    for check in checks:
        if check.rule.kind == "budget":
            args += ["b", check.rule.limit, check.amount, f"{'h' if check.rule.hard else 's'}{check.ttl}"]
        else:
            args += ["r", check.rule.limit, check.amount, ""]
    return args


def _retry_ms(check: Check, now: float, window_retry_ms: int) -> int:
    if check.rule.kind != "budget":
        return window_retry_ms
    end = period_end(check.rule.period, check.period_start)
    # A total budget never resets: retry-after says a day, since only an admin can help.
    return int((end.timestamp() - now) * 1000) if end else 86_400_000


def _windows(checks: list[Check], result: list) -> dict[str, tuple[int, int, int]]:
    """The tightest requests and tokens window after admission: kind -> (limit, remaining, reset ms)."""
    windows: dict[str, tuple[int, int, int]] = {}
    for index, check in enumerate(checks):
        kind = check.rule.kind
        if kind == "budget":
            continue
        used, reset_ms = int(result[2 + 2 * index]), int(result[3 + 2 * index])
        remaining = check.rule.limit - used
        if kind not in windows or remaining < windows[kind][1]:
            windows[kind] = (check.rule.limit, remaining, reset_ms)
    return windows


def _refusal_windows(checks: list[Check], refused: Check, retry_ms: int) -> dict[str, tuple[int, int, int]]:
    kind = refused.rule.kind
    return {kind: (refused.rule.limit, 0, retry_ms)} if kind != "budget" else {}


async def admit(*, record, attribution, payload: dict, error_format: ErrorFormat) -> Admission | None:
    """Admit the request or raise a 429 (`refusals.LimitRefused`); None when nothing applies."""
    grant = attribution.grant
    plan = await plans.plan_for(grant.org_pk)
    if plan.empty:
        return None
    project = attribution.project.slug if attribution.project is not None else None
    rules = plan.rules_for(project=project, key_id=grant.key_id, user_id=attribution.user_id, model=record.model)
    if not rules:
        return None
    if not pricing.overrides_fresh():
        await run_in_db_thread(pricing.refresh_overrides)
    now = clock.now()
    checks, input_tokens = _checks(rules, now=now, payload=payload, record=record, user_id=attribution.user_id)
    admission = Admission(checks, now, input_tokens)
    if not settings.GATEWAY_LIMITS_REDIS_URL or outage.down():
        return _without_redis(admission)
    try:
        result = await ADMIT.run(clients.get(), [check.key for check in checks], _arguments(checks, now))
    except (OSError, RedisReplyError) as exc:
        logger.warning("limits: Redis unreachable (%s); fail mode %s", exc, settings.GATEWAY_LIMITS_FAIL_MODE)
        outage.failed()
        return _without_redis(admission)
    refused_index, retry_ms = int(result[0]), int(result[1])
    if refused_index:
        refused = checks[refused_index - 1]
        rule = refused.rule
        retry_ms = _retry_ms(refused, now, retry_ms)
        record.limit_refused_by(rule.name)
        headers = refusals.rate_headers(_refusal_windows(checks, refused, retry_ms), error_format, now)
        raise refusals.refusal(
            rule_name=rule.name, kind=rule.kind, limit=rule.limit, retry_after_ms=retry_ms, headers=headers
        )
    admission.headers = refusals.rate_headers(_windows(checks, result), error_format, now)
    return admission


def _without_redis(admission: Admission) -> Admission:
    if settings.GATEWAY_LIMITS_FAIL_MODE == "closed":
        raise GatewayError(
            "The gateway cannot check this request's limits and budgets right now; retry shortly.",
            kind="overloaded",
            code="limits_unavailable",
            headers={"retry-after": str(max(1, math.ceil(settings.GATEWAY_LIMITS_RETRY_SECONDS)))},
        )
    admission.local = True
    return admission
