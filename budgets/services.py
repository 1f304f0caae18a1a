"""Writes for budgets and rate limits, and the rebuild of budget counters from the request logs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.db.models import Sum

from budgets import clock
from budgets.counters import key_prefix, sync_client
from budgets.enforcement import counter_expires_at, counter_key
from budgets.models import Budget, Period, RateLimit, Scope
from budgets.periods import period_end, period_label, period_start
from budgets.plans import rules_of


def budget_set(
    *, scope: str, org, usd, period: str = Period.MONTH, hard: bool = True, project=None, key=None, user_id: str = ""
) -> Budget:
    """Create or change the budget of one target (an org, project, key, or end users)."""
    if period not in Period.values:
        raise ValueError(f"period must be one of {', '.join(Period.values)}, not {period!r}")
    amount = Decimal(str(usd))
    if amount < 0:
        raise ValueError(f"usd must not be negative, got {usd!r}")
    target = {"scope": scope, "org": org, "project": project, "key": key, "user_id": user_id}
    budget = Budget.objects.filter(**target).first() or Budget(**target)
    budget.amount_usd, budget.period, budget.hard = amount, period, bool(hard)
    budget.full_clean(validate_constraints=False)
    budget.save()
    return budget


def rate_limit_set(
    *, scope: str, org, rpm: int | None = None, tpm: int | None = None, project=None, key=None, user_id="", model=""
) -> RateLimit:
    for name, value in (("rpm", rpm), ("tpm", tpm)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{name} must be a whole number of zero or more, got {value!r}")
    if rpm is None and tpm is None:
        raise ValueError("a limit needs rpm, tpm or both")
    target = {"scope": scope, "org": org, "project": project, "key": key, "user_id": user_id, "model": model}
    limit = RateLimit.objects.filter(**target).first() or RateLimit(**target)
    limit.rpm, limit.tpm = rpm, tpm
    limit.full_clean(validate_constraints=False)
    limit.save()
    return limit


# --- Rebuilding counters from the request logs -------------------------------------------


@dataclass(frozen=True)
class Rebuilt:
    budget: Budget
    counters: int
    spent_usd: Decimal


def _logs_for(budget: Budget, since: datetime):
    from telemetry.models import RequestLog

    logs = RequestLog.objects.filter(org_id=budget.org.slug, cost__isnull=False)
    if since.year > 1970:
        logs = logs.filter(timestamp__gte=since)
    if budget.scope == Scope.PROJECT or (budget.scope == Scope.USER and budget.project_id):
        logs = logs.filter(project_id=budget.project.slug)
    if budget.scope == Scope.KEY:
        logs = logs.filter(log_data__attributes__metadata__gateway_key_id=budget.key_id)
    return logs


def spent_by_counter(budget: Budget, since: datetime) -> dict[str, Decimal]:
    """Spend per end user for user budgets ("" for any other budget)."""
    logs = _logs_for(budget, since)
    if budget.scope != Scope.USER:
        return {"": logs.aggregate(total=Sum("cost"))["total"] or Decimal(0)}
    if budget.user_id:
        return {budget.user_id: logs.filter(user_id=budget.user_id).aggregate(total=Sum("cost"))["total"] or Decimal(0)}
    overridden = Budget.objects.filter(scope=Scope.USER, org=budget.org, project=budget.project).exclude(user_id="")
    rows = (
        logs.exclude(user_id__isnull=True)
        .exclude(user_id__in=overridden.values("user_id"))
        .values_list("user_id")
        .annotate(total=Sum("cost"))
    )
    return dict(rows)


def budgets_rebuild(*, org=None, release_reservations: bool = False) -> list[Rebuilt]:
    """Set every budget's counter for its current period to the spend the request logs hold.

    Reservations of requests in flight are kept, unless `release_reservations`: then every one goes,
    those a killed worker left with nobody to settle them included (and those of requests still in
    flight, whose budget may admit up to their worst case more until they end). Spend not yet
    exported to the logs is not counted.
    """
    budgets = Budget.objects.select_related("org", "project", "key")
    if org is not None:
        budgets = budgets.filter(org=org)
    at = datetime.fromtimestamp(clock.now(), tz=UTC)
    prefix = key_prefix()
    client = sync_client()
    results = []
    for budget in budgets:
        (rule,) = rules_of(budget, budget.scope)
        start = period_start(budget.period, at)
        end = period_end(budget.period, start)
        spent = spent_by_counter(budget, start)
        label = period_label(budget.period, start)
        pipe = client.pipeline(transaction=True)
        if release_reservations:
            # Every counter of the period (as a pattern: each end user's, those with no logged spend included).
            for key in client.scan_iter(counter_key(prefix, rule, "*", label)):
                pipe.hset(key, "reserved", 0)
        for user_id, total in spent.items():
            key = counter_key(prefix, rule, user_id or None, label)
            pipe.hset(key, "spent", math.ceil(Decimal(total) * Decimal(1_000_000_000)))
            if end is not None:
                pipe.expireat(key, counter_expires_at(end))
        pipe.execute()
        results.append(Rebuilt(budget, len(spent), sum(spent.values(), Decimal(0))))
    return results
