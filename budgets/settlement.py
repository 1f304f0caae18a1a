"""Settling admitted requests once their record is finished, off the requests' path.

Every finished record passes `record_finished` (a telemetry hand-off listener), disconnected
streams included. An admitted one is queued; a task on the event loop settles the queue in one
Redis round trip every GATEWAY_LIMITS_SETTLE_INTERVAL: each budget's reservation becomes the
request's real cost (the one its record prices), each token window's reservation its real token
count, and nothing at all is kept for a request that failed without usage. Alert thresholds the
settlement crosses come back from the same script, claimed once per period (`budgets.alerts`).
Spend settled while Redis was unreachable is kept here and added once it is back.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import defaultdict

from django.conf import settings

from budgets import alerts
from budgets.counters import SETTLE, clients, sync_client
from budgets.enforcement import Admission, Check, outage
from budgets.resp import RedisReplyError
from proxy.db import run_in_db_thread
from telemetry import pricing

logger = logging.getLogger(__name__)

_admissions: dict[str, Admission] = {}


def hold(record, admission: Admission) -> None:
    """Keep an admitted request's reservations until its record is finished."""
    _admissions[record.id] = admission


def record_finished(record) -> None:
    admission = _admissions.pop(record.id, None)
    if admission is not None:
        settler.add(record, admission)


def _thresholds() -> str:
    return ",".join(str(t) for t in settings.GATEWAY_BUDGET_ALERT_THRESHOLDS)


def settlement_args(record, admission: Admission) -> tuple[list[str], list, list[Check]]:
    """Keys and arguments of settle.lua for one finished request, and the budget check behind each key."""
    keys, args, checks = [], [], []
    if all(check.rule.kind == "rpm" for check in admission.checks):
        return keys, args, checks  # a request is counted when admitted: nothing to settle
    usage, cost = record.billed()
    cost_nano = math.ceil(cost * 1e9) if cost else 0
    tokens = usage.total
    for check in admission.checks:
        kind = check.rule.kind
        if kind == "budget":
            release = 0 if admission.local else check.amount
            keys.append(check.key)
            args += ["b", -release, cost_nano, check.rule.limit, f"{check.ttl}:{_thresholds()}"]
            checks.append(check)
        elif kind == "tpm" and not admission.local and tokens != check.amount:
            keys.append(check.key)
            args += ["t", int(admission.now), tokens - check.amount, 0, ""]
            checks.append(check)
    return keys, args, checks


class Settler:
    """Queues settlements and sends them as one script call per interval, per event loop."""

    def __init__(self):
        self._queue: list[tuple[object, Admission]] = []
        self._task: asyncio.Task | None = None
        # Budget settlements that could not reach Redis: counter key -> [check, reserved to release, nano-USD].
        self._unreconciled: dict[str, list] = defaultdict(lambda: [None, 0, 0])

    def add(self, record, admission: Admission) -> None:
        self._queue.append((record, admission))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.settle_now()
            return
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run(), name="budgets-settle")

    async def _run(self) -> None:
        while self._queue or self._unreconciled:
            await asyncio.sleep(settings.GATEWAY_LIMITS_SETTLE_INTERVAL)
            if not pricing.overrides_fresh():
                await run_in_db_thread(pricing.refresh_overrides)
            keys, args, checks = self._batch()
            if not keys:
                continue
            if outage.down():
                self._keep(keys, args, checks)
                await asyncio.sleep(settings.GATEWAY_LIMITS_RETRY_SECONDS)
                continue
            try:
                claimed = await SETTLE.run(clients.get(), keys, args)
            except (OSError, RedisReplyError) as exc:  # Redis unreachable: keep the spend for later
                logger.warning("limits: could not settle %d counters (%s); kept for later", len(keys), exc)
                outage.failed()
                self._keep(keys, args, checks)
                continue
            alerts.claimed(claimed, checks, args)

    def settle_now(self) -> None:
        """Outside an event loop (a management command, a sync test): settle at once."""
        keys, args, checks = self._batch()
        if keys and settings.GATEWAY_LIMITS_REDIS_URL:
            claimed = SETTLE.run_sync(sync_client(), keys, args)
            alerts.claimed(claimed, checks, args)

    def _batch(self) -> tuple[list[str], list, list[Check]]:
        queue, self._queue = self._queue, []
        keys: list[str] = []
        args: list = []
        checks: list[Check] = []
        for key, (check, release, cost) in self._unreconciled.items():
            keys.append(key)
            args += ["b", -release, cost, check.rule.limit, f"{check.ttl}:{_thresholds()}"]
            checks.append(check)
        self._unreconciled.clear()
        for record, admission in queue:
            try:
                more_keys, more_args, more_checks = settlement_args(record, admission)
            except Exception:  # an unpriceable record must not block the others; its reservation stays
                logger.exception("limits: could not settle request %s", getattr(record, "id", "?"))
                continue
            if admission.local:
                # Counted while Redis was away: its spend waits here for the next batch that reaches Redis.
                for index, check in enumerate(more_checks):
                    if check.rule.kind == "budget":
                        entry = self._unreconciled[check.key]
                        entry[0] = check
                        entry[2] += more_args[index * 5 + 2]
                continue
            keys += more_keys
            args += more_args
            checks += more_checks
        return keys, args, checks

    def _keep(self, keys: list[str], args: list, checks: list[Check]) -> None:
        """A batch that did not reach Redis: its budget settlements wait for the next one (token windows lapse)."""
        for index, check in enumerate(checks):
            if args[index * 5] == "b":
                entry = self._unreconciled[keys[index]]
                entry[0] = check
                entry[1] -= args[index * 5 + 1]
                entry[2] += args[index * 5 + 2]

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._unreconciled)


settler = Settler()
