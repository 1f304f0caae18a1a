"""The attempt loop: deployments of a group in turn, with retries, backoff and Retry-After, then fallbacks.

Each attempt is one `ProviderAdapter.forward` (so one `send`): the adapter builds the client's
response and the loop reads its status and body to decide. Only the final attempt's response
reaches the client. A stream is retried only while nothing of it was sent: an error status or a
failed connection comes back as an ordinary response or error; once the adapter returns the
stream itself, it is the client's, and a failure in it ends it with an error event (proxy.streaming).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpResponse

from proxy.errors import GatewayError
from proxy.router import strategies
from proxy.router.cooldowns import store as cooldowns
from proxy.router.groups import Group, GroupTable, Target
from proxy.router.outcomes import Outcome, classify_error, classify_status, retry_after_seconds

# The fallback list an outcome reads (models.Fallback.Trigger).
_TRIGGERS = {
    Outcome.RETRYABLE: "failure",
    Outcome.CONTEXT_WINDOW: "context_window",
    Outcome.CONTENT_POLICY: "content_policy",
}
# How a relayed stream that broke after its first byte is recorded (proxy.streaming.relay).
# A stream that broke after its first byte, by the provider's doing (proxy.streaming), counts as a failure.
_STREAM_FAILURES = frozenset({"upstream_stream_interrupted", "upstream_stream_idle_timeout", "upstream_stream_error"})


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """The group a request is for, and where to find the groups it falls back to."""

    group: Group
    table: GroupTable | None = None

    def fallbacks(self, trigger: str) -> list[Group]:
        return self.table.fallbacks(self.group, trigger) if self.table is not None else []

    def first_choice(self) -> Target | None:
        """The deployment a request goes to first, before any attempt: the group's first one or, for a
        group with none enabled, the first of the groups it falls back to on failure (`serve` goes
        there next); None when no group has one."""
        if self.group.targets:
            return self.group.targets[0]
        return next((group.targets[0] for group in self.fallbacks("failure")), None)


@dataclass(slots=True)
class Attempt:
    target: Target
    outcome: Outcome
    response: HttpResponse | None = None
    error: GatewayError | None = None
    retry_after: float | None = None


@dataclass(slots=True)
class _Tried:
    count: int = 0
    # time.monotonic() before which the provider asked not to be called again.
    not_before: float = 0.0


@dataclass(slots=True)
class Call:
    """What every attempt of one request shares."""

    record: object
    exchange: object
    open_adapter: Callable[[Target], Awaitable[object]]
    endpoint: str
    payload: dict
    body: bytes


async def serve(plan: RoutePlan, call: Call) -> HttpResponse:
    """The client's response, from the first group that answers; raises the final attempt's GatewayError."""
    group = plan.group
    last = await _serve_group(group, call, fallback=False, can_fall_back=lambda: bool(plan.fallbacks("failure")))
    trigger = _TRIGGERS.get(last.outcome) if last is not None else "failure"
    if trigger is not None:
        fallbacks = plan.fallbacks(trigger)
        for position, fallback in enumerate(fallbacks):
            more = position < len(fallbacks) - 1
            attempt = await _serve_group(fallback, call, fallback=True, can_fall_back=lambda more=more: more)
            if attempt is None:
                continue
            last = attempt
            if attempt.outcome in (Outcome.SUCCESS, Outcome.CLIENT_ERROR):
                break
    if last is None:
        raise GatewayError(
            f"No deployment of model group {group.name!r} can take requests now: every one is cooling down "
            "after failures, or none is enabled.",
            kind="overloaded",
            code="no_deployment_available",
        )
    if last.error is not None:
        raise last.error
    return last.response


async def _serve_group(group: Group, call: Call, *, fallback: bool, can_fall_back) -> Attempt | None:
    if group.cools_down:
        cooldowns.watch(target.key for target in group.targets)
    tried: dict[Target, _Tried] = {}
    last = None
    for _ in range(group.num_retries + 1):
        choice = _next_target(group, tried, can_fall_back)
        if choice is None:
            break
        target, wait = choice
        if wait > 0:
            await asyncio.sleep(wait)
        last = await _attempt(group, target, call, fallback=fallback)
        if last.outcome is not Outcome.RETRYABLE:
            return last
        state = tried.setdefault(target, _Tried())
        state.count += 1
        if group.cools_down:
            cooldowns.failed(target.key, allowed_fails=group.allowed_fails, window_seconds=group.cooldown_seconds)
        if last.retry_after:
            state.not_before = time.monotonic() + last.retry_after
            if group.cools_down:
                cooldowns.rest(target.key, min(last.retry_after, group.cooldown_seconds))
    return last


def _next_target(group: Group, tried: dict[Target, _Tried], can_fall_back) -> tuple[Target, float] | None:
    """The next deployment to try and how long to wait first; None when none is worth trying.

    A deployment not yet tried in this request is taken at once, healthy ones first. Trying one
    again waits: its Retry-After (when it is within GATEWAY_RETRY_AFTER_MAX_SECONDS; a longer one
    rules it out) or an exponential backoff with jitter.
    """
    targets = group.targets
    if not targets:
        return None
    if not tried and len(targets) == 1 and targets[0].key is None:
        return targets[0], 0.0  # a legacy route: one attempt, nothing to weigh
    healthy = [target for target in targets if cooldowns.remaining(target.key) <= 0]
    if not healthy:
        # Every deployment is cooling down: go elsewhere if the request can, else try them anyway.
        if can_fall_back():
            return None
        healthy = list(targets)
    untried = [target for target in healthy if target not in tried]
    if untried:
        return strategies.choose(group.strategy, untried), 0.0
    cap = settings.GATEWAY_RETRY_AFTER_MAX_SECONDS
    now = time.monotonic()
    waits = {}
    for target in healthy:
        state = tried[target]
        asked = state.not_before - now
        if asked > cap:
            continue
        backoff = settings.GATEWAY_RETRY_BACKOFF_SECONDS * 2 ** (state.count - 1) * random.uniform(0.5, 1.0)
        waits[target] = min(max(asked, backoff), cap) if asked > 0 else min(backoff, cap)
    if not waits:
        return None
    target = min(waits, key=waits.__getitem__)
    return target, waits[target]


async def _attempt(group: Group, target: Target, call: Call, *, fallback: bool) -> Attempt:
    record = call.record
    record.attempt_started(
        provider=target.provider.name,
        upstream_model=target.upstream_model,
        deployment=target.name,
        model_group=group.name,
        fallback=fallback,
    )
    started = time.perf_counter()
    strategies.started(target)
    call.exchange.on_stream_end = _stream_watcher(group, target, started) if record.stream else None
    try:
        adapter = await call.open_adapter(target)
        response = await adapter.forward(call.endpoint, call.payload, call.body)
    except GatewayError as error:
        strategies.ended(target)
        if error.before_provider:  # refused before it was sent (a budget or limit): no attempt was made
            raise
        record.attempt_ended(error=error.code, latency_ms=(time.perf_counter() - started) * 1000.0)
        outcome = classify_error(error)
        if outcome is None:
            raise
        return Attempt(target, outcome, error=error)
    except BaseException:  # the client left, or a bug: the attempt no longer counts as in flight
        strategies.ended(target)
        raise
    latency_ms = (time.perf_counter() - started) * 1000.0
    if response.streaming:
        # The stream is the client's now; its end (the watcher below) ends the attempt's load.
        strategies.measured(target, latency_ms)
        record.attempt_ended(status=response.status_code, latency_ms=latency_ms)
        return Attempt(target, Outcome.SUCCESS, response=response)
    strategies.ended(target)
    outcome = classify_status(response.status_code, response.content)
    if outcome is Outcome.SUCCESS:
        strategies.measured(target, latency_ms)
        record.attempt_ended(status=response.status_code, latency_ms=latency_ms)
        return Attempt(target, outcome, response=response)
    error = record.provider_error_type or f"http_{response.status_code}"
    record.attempt_ended(status=response.status_code, error=error, latency_ms=latency_ms)
    retry_after = None
    if outcome is Outcome.RETRYABLE:
        milliseconds = retry_after_seconds(response.get("retry-after-ms"))
        retry_after = (
            milliseconds / 1000.0 if milliseconds is not None else retry_after_seconds(response.get("retry-after"))
        )
    return Attempt(target, outcome, response=response, retry_after=retry_after)


def _stream_watcher(group: Group, target: Target, started: float):
    """Called by the relay when a stream this attempt returned has ended, however it ended."""

    def stream_ended(record) -> None:
        strategies.ended(target)
        record.attempt_stream_ended(error=record.error_type, latency_ms=(time.perf_counter() - started) * 1000.0)
        if record.error_type in _STREAM_FAILURES and group.cools_down:
            cooldowns.failed(target.key, allowed_fails=group.allowed_fails, window_seconds=group.cooldown_seconds)

    return stream_ended
