"""The router: which upstream serves a request, and what happens when it fails.

    groups.py      model groups and their deployments, held in memory (legacy routes: a group of one)
    strategies.py  choosing a deployment: weighted random, least busy, lowest latency
    cooldowns.py   deployments skipped after repeated failures, shared through Redis, local without it
    outcomes.py    what an attempt's answer means: success, retryable, context window, content policy
    attempts.py    the attempt loop: retries, backoff, Retry-After, fallbacks to other groups

The view asks `plan_route` for a plan and hands it to `serve` with a way to open an adapter
for a deployment; every attempt is one `ProviderAdapter.forward`.
"""

from __future__ import annotations

from proxy.router.attempts import Call, RoutePlan, serve
from proxy.router.groups import Target, group_table, single_target_group
from proxy.routing import choose_route

__all__ = ["Call", "RoutePlan", "Target", "plan_route", "serve"]


async def plan_route(*, model: str, org_pk: int, provider_header: str | None) -> RoutePlan:
    """The org's group for `model`, else the shared one; else the legacy route as a group of one.

    An `x-provider` header is the caller choosing the provider, so it bypasses the groups.
    """
    if not provider_header:
        table = await group_table()
        group = table.find(org_pk=org_pk, model=model)
        if group is not None:
            return RoutePlan(group, table)
    route = await choose_route(model=model, provider_header=provider_header)
    return RoutePlan(single_target_group(route))
