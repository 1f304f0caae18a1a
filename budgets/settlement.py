"""Settling admitted requests once their record is logged, off the requests' path.

Every admitted request is held here until its record is logged (`record_logged`, a telemetry
hand-off listener), disconnected streams and failures included. It is then queued with the
cost and tokens its document records, which the hand-off thread has just worked out, so a
settlement bills exactly what the log bills and prices nothing again. A task on the event loop
settles the queue in one Redis round trip every GATEWAY_LIMITS_SETTLE_INTERVAL, summed per
counter: each budget's reservation becomes the real cost, each token window's reservation the
real token count, and nothing at all is kept for a request that failed without usage. Alert
thresholds the settlement crosses come back from the same script, claimed once per period
(`budgets.alerts`). What this process's leases still hold when their second is over goes back in
the same call (`budgets.leases`). Spend settled while Redis was unreachable is kept here and added once it is back.
A request admitted meanwhile by this process's own counters (`budgets.local_counts`) settles in
them as well, so that its real cost counts there until Redis has it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import defaultdict, deque

from django.conf import settings

from budgets import alerts, clock, leases, local_counts
from budgets.counters import SETTLE, clients, sync_client
from budgets.enforcement import Admission, Check, outage
from budgets.resp import RedisReplyError
from proxy.db import run_in_db_thread
from telemetry import pricing

logger = logging.getLogger(__name__)

# Admitted requests whose record is not logged yet, by record id. Written on the event loop,
# emptied by the hand-off thread: single dict operations, atomic under the GIL.
_admissions: dict[str, Admission] = {}


def hold(record, admission: Admission) -> None:
    """Keep an admitted request's reservations until its record is logged."""
    _admissions[record.id] = admission
    settler.ensure_running()


def record_logged(record, document: dict | None) -> None:
    """Queue an admitted request's settlement at what its document bills (priced here if there is none)."""
    admission = _admissions.get(record.id)
    if admission is None:
        return
    if all(check.rule.kind == "rpm" for check in admission.checks):
        _admissions.pop(record.id, None)  # a request is counted when admitted: nothing to settle
        return
    if document is not None:
        metadata = document["attributes"]["metadata"]
        cost, tokens = metadata["cost"], metadata["tokens"]["total"]
    else:  # telemetry off, or no document could be built: the same pricing the document would have had
        try:
            usage, cost = record.billed()
        except Exception:  # an unpriceable record must not hold the settler; its reservation stays
            logger.exception("limits: could not settle request %s", record.id)
            _admissions.pop(record.id, None)
            return
        tokens = usage.total
    # Queued before it is let go, so the settler never sees neither (and stops meanwhile).
    settler.queue.append((admission, math.ceil(cost * 1e9) if cost else 0, tokens))
    _admissions.pop(record.id, None)
    if not settler.running:
        settler.settle_now()  # no event loop serves this process (a management command, a sync test)


def _thresholds() -> str:
    return ",".join(str(t) for t in settings.GATEWAY_BUDGET_ALERT_THRESHOLDS)


class Batch:
    """Settlements summed per counter, so that the script does one counter's work however many requests it had."""

    def __init__(self):
        # Budget counter key -> [check, reserved to release, real cost] in nano-USD.
        self.budgets: dict[str, list] = {}
        # (token window key, bucket second) -> tokens to add back (negative) or on top.
        self.tokens: dict[tuple[str, int], int] = defaultdict(int)
        # Budget counter key -> the part of its cost admitted locally, which Redis has not seen at all.
        self.local_spend: dict[str, int] = defaultdict(int)

    def __bool__(self) -> bool:
        return bool(self.budgets or self.tokens)

    def add_budget(self, check: Check, *, release: int, cost: int) -> None:
        entry = self.budgets.get(check.key)
        if entry is None:
            self.budgets[check.key] = [check, release, cost]
        else:
            entry[1] += release
            entry[2] += cost

    def add(self, admission: Admission, *, cost: int, tokens: int) -> None:
        """One settled request: its budgets' reservations become its cost, its token windows its tokens."""
        for check, amount in zip(admission.checks, admission.amounts, strict=True):
            kind = check.rule.kind
            if kind == "budget":
                self.add_budget(check, release=0 if admission.local else amount, cost=cost)
                if admission.local:
                    self.local_spend[check.key] += cost
            elif kind == "tpm" and not admission.local and tokens != amount:
                self.tokens[check.key, int(admission.now)] += tokens - amount

    def add_unused(self, lease: leases.Lease) -> None:
        """What a lease still holds once its second is over: released from budgets, taken out of its windows' bucket."""
        for check, left in zip(lease.checks, lease.give_back(), strict=True):
            if not left:
                continue
            if check.rule.kind == "budget":
                self.add_budget(check, release=left, cost=0)
            else:
                self.tokens[check.key, lease.second] -= left

    def script_input(self) -> tuple[list[str], list, list[Check]]:
        """Keys and arguments of settle.lua, and the budget check behind each budget key (None for windows)."""
        keys, args, checks = [], [], []
        thresholds = _thresholds()
        for key, (check, release, cost) in self.budgets.items():
            keys.append(key)
            args += ["b", -release, cost, check.rule.limit, f"{check.expire_at}:{thresholds}"]
            checks.append(check)
        for (key, second), change in self.tokens.items():
            if change:
                keys.append(key)
                args += ["t", second, change, 0, ""]
                checks.append(None)
        return keys, args, checks


