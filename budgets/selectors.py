"""Reads for the budgets page: each budget's use this period, and the requests refused by each limit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db.models import Count

from budgets import clock
from budgets.counters import key_prefix, sync_client
from budgets.enforcement import counter_key
from budgets.models import Budget, RateLimit, Scope
from budgets.periods import period_end, period_label, period_start
from budgets.plans import NANO, rules_of


@dataclass(frozen=True)
class BudgetUse:
    budget: Budget
    user_id: str  # the end user, for per-user budgets ("" otherwise)
    used_usd: Decimal  # spent, plus what requests in flight have reserved
    period_start: datetime
    period_end: datetime | None
    live: bool  # read from the counters, not estimated from the logs

    @property
    def remaining_usd(self) -> Decimal:
        return max(self.budget.amount_usd - self.used_usd, Decimal(0))

    @property
    def percent(self) -> float:
        amount = self.budget.amount_usd
        return float(self.used_usd / amount * 100) if amount else 100.0


def _counter_use(client, budget: Budget, label: str) -> dict[str, Decimal]:
    (rule,) = rules_of(budget, budget.scope)
    if rule.per_user and not budget.user_id:
        pattern = counter_key(key_prefix(), rule, "*", label)
        keys = list(client.scan_iter(pattern, count=1000))
    else:
        keys = [counter_key(key_prefix(), rule, budget.user_id or None, label).encode()]
    use = {}
    for key, values in zip(keys, [client.hgetall(key) for key in keys], strict=True):
        if not values:
            continue
        user = key.decode().split(":u:", 1)[1].rsplit(":", 1)[0] if rule.per_user else ""
        total = int(values.get(b"spent", 0)) + max(int(values.get(b"reserved", 0)), 0)
        use[user] = Decimal(total) / NANO
    return use


def budget_usage(*, org) -> list[BudgetUse]:
    """Every budget of `org` with its use this period (per end user for per-user budgets)."""
    from redis.exceptions import RedisError

    from budgets.services import spent_by_counter

    at = datetime.fromtimestamp(clock.now(), tz=UTC)
    rows = []
    budgets = Budget.objects.filter(org=org).select_related("org", "project", "key").order_by("scope", "id")
    for budget in budgets:
        start = period_start(budget.period, at)
        end = period_end(budget.period, start)
        try:
            use, live = _counter_use(sync_client(), budget, period_label(budget.period, start)), True
        except (OSError, RedisError):
            use, live = spent_by_counter(budget, start), False
        if not use:
            use = {budget.user_id: Decimal(0)}
        for user_id, used in sorted(use.items()):
            rows.append(BudgetUse(budget, user_id, used, start, end, live))
    return rows


def rate_limits(*, org) -> list[RateLimit]:
    return list(RateLimit.objects.filter(org=org).select_related("org", "project", "key").order_by("scope", "id"))


def refusals_by_limit(*, org, days: int = 7) -> list[dict]:
    """How many requests each limit or budget refused over the last `days`, most first."""
    from telemetry.models import RequestLog

    since = datetime.fromtimestamp(clock.now(), tz=UTC) - timedelta(days=days)
    field = "log_data__attributes__metadata__limit_refused"
    rows = (
        RequestLog.objects.filter(org_id=org.slug, timestamp__gte=since, status_code=429)
        .exclude(**{f"{field}__isnull": True})
        .values(field)
        .annotate(refused=Count("id"))
        .order_by("-refused")
    )
    return [{"limit": row[field], "refused": row["refused"]} for row in rows]


SCOPE_LABELS = dict(Scope.choices)
