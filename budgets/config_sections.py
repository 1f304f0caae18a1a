"""The config file's `budget`, `limits`, `user_budget` and `user_limits` keys of orgs and projects.

    budget: {usd: 10, period: month, hard: true}
    limits: {rpm: 600, tpm: 200000}
    user_budget: {usd: 1, period: day, hard: true, overrides: {alice: {usd: 5}}}
    user_limits: {rpm: 60, overrides: {alice: {rpm: 600}}}

A key left out removes what it would set: the file describes the whole entry.
"""

from __future__ import annotations

from decimal import Decimal

from budgets import services
from budgets.models import Budget, Period, RateLimit, Scope
from gateway_project.config_file.sections import register_entry_section

_BUDGET_FIELDS = {"usd", "period", "hard"}
_LIMIT_FIELDS = {"rpm", "tpm"}


def _mapping(value, where: str, allowed: set[str]) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping, got {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown keys {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    return value


def _usd(value, where: str):
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{where}.usd must be a number, got {value!r}")
    try:
        return Decimal(str(value))
    except ArithmeticError:
        raise ValueError(f"{where}.usd must be a number, got {value!r}") from None


def _owner(instance) -> dict:
    from proxy.models import Project

    if isinstance(instance, Project):
        return {"org": instance.org, "project": instance}
    return {"org": instance, "project": None}


def _set_budget(scope: str, owner: dict, value: dict, where: str, user_id: str = "") -> Budget:
    _mapping(value, where, _BUDGET_FIELDS)
    if "usd" not in value:
        raise ValueError(f"{where}.usd is required")
    period = value.get("period", Period.MONTH)
    hard = value.get("hard", True)
    if not isinstance(hard, bool):
        raise ValueError(f"{where}.hard must be true or false, got {hard!r}")
    return services.budget_set(
        scope=scope, usd=_usd(value["usd"], where), period=period, hard=hard, user_id=user_id, **owner
    )


def _set_limit(scope: str, owner: dict, value: dict, where: str, user_id: str = "") -> RateLimit:
    _mapping(value, where, _LIMIT_FIELDS)
    return services.rate_limit_set(scope=scope, rpm=value.get("rpm"), tpm=value.get("tpm"), user_id=user_id, **owner)


def _scope_of(owner: dict) -> str:
    return Scope.PROJECT if owner["project"] is not None else Scope.ORG


def apply_budget(instance, value) -> None:
    owner = _owner(instance)
    scope = _scope_of(owner)
    if value is None:
        Budget.objects.filter(scope=scope, user_id="", key=None, **owner).delete()
        return
    _set_budget(scope, owner, value, "budget")


def apply_limits(instance, value) -> None:
    owner = _owner(instance)
    scope = _scope_of(owner)
    if value is None:
        RateLimit.objects.filter(scope=scope, user_id="", key=None, model="", **owner).delete()
        return
    _set_limit(scope, owner, value, "limits")


def _apply_users(model, setter, fields: set[str], key: str):
    def apply(instance, value) -> None:
        owner = _owner(instance)
        rows = model.objects.filter(scope=Scope.USER, **owner)
        if value is None:
            rows.delete()
            return
        _mapping(value, key, fields | {"overrides"})
        overrides = value.get("overrides") or {}
        if not isinstance(overrides, dict):
            raise ValueError(f"{key}.overrides must map user ids to settings")
        default = {name: value[name] for name in fields if name in value}
        kept = []
        if default:
            kept.append(setter(Scope.USER, owner, default, key).pk)
        for user_id, settings in overrides.items():
            if not isinstance(user_id, str) or not user_id:
                raise ValueError(f"{key}.overrides: user ids must be non-empty strings, got {user_id!r}")
            kept.append(setter(Scope.USER, owner, settings, f"{key}.overrides.{user_id}", user_id=user_id).pk)
        rows.exclude(pk__in=kept).delete()

    return apply


def _budget_value(budget: Budget) -> dict:
    amount = budget.amount_usd.normalize()
    usd = int(amount) if amount == amount.to_integral_value() else float(amount)
    return {"usd": usd, "period": budget.period, "hard": budget.hard}


def _limit_value(limit: RateLimit) -> dict:
    return {name: getattr(limit, name) for name in ("rpm", "tpm") if getattr(limit, name) is not None}


def export_budget(instance):
    owner = _owner(instance)
    budget = Budget.objects.filter(scope=_scope_of(owner), user_id="", key=None, **owner).first()
    return _budget_value(budget) if budget else None


def export_limits(instance):
    owner = _owner(instance)
    limit = RateLimit.objects.filter(scope=_scope_of(owner), user_id="", key=None, model="", **owner).first()
    return _limit_value(limit) if limit else None


def _export_users(model, render):
    def export(instance):
        rows = list(model.objects.filter(scope=Scope.USER, **_owner(instance)).order_by("user_id"))
        if not rows:
            return None
        value = {}
        overrides = {}
        for row in rows:
            if row.user_id:
                overrides[row.user_id] = render(row)
            else:
                value.update(render(row))
        if overrides:
            value["overrides"] = overrides
        return value

    return export


apply_user_budget = _apply_users(Budget, _set_budget, _BUDGET_FIELDS, "user_budget")
apply_user_limits = _apply_users(RateLimit, _set_limit, _LIMIT_FIELDS, "user_limits")
export_user_budget = _export_users(Budget, _budget_value)
export_user_limits = _export_users(RateLimit, _limit_value)


def register() -> None:
    for kind in ("org", "project"):
        register_entry_section(kind, "budget", apply=apply_budget, export=export_budget)
        register_entry_section(kind, "limits", apply=apply_limits, export=export_limits)
        register_entry_section(kind, "user_budget", apply=apply_user_budget, export=export_user_budget)
        register_entry_section(kind, "user_limits", apply=apply_user_limits, export=export_user_limits)
