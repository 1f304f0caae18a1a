"""The hot path: admit a request against its limits and budgets in one Redis round trip.

`admit()` runs after the request is authenticated, parsed and routed, before the provider is
called. Budgets reserve the request's worst-case cost (input tokens estimated from the body,
output tokens from max_tokens, else the deployment's max_output_tokens, else
GATEWAY_BUDGET_DEFAULT_OUTPUT_TOKENS: see `budgets.estimates`); token windows reserve
the estimated input plus max_tokens. When the record is finished (`budgets.settlement`) each
reservation becomes the real amount, or is released if nothing was used.

Far from its limits, an admission also counts room for the next requests of its kind, which this
process then admits alone within the same second (`budgets.leases`).

Redis unreachable: GATEWAY_LIMITS_FAIL_MODE "open" admits the request against counters of this
process (`budgets.local_counts`: each worker enforces alone, so N workers may admit up to N times
a limit) and keeps its spend here until Redis is back; "closed" answers 503.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from django.conf import settings

from budgets import clock, leases, local_counts, plans, refusals, resp
from budgets.counters import ADMIT, clients, key_prefix
from budgets.estimates import declared_output_tokens, estimated_input_tokens, worst_case_nano
from budgets.periods import period_end, period_label, period_start
from budgets.resp import RedisReplyError
from proxy.db import run_in_db_thread
from proxy.errors import ErrorFormat, GatewayError
from telemetry import pricing

logger = logging.getLogger(__name__)

_SECONDS_KEPT_AFTER_PERIOD = 7 * 86400


@dataclass(frozen=True, slots=True)
class Check:
    """One counter a request is checked against: the same for every request with its rules that day."""

    rule: plans.Rule
    key: str
    # Budgets: the period counted in (for settling and alerting) and when its counter may go (0: never).
    period_start: datetime | None = None
    expire_at: int = 0
    user_id: str = ""


@dataclass(slots=True)
class Admission:
    """What one admitted request holds until its record is logged: each check and what it added.

    One admitted from a lease is decided at once, and stands in for its `Pending` (`ready`, `admitted`).
    """

    checks: tuple[Check, ...]
    amounts: tuple[int, ...]
    now: float
    input_tokens: int
    # admit.lua's result as this request left the counters (None: nothing to tell), and the `Template`
    # that reads its requests and tokens windows from it, for the rate-limit headers.
    result: list | None = None
    template: Template | None = None
    error_format: ErrorFormat = ErrorFormat.OPENAI
    # Counted by this process alone (Redis was unreachable): the spend is reconciled later.
    local: bool = False

    def ready(self) -> Admission:
        return self

    async def admitted(self) -> Admission:
        return self

    @property
    def windows(self) -> dict[str, tuple[int, int, int]]:
        """The tightest requests and tokens windows: kind -> (limit, remaining, reset ms)."""
        return self.template.windows(self.result) if self.result is not None else {}

    @property
    def headers(self) -> dict[str, str]:
        return refusals.rate_headers(self.windows, self.error_format, self.now)

    def add_headers(self, response, *, encoded: bool = False) -> None:
        """The rate-limit headers on the response; `encoded`: as ASGI bytes the lean proxy handler sends
        (gateway_project.lean_handler), which skips Django's per-header work for them."""
        if self.result is None or not self.template.window_kinds:
            return
        if encoded and self.error_format is ErrorFormat.OPENAI:
            response.encoded_headers = self.template.openai_headers(self.result)
            return
        if encoded:
            response.encoded_headers = [(name.encode(), value.encode()) for name, value in self.headers.items()]
            return
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


@lru_cache(maxsize=64)
def _period(period: str, day: int) -> tuple[datetime, datetime | None, str]:
    """Every period starts at a UTC midnight, so a day number names the period holding it."""
    start = period_start(period, datetime.fromtimestamp(day * 86400, tz=UTC))
    return start, period_end(period, start), period_label(period, start)


def counter_expires_at(period_end: datetime | None) -> int:
    """When a budget counter may go (Unix seconds): a week after its period, so late settlements land; 0: never."""
    return int(period_end.timestamp()) + _SECONDS_KEPT_AFTER_PERIOD if period_end else 0


def counter_key(prefix: str, rule: plans.Rule, user_id: str | None, suffix: str) -> str:
    user = f":u:{user_id}" if rule.per_user else ""
    return f"{prefix}:{rule.kind}:{rule.id}{user}:{suffix}"


