"""Choosing the provider for a request that no model group serves (see proxy.router).

In order: the `x-provider` header; a `provider/model` prefix on the model; a
model route from admin; Claude models go to Anthropic; the default provider.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings

from proxy.db import run_in_db_thread
from proxy.errors import invalid_request
from proxy.providers.registry import PROVIDERS, ProviderSpec

_ROUTES_TTL_SECONDS = 30.0
_routes: dict[str, tuple[str, str]] = {}
_routes_loaded_at = float("-inf")


@dataclass(frozen=True, slots=True)
class Route:
    provider: ProviderSpec
    upstream_model: str


def _load_routes() -> dict[str, tuple[str, str]]:
    from proxy.models import ModelRoute

    return {
        name: (provider, upstream or name)
        for name, provider, upstream in ModelRoute.objects.values_list("model_name", "provider", "upstream_model")
    }


def routed_model_names() -> set[str]:
    """Every model name the admin's routes mention, asked for or sent upstream (metric labels know them)."""
    return {name for pair in _load_routes().items() for name in (pair[0], pair[1][1]) if name}


async def _model_routes() -> dict[str, tuple[str, str]]:
    # The whole table is small and read on every request, so it is held in memory and refreshed every 30 s.
    global _routes, _routes_loaded_at
    if time.monotonic() - _routes_loaded_at > _ROUTES_TTL_SECONDS:
        _routes = await run_in_db_thread(
            _load_routes,
        )
        _routes_loaded_at = time.monotonic()
    return _routes


def forget_routes() -> None:
    global _routes_loaded_at
    _routes_loaded_at = float("-inf")


def _provider(name: str) -> ProviderSpec:
    spec = PROVIDERS.get(name.lower())
    if spec is None:
        known = ", ".join(sorted(PROVIDERS))
        raise invalid_request(f"Unknown provider {name!r}. Known providers: {known}.", code="unknown_provider")
    return spec


async def choose_route(*, model: str, provider_header: str | None) -> Route:
    if provider_header:
        return Route(_provider(provider_header), model)
    prefix, slash, rest = model.partition("/")
    if slash and prefix.lower() in PROVIDERS and rest:
        return Route(PROVIDERS[prefix.lower()], rest)
    routes = await _model_routes()
    if model in routes:
        provider, upstream_model = routes[model]
        return Route(_provider(provider), upstream_model)
    if model.startswith("claude"):
        return Route(PROVIDERS["anthropic"], model)
    return Route(_provider(settings.GATEWAY_DEFAULT_PROVIDER), model)
