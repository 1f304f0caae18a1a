"""Which limits and budgets apply to a request: each org's rows, held in memory per process.

An org's plan is loaded on its first request and kept until a budget or limit changes (every
process forgets it at once, through `proxy.invalidation`) or GATEWAY_KEY_CACHE_SECONDS pass.
An org without any rows has an empty plan, so its requests skip Redis altogether.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings

from proxy import invalidation
from proxy.db import run_in_db_thread
from proxy.ttl_cache import TTLCache

NANO = Decimal(1_000_000_000)  # counters hold nano-USD, integers Redis adds exactly
TOPIC = "budgets"


@dataclass(frozen=True, slots=True)
class Rule:
    """One counter a request may be checked against."""

    id: int
    kind: str  # "budget", "rpm" or "tpm"
    scope: str  # org, project, key, user or model: names the refusal ("project_budget", "key_rpm")
    limit: int  # nano-USD for a budget, requests or tokens otherwise
    period: str = ""
    hard: bool = True
    per_user: bool = False  # one counter per end user

    @property
    def name(self) -> str:
        return f"{self.scope}_{self.kind}"


@dataclass(slots=True)
class OrgPlan:
    org: list[Rule] = field(default_factory=list)
    projects: dict[str, list[Rule]] = field(default_factory=dict)
    keys: dict[int, list[Rule]] = field(default_factory=dict)
    models: dict[str, list[Rule]] = field(default_factory=dict)
    # End users: the default per project (None: the org's), and overrides per (project, user).
    user_defaults: dict[str | None, list[Rule]] = field(default_factory=dict)
    user_overrides: dict[tuple[str | None, str], list[Rule]] = field(default_factory=dict)
    # The admissions worked out for this plan (budgets.enforcement.Template), forgotten with it.
    templates: dict = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.org or self.projects or self.keys or self.models or self.user_defaults or self.user_overrides)

    def rules_for(self, *, project: str | None, key_id: int, user_id: str | None, model: str) -> list[Rule]:
        rules = [*self.org, *self.projects.get(project, ()), *self.keys.get(key_id, ()), *self.models.get(model, ())]
        if user_id is not None and (self.user_defaults or self.user_overrides):
            for within in {None, project}:
                rules.extend(
                    _overridden(self.user_defaults.get(within, ()), self.user_overrides.get((within, user_id), ()))
                )
        return rules


def _overridden(defaults, overrides) -> list[Rule]:
    kinds = {rule.kind for rule in overrides}
    return [*overrides, *(rule for rule in defaults if rule.kind not in kinds)]


def rules_of(row, scope: str) -> list[Rule]:
    from budgets.models import Budget

    per_user = scope == "user"
    if isinstance(row, Budget):
        limit = int(row.amount_usd * NANO)
        return [Rule(row.pk, "budget", scope, limit, row.period, row.hard, per_user)]
    return [
        Rule(row.pk, kind, scope, value, per_user=per_user)
        for kind, value in (("rpm", row.rpm), ("tpm", row.tpm))
        if value is not None
    ]


def load_plan(org_pk: int) -> OrgPlan:
    from budgets.models import Budget, RateLimit

    plan = OrgPlan()
    rows = [
        *Budget.objects.filter(org_id=org_pk).select_related("project"),
        *RateLimit.objects.filter(org_id=org_pk).select_related("project"),
    ]
    for row in rows:
        model = getattr(row, "model", "")
        project = row.project.slug if row.project_id else None
        rules = rules_of(row, "model" if model else row.scope)
        if model:  # model limits are org-wide (RateLimit.clean)
            target = plan.models.setdefault(model, [])
        elif row.scope == "user":
            if row.user_id:
                target = plan.user_overrides.setdefault((project, row.user_id), [])
            else:
                target = plan.user_defaults.setdefault(project, [])
        elif row.scope == "org":
            target = plan.org
        elif row.scope == "project":
            target = plan.projects.setdefault(project, [])
        else:
            target = plan.keys.setdefault(row.key_id, [])
        target.extend(rules)
    return plan


_plans = TTLCache(ttl=settings.GATEWAY_KEY_CACHE_SECONDS)


def cached_plan(org_pk: int) -> OrgPlan | None:
    """The org's plan if this process holds it: the hot path's way in, without a coroutine."""
    return _plans.get(org_pk)


async def plan_for(org_pk: int) -> OrgPlan:
    plan = _plans.get(org_pk)
    if plan is None:
        plan = await run_in_db_thread(load_plan, org_pk)
        _plans.set(org_pk, plan)
    return plan


def forget_plans() -> None:
    _plans.clear()


def _invalidated(topic: str, value: str) -> None:
    if topic in (TOPIC, "tenancy", invalidation.EVERYTHING):
        _plans.clear()


invalidation.on_invalidation(_invalidated)