class Settler:
    """Queues settlements and sends them as one script call per interval, per event loop."""

    def __init__(self):
        # (admission, cost in nano-USD, tokens) of logged requests; appended from the hand-off thread.
        self.queue: deque[tuple[Admission, int, int]] = deque()
        self._task: asyncio.Task | None = None
        # Budget settlements that could not reach Redis, summed per counter until it is back.
        self._unreconciled = Batch()
        # Asleep between rounds (`_pause`), and asked to stop (`aclose`).
        self._idle = False
        self._stopping = False

    def ensure_running(self) -> None:
        """Runs on the event loop while anything is held or queued (called by `hold`, on the loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a management command, a sync test): `settle_now` settles
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run(), name="budgets-settle")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _busy(self) -> bool:
        return bool(_admissions or self.queue or self._unreconciled or leases.outstanding)

    async def _run(self) -> None:
        while self._busy() and not self._stopping:
            await self._pause(settings.GATEWAY_LIMITS_SETTLE_INTERVAL)
            if not pricing.overrides_fresh():
                await run_in_db_thread(pricing.refresh_overrides)
            batch = self._batch()
            if not batch:
                continue
            if outage.down():
                self._keep(batch)
                await self._pause(settings.GATEWAY_LIMITS_RETRY_SECONDS)
                continue
            if not await self._send(batch):
                self._keep(batch)

    async def _pause(self, seconds: float) -> None:
        """Sleep between rounds, when nothing taken from the queue is in flight: `aclose` may cancel it."""
        self._idle = True
        try:
            await asyncio.sleep(seconds)
        finally:
            self._idle = False

    async def _send(self, batch: Batch) -> bool:
        """One script call for the batch; False if Redis could not be reached (the batch is the caller's to keep)."""
        keys, args, checks = batch.script_input()
        try:
            claimed = await SETTLE.run(clients.get(), keys, args)
        except (OSError, RedisReplyError) as exc:
            logger.warning("limits: could not settle %d counters (%s)", len(keys), exc)
            outage.failed()
            return False
        local_counts.reconciled(batch.local_spend)
        alerts.claimed(claimed, checks, args)
        return True

    async def aclose(self) -> None:
        """A graceful stop, once every request's record is logged: settle them, and give back every lease,
        this second's too. Without it, the last interval's settlements and the current second's leases
        would stay reserved until their period ends or `budgets_rebuild` runs."""
        self._stopping = True
        task = self._task
        if task is not None and not task.done():
            if self._idle:  # asleep: nothing of the queue is in flight, and the round it would do is done here
                task.cancel()
            await asyncio.wait((task,))  # else its script call ends first
        batch = self._batch(leases_before=math.inf)
        if batch and (outage.down() or not await self._send(batch)):
            logger.warning(
                "limits: stopping with %d counters unsettled: their reservations stay counted, and "
                "`manage.py budgets_rebuild --release-reservations` recounts them from the logs",
                len(batch.budgets) + len(batch.tokens),
            )
        self._stopping = False

    def settle_now(self) -> None:
        """Outside an event loop (a management command, a sync test): settle at once."""
        batch = self._batch()
        if batch and settings.GATEWAY_LIMITS_REDIS_URL:
            keys, args, checks = batch.script_input()
            claimed = SETTLE.run_sync(sync_client(), keys, args)
            local_counts.reconciled(batch.local_spend)
            alerts.claimed(claimed, checks, args)

    def _batch(self, *, leases_before: float | None = None) -> Batch:
        """What is queued, with what leases hold once their second is over (or that began before `leases_before`)."""
        batch, self._unreconciled = self._unreconciled, Batch()
        queue = self.queue
        for _ in range(len(queue)):
            admission, cost, tokens = queue.popleft()
            if admission.local:  # counted while Redis was away: its spend waits for the next batch that reaches Redis
                local_counts.settled(admission, cost=cost, tokens=tokens)
                self._unreconciled.add(admission, cost=cost, tokens=tokens)
            else:
                batch.add(admission, cost=cost, tokens=tokens)
        for lease in leases.expired(int(clock.now()) if leases_before is None else leases_before):
            batch.add_unused(lease)
        return batch

    def _keep(self, batch: Batch) -> None:
        """A batch that did not reach Redis: its budget settlements wait for the next one (token windows lapse)."""
        for check, release, cost in batch.budgets.values():
            self._unreconciled.add_budget(check, release=release, cost=cost)
        for key, cost in batch.local_spend.items():
            self._unreconciled.local_spend[key] += cost

    @property
    def pending(self) -> int:
        """Requests admitted and not yet settled, counters waiting for Redis and leases not yet returned."""
        return len(_admissions) + len(self.queue) + len(self._unreconciled.budgets) + len(leases.outstanding)


settler = Settler()