class Template:
    """An admission's checks and the script call's fixed parts, for every request with the same rules in a day.

    Requests of one org, project, key, end user and model on one day share their counters, limits
    and expiry: only the time and the amounts change from one request to the next. Their EVALSHA is
    kept encoded with gaps for those, and so are the names of the rate-limit headers.
    """

    __slots__ = (
        "_arrived",
        "_before",
        "_head",
        "_lease_asked",
        "_limits",
        "_openai_windows",
        "_pieces",
        "_second",
        "budget_uses",
        "budgets",
        "checks",
        "default_output_tokens",
        "kinds",
        "lease",
        "picks",
        "window_kinds",
    )

    def __init__(self, rules: list[plans.Rule], *, day: int, user_id: str | None):
        prefix = key_prefix()
        checks = []
        for rule in rules:
            if rule.kind == "budget":
                start, end, label = _period(rule.period, day)
                expire_at = counter_expires_at(end)
                checks.append(Check(rule, counter_key(prefix, rule, user_id, label), start, expire_at, user_id or ""))
            else:
                checks.append(Check(rule, counter_key(prefix, rule, user_id, "w")))
        self.checks = tuple(checks)
        self.kinds = tuple(check.rule.kind for check in checks)
        # Per check, which of a request's (cost, 1, tokens) it counts (`_amounts`).
        self.picks = tuple({"budget": 0, "rpm": 1}.get(kind, 2) for kind in self.kinds)
        self.budgets = "budget" in self.kinds
        # Read here rather than per request: a setting is a costly lookup on the hot path.
        self.default_output_tokens = settings.GATEWAY_BUDGET_DEFAULT_OUTPUT_TOKENS
        # Per budget: where the script's result holds its use, and its counter key (`local_counts.last_use`).
        self.budget_uses = tuple((2 + 2 * i, checks[i].key) for i, kind in enumerate(self.kinds) if kind == "budget")
        keys = [check.key for check in checks]
        self._head = b"*%d\r\n" % (3 + len(keys) + 2 + 5 * len(checks)) + b"".join(
            resp.bulk(part) for part in ("EVALSHA", ADMIT.sha, len(keys), *keys)
        )
        # Per check: what precedes its amount (kind, limit) and what follows it (the budget's mode and expiry).
        self._pieces = tuple(
            (
                resp.bulk("b" if check.rule.kind == "budget" else "r") + resp.bulk(check.rule.limit),
                resp.bulk(f"{'h' if check.rule.hard else 's'}{check.expire_at}" if check.rule.kind == "budget" else ""),
            )
            for check in checks
        )
        # The requests and tokens windows, each kind with the indices of its checks.
        self.window_kinds = tuple(
            (kind, tuple(i for i, check in enumerate(checks) if check.rule.kind == kind))
            for kind in ("rpm", "tpm")
            if kind in self.kinds
        )
        self._limits = tuple(check.rule.limit for check in checks)
        # Per window kind for OpenAI's headers: its checks, header names, and the limit header ready made
        # when one check is all it has (then it is always the tightest).
        self._openai_windows = tuple(
            (
                indices,
                names := refusals.OPENAI_ENCODED_NAMES[kind],
                (names[0], b"%d" % self._limits[indices[0]]) if len(indices) == 1 else None,
            )
            for kind, indices in self.window_kinds
        )
        # The newest lease Redis granted these requests (`budgets.leases`), and when one was last asked for.
        self.lease: leases.Lease | None = None
        self._lease_asked = float("-inf")
        # This process's requests with these rules in the current second, and in the second before it
        # (0 if it had none): what sizes a lease.
        self._second = 0
        self._arrived = 0
        self._before = 0

    def arrived(self, second: int) -> None:
        if second != self._second:
            self._before = self._arrived if second == self._second + 1 else 0
            self._second, self._arrived = second, 0
        self._arrived += 1

    def command(self, now_ms: int, amounts: tuple[int, ...], lease: tuple[int, ...] | None = None) -> bytes:
        parts = [self._head, resp.bulk(now_ms), resp.bulk(now_ms // 1000)]
        if lease is None:
            for (before, after), amount in zip(self._pieces, amounts, strict=True):
                parts += (before, resp.bulk(amount), after, _NO_LEASE)
        else:
            for (before, after), amount, extra in zip(self._pieces, amounts, lease, strict=True):
                parts += (before, resp.bulk(amount), after, resp.bulk(extra))
        return b"".join(parts)

    def lease_wanted(self, amounts: tuple[int, ...]) -> tuple[int, ...] | None:
        """The room to ask Redis for beside a request of `amounts`, per check; None if no lease is to be asked.

        A lease holds as many requests as this second has brought so far, this one included, or as the
        second before brought if that was more, up to GATEWAY_LIMITS_LEASE_REQUESTS. So it grows 2, 4,
        8, ... with new traffic and starts each second of steady traffic at the size it had reached, and
        what it may leave unused is never more than this or the last second's requests. One is asked for
        at a time, and only when it is a small share of every limit it counts on (`leases.LEASE_SHARE`):
        small limits are admitted one request at a time.
        """
        size = min(settings.GATEWAY_LIMITS_LEASE_REQUESTS, max(self._arrived, self._before))
        if size < 2:
            return None
        asked = time.monotonic()
        if asked - self._lease_asked < settings.GATEWAY_LIMITS_REDIS_TIMEOUT:
            return None  # its answer is on its way (or lost, and then asked again after the timeout)
        # Room for at least one token: a request estimated at none may be followed by one that has some.
        lease = tuple(max(amount, 1) * (size - 1) for amount in amounts)
        # What the lease being replaced still holds counts too: the new one takes it over.
        current = self.lease
        held = current.left if current is not None and current.second == self._second else [0] * len(amounts)
        for check, amount, extra, kept in zip(self.checks, amounts, lease, held, strict=True):
            if check.rule.hard and check.rule.limit < leases.LEASE_SHARE * (amount + extra + kept):
                return None
        self._lease_asked = asked
        return lease

    def lease_answered(
        self, result: list, asked: tuple[int, ...], amounts: tuple[int, ...], second: int
    ) -> leases.Lease | None:
        """Redis answered the admission that asked for `asked`: the lease, kept, if it was granted."""
        self._lease_asked = float("-inf")
        if result[0] or not result[-1]:
            return None
        uses = [int(result[2 + 2 * index]) for index in range(len(self.checks))]
        lease = leases.Lease(
            # `lease_wanted` asked for so many requests' worth of each amount (each counted as at least 1).
            checks=self.checks,
            second=second,
            left=list(asked),
            uses=uses,
            requests=asked[0] // max(amounts[0], 1),
        )
        if self.lease is not None:
            lease.absorb(self.lease)
        self.lease = lease
        leases.granted(lease)
        return lease

    def lease_abandoned(self) -> None:
        """The admission that asked for a lease got no answer from Redis."""
        self._lease_asked = float("-inf")

    def windows(self, result: list) -> dict[str, tuple[int, int, int]]:
        """The tightest requests and tokens window after admission: kind -> (limit, remaining, reset ms)."""
        return {kind: self._tightest(indices, result) for kind, indices in self.window_kinds}

    def openai_headers(self, result: list) -> list[tuple[bytes, bytes]]:
        """OpenAI's rate-limit headers of `windows(result)`, as the ASGI bytes of every admitted response."""
        pairs = []
        for indices, (limit_name, remaining_name, reset_name), limit_pair in self._openai_windows:
            if limit_pair is None:
                limit, remaining, reset_ms = self._tightest(indices, result)
                limit_pair = (limit_name, b"%d" % limit)
            else:
                index = indices[0]
                remaining, reset_ms = self._limits[index] - int(result[2 + 2 * index]), int(result[3 + 2 * index])
            pairs += (
                limit_pair,
                (remaining_name, b"%d" % (remaining if remaining > 0 else 0)),
                (reset_name, refusals.encoded_duration(reset_ms)),
            )
        return pairs

    def _tightest(self, indices: tuple[int, ...], result: list) -> tuple[int, int, int]:
        tightest = None
        for index in indices:
            limit = self._limits[index]
            remaining = limit - int(result[2 + 2 * index])
            if tightest is None or remaining < tightest[1]:
                tightest = (limit, remaining, int(result[3 + 2 * index]))
        return tightest


_NO_LEASE = resp.bulk(0)
_NOT_MADE = object()
_TEMPLATES_PER_PLAN = 10_000  # end users each have their own; a plan is reloaded every key-cache period anyway


def _template(plan: plans.OrgPlan, cache_key: tuple) -> Template | None:
    """The template of (project, key id, end user, model, day), made on its first request."""
    project, key_id, user_id, model, day = cache_key
    templates = plan.templates
    rules = plan.rules_for(project=project, key_id=key_id, user_id=user_id, model=model)
    if not outage.down():
        local_counts.trim()
    template = Template(rules, day=day, user_id=user_id) if rules else None
    if len(templates) >= _TEMPLATES_PER_PLAN:
        templates.clear()
    templates[cache_key] = template
    return template


def _amounts(
    template: Template, *, payload: dict, record, now: float, output_limit: int | None
) -> tuple[tuple[int, ...], int]:
    input_tokens = estimated_input_tokens(payload)
    declared = declared_output_tokens(payload)
    cost = 0
    if template.budgets:
        # Without max_tokens, as much as the model may answer with.
        output_tokens = declared if declared is not None else output_limit or template.default_output_tokens
        cost = worst_case_nano(
            provider=record.provider or "",
            model=record.upstream_model or record.model or "",
            at=now,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
    values = (cost, 1, input_tokens + (declared or 0))
    return tuple(map(values.__getitem__, template.picks)), input_tokens


def _retry_ms(check: Check, now: float, window_retry_ms: int) -> int:
    if check.rule.kind != "budget":
        return window_retry_ms
    end = period_end(check.rule.period, check.period_start)
    # A total budget never resets: retry-after says a day, since only an admin can help.
    return int((end.timestamp() - now) * 1000) if end else 86_400_000


class Pending:
    """An admission on its way: the script call is written to Redis, its reply not read yet.

    The proxy prepares the provider call meanwhile and awaits `admitted()` just before its first
    byte leaves, so the round trip overlaps work the request does anyway. Whatever happens to the
    request, an admission Redis counted is handed to `on_counted` (the settlement) as its reply arrives.
    """

    __slots__ = (
        "_alone",
        "_client",
        "_command",
        "_counted",
        "_lease",
        "_on_counted",
        "_reply",
        "_result",
        "admission",
        "record",
        "template",
    )

    def __init__(self, *, admission: Admission, record, on_counted):
        self.admission = admission
        self.template = admission.template
        self.record = record
        self._on_counted = on_counted
        self._client = None
        self._command = None
        self._reply: asyncio.Future | None = None
        self._result = None  # the admission, once `admitted` has returned it
        self._counted = False  # handed to on_counted
        self._lease = None  # the lease asked for beside this request, until Redis answers
        self._alone = None  # if granted: admit.lua's answer as if the lease had not been counted

    def send(self, lease: tuple[int, ...] | None) -> None:
        """Write the script call now, asking for `lease` beside the request (`Template.lease_wanted`);
        its reply is read by `admitted`."""
        self._client = clients.get()
        admission = self.admission
        self._lease = lease
        self._command = self.template.command(int(admission.now * 1000), admission.amounts, self._lease)
        self._reply = self._client.send_now(self._command, on_reply=self._replied)
        if self._reply is None and self._lease is not None:
            # Not connected: `admitted` connects and then sends the command. A request cancelled meanwhile
            # would leave its lease counted with nobody to use it or give it back, so this one asks for none.
            self._lease_answered(None)
            self._command = self.template.command(int(admission.now * 1000), admission.amounts)

    def _replied(self, result: list) -> None:
        self._lease_answered(result)
        if not int(result[0]):
            self._counted_now()

    def _lease_answered(self, result: list | None) -> None:
        """Whatever Redis said of a lease asked for (None: nothing), once; a lease it counted is never lost."""
        asked, self._lease = self._lease, None
        if asked is None:
            return
        if result is None:
            self.template.lease_abandoned()
            return
        admission = self.admission
        granted = self.template.lease_answered(result, asked, admission.amounts, int(admission.now))
        if granted is not None:
            self._alone = list(granted.reply)  # taken before any other request takes from the lease

    def _counted_now(self) -> None:
        if not self._counted:
            self._counted = True
            self._on_counted(self.record, self.admission)

    async def admitted(self) -> Admission:
        """The admission, or a 429 (`refusals.LimitRefused`) naming the limit or budget that refused it."""
        if self._result is not None:
            return self._result
        if self._command is None:  # Redis is unreachable, or none is configured
            return self._without_redis()
        try:
            result = await ADMIT.run_encoded(self._client, self._command, self._reply)
        except (OSError, RedisReplyError) as exc:
            logger.warning("limits: Redis unreachable (%s); fail mode %s", exc, settings.GATEWAY_LIMITS_FAIL_MODE)
            outage.failed()
            self._lease_answered(None)
            return self._without_redis()
        return self._decided(result)

    def ready(self) -> Admission | None:
        """The admission if Redis has already answered, without awaiting (it raises a refusal); else None."""
        if self._result is not None:
            return self._result
        reply = self._reply
        if reply is None:
            return None
        if not reply.done():  # most often it has arrived, and is only not read yet
            self._client.read_arrived()
        if not reply.done() or reply.cancelled() or reply.exception() is not None:
            return None  # `admitted` waits, reconnects or loads the script again
        return self._decided(reply.result())

    def _decided(self, result: list) -> Admission:
        self._lease_answered(result)  # if written only now (see below)
        template = self.template
        for position, key in template.budget_uses:  # where an outage would start counting from
            local_counts.last_use[key] = result[position]
        if local_counts.windows:  # counted alone during an outage: Redis is the truth again
            local_counts.redis_back()
        if result[0]:
            raise self._refusal(result)
        self._counted_now()  # if written only now (a new connection, or the script loaded again)
        if self._alone is not None:  # the headers say what this request left, not its lease
            result = self._alone
        admission = self.admission
        admission.result = result
        self._result = admission
        return admission

    def _without_redis(self) -> Admission:
        """Fail open: count in this process, and settle the spend once Redis is back; fail closed: a 503."""
        if settings.GATEWAY_LIMITS_FAIL_MODE == "closed":
            raise GatewayError(
                "The gateway cannot check this request's limits and budgets right now; retry shortly.",
                kind="overloaded",
                code="limits_unavailable",
                headers={"retry-after": str(max(1, math.ceil(settings.GATEWAY_LIMITS_RETRY_SECONDS)))},
            )
        admission = self.admission
        if settings.GATEWAY_LIMITS_REDIS_URL:  # unreachable; without one configured nothing is enforced
            result = local_counts.admit(self.template.checks, admission.amounts, admission.now)
            if result[0]:
                raise self._refusal(result)
            admission.result = result
        admission.local = True
        self._result = admission
        self._counted_now()
        return admission

    def _refusal(self, result: list) -> refusals.LimitRefused:
        """The 429 of a result in admit.lua's shape that names a refusing check (Redis's or local)."""
        refused = self.template.checks[int(result[0]) - 1]
        rule, now = refused.rule, self.admission.now
        retry_ms = _retry_ms(refused, now, int(result[1]))
        self.record.limit_refused_by(rule.name)
        windows = self.template.windows(result)
        if rule.kind != "budget":  # the refusing window is the one to wait for
            windows[rule.kind] = (rule.limit, 0, retry_ms)
        headers = refusals.rate_headers(windows, self.admission.error_format, now)
        return refusals.refusal(
            rule_name=rule.name, kind=rule.kind, limit=rule.limit, retry_after_ms=retry_ms, headers=headers
        )


def _redis_usable() -> bool:
    return bool(settings.GATEWAY_LIMITS_REDIS_URL) and not outage.down()


async def begin(
    *, record, attribution, payload: dict, error_format: ErrorFormat, on_counted, output_limit: int | None = None
) -> Pending | Admission | None:
    """Start admitting the request (see `Pending`), or admit it from a lease; None when no limit or budget applies."""
    grant = attribution.grant
    plan = plans.cached_plan(grant.org_pk) or await plans.plan_for(grant.org_pk)
    if plan.empty:
        return None
    now = clock.now()
    project = attribution.project
    slug = project.slug if project is not None else None
    cache_key = (slug, grant.key_id, attribution.user_id, record.model, int(now // 86400))
    template = plan.templates.get(cache_key, _NOT_MADE)
    if template is _NOT_MADE:
        template = _template(plan, cache_key)
    if template is None:
        return None
    second = int(now)
    template.arrived(second)
    if template.budgets and not pricing.overrides_fresh():
        await run_in_db_thread(pricing.refresh_overrides)
    amounts, input_tokens = _amounts(template, payload=payload, record=record, now=now, output_limit=output_limit)
    admission = Admission(template.checks, amounts, now, input_tokens, None, template, error_format)
    lease = template.lease
    # Down to its last quarter: this request asks for the next lease while the rest still serves the others.
    renew = lease is not None and lease.second == second and lease.running_low() and _redis_usable()
    ask = template.lease_wanted(amounts) if renew else None
    if ask is None and lease is not None and lease.take(amounts, second):
        admission.result = list(lease.reply)  # as it is now, for this request's headers
        on_counted(record, admission)
        return admission
    pending = Pending(admission=admission, record=record, on_counted=on_counted)
    if renew or _redis_usable():
        pending.send(ask if renew else template.lease_wanted(amounts))
    return pending
