"""Model groups as the router reads them: an in-memory table, refreshed from the database.

The whole table (groups, their enabled deployments with decrypted keys, their fallbacks) is
small and read on every request, so each process holds it in memory, refreshed every 30 s and
forgotten at once when admin (or the config file) changes a group (proxy.signals).

A request for a model is served by the org's own group of that name, else by the shared group
(no org), else by the single provider the legacy routes choose (proxy.routing), which becomes a
group of one deployment with no retries, cooldowns or fallbacks: exactly today's behaviour.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from functools import lru_cache

from django.core.exceptions import ImproperlyConfigured

from proxy.db import run_in_db_thread
from proxy.providers.registry import PROVIDERS, ProviderSpec
from proxy.routing import Route

logger = logging.getLogger(__name__)

_GROUPS_TTL_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Target:
    """One upstream an attempt can go to: a deployment, or the provider a legacy route chose."""

    provider: ProviderSpec
    upstream_model: str
    # The deployment's name and its id (for cooldowns and load); None for a legacy route.
    name: str | None = None
    key: str | None = None
    base_url: str = ""
    api_key: str = ""
    weight: int = 1
    # The most the model answers with (budgets reserve it for a request without max_tokens); None: unknown.
    max_output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Group:
    name: str | None
    targets: tuple[Target, ...]
    strategy: str = "weighted"
    num_retries: int = 0
    allowed_fails: int = 0
    cooldown_seconds: int = 0
    id: int | None = None
    org_pk: int | None = None
    # trigger -> ids of the groups to fall back to, in order.
    fallbacks: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def cools_down(self) -> bool:
        return self.allowed_fails > 0 and self.cooldown_seconds > 0 and self.key_count > 0

    @property
    def key_count(self) -> int:
        return sum(1 for target in self.targets if target.key is not None)


@lru_cache(maxsize=4096)
def single_target_group(route: Route) -> Group:
    """A legacy route as a group of one: one attempt, no cooldown, no fallback."""
    return Group(name=None, targets=(Target(provider=route.provider, upstream_model=route.upstream_model),))


@dataclass(frozen=True, slots=True)
class GroupTable:
    by_name: dict[tuple[int | None, str], Group]
    by_id: dict[int, Group]

    def find(self, *, org_pk: int, model: str) -> Group | None:
        if not self.by_name:
            return None
        return self.by_name.get((org_pk, model)) or self.by_name.get((None, model))

    def fallbacks(self, group: Group, trigger: str) -> list[Group]:
        """The groups `group` falls back to on `trigger`, in order, that the group's org may use."""
        found = []
        for group_id in group.fallbacks.get(trigger, ()):
            fallback = self.by_id.get(group_id)
            if fallback is not None and fallback.org_pk in (None, group.org_pk) and fallback.targets:
                found.append(fallback)
        return found


_EMPTY = GroupTable(by_name={}, by_id={})
_table = _EMPTY
_loaded_at = float("-inf")


def _deployment_key(deployment) -> str | None:
    """The deployment's key; None when the stored one cannot be decrypted (the encryption key changed)."""
    if deployment.api_key_env:
        return os.environ.get(deployment.api_key_env, "")
    try:
        return deployment.api_key
    except ImproperlyConfigured:
        return None


def load_group_table() -> GroupTable:
    from proxy.models import Deployment, Fallback, ModelGroup

    targets: dict[int, list[Target]] = {}
    for deployment in Deployment.objects.filter(enabled=True, weight__gt=0).order_by("group_id", "name"):
        spec = PROVIDERS.get(deployment.provider)
        api_key = _deployment_key(deployment)
        if spec is None or api_key is None:
            # One unusable deployment must not take its group, or every group, down with it.
            reason = "its key cannot be decrypted" if spec is not None else f"unknown provider {deployment.provider!r}"
            logger.error(
                "router: deployment %s of group %s is skipped: %s", deployment.name, deployment.group_id, reason
            )
            continue
        targets.setdefault(deployment.group_id, []).append(
            Target(
                provider=spec,
                upstream_model=deployment.upstream_model,
                name=deployment.name,
                key=f"deployment:{deployment.pk}",
                base_url=deployment.base_url.rstrip("/"),
                api_key=api_key,
                weight=deployment.weight,
                max_output_tokens=deployment.max_output_tokens,
            )
        )
    fallbacks: dict[int, dict[str, list[int]]] = {}
    for group_id, trigger, to_group_id in Fallback.objects.order_by(
        "group_id", "trigger", "position", "pk"
    ).values_list("group_id", "trigger", "to_group_id"):
        if to_group_id != group_id:
            fallbacks.setdefault(group_id, {}).setdefault(trigger, []).append(to_group_id)
    by_name, by_id = {}, {}
    for row in ModelGroup.objects.all():
        group = Group(
            name=row.name,
            targets=tuple(targets.get(row.pk, ())),
            strategy=row.strategy,
            num_retries=row.num_retries,
            allowed_fails=row.allowed_fails,
            cooldown_seconds=row.cooldown_seconds,
            id=row.pk,
            org_pk=row.org_id,
            fallbacks={trigger: tuple(ids) for trigger, ids in fallbacks.get(row.pk, {}).items()},
        )
        by_name[(row.org_id, row.name)] = group
        by_id[row.pk] = group
    return GroupTable(by_name=by_name, by_id=by_id)


async def group_table() -> GroupTable:
    global _table, _loaded_at
    if time.monotonic() - _loaded_at > _GROUPS_TTL_SECONDS:
        _table = await run_in_db_thread(load_group_table)
        _loaded_at = time.monotonic()
    return _table


def forget_groups() -> None:
    global _loaded_at
    _loaded_at = float("-inf")


def group_model_names() -> set[str]:
    """Every model name the groups answer to or send upstream (metric labels know them)."""
    from proxy.models import Deployment, ModelGroup

    return set(ModelGroup.objects.values_list("name", flat=True)) | set(
        Deployment.objects.values_list("upstream_model", flat=True)
    )
