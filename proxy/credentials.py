"""Which provider key and base URL a request is sent with.

The caller's own key (`x-provider-api-key`, never stored) wins over the org's
credential from admin, which wins over the deployment-wide `<NAME>_API_KEY`.
"""

from __future__ import annotations

from django.conf import settings

from proxy.db import run_in_db_thread
from proxy.providers.registry import ProviderSpec
from proxy.ttl_cache import TTLCache

_MISSING = object()
_org_credentials = TTLCache(ttl=settings.GATEWAY_KEY_CACHE_SECONDS)


def _load_credential(org_pk: int, provider: str) -> tuple[str, str] | None:
    from proxy.models import ProviderCredential

    credential = ProviderCredential.objects.filter(org_id=org_pk, provider=provider).first()
    return (credential.api_key, credential.base_url) if credential else None


async def upstream_credentials(*, org_pk: int, spec: ProviderSpec, caller_key: str | None) -> tuple[str, str]:
    """(api key, base URL) for this org and provider."""
    cache_key = (org_pk, spec.name)
    stored = _org_credentials.get(cache_key, _MISSING)
    if stored is _MISSING:
        stored = await run_in_db_thread(_load_credential, org_pk, spec.name)
        _org_credentials.set(cache_key, stored)
    org_key, org_base_url = stored or ("", "")
    # The deployment-wide key goes only to the provider's own URL, never to an org's base URL.
    api_key = caller_key or org_key or ("" if org_base_url else spec.deployment_key())
    base_url = (org_base_url or spec.base_url()).rstrip("/")
    return api_key, base_url


def forget_credentials() -> None:
    _org_credentials.clear()


async def target_credentials(target, *, org_pk: int, caller_key: str | None) -> tuple[str, str]:
    """(api key, base URL) for one router target (proxy.router.groups.Target).

    A deployment's own key and base URL win. A deployment with a base URL of its own but no key
    gets the caller's key only: the org's and the deployment-wide keys were entered for other URLs.
    """
    if target.base_url:
        return target.api_key or caller_key or "", target.base_url
    if target.api_key:
        return target.api_key, target.provider.base_url().rstrip("/")
    return await upstream_credentials(org_pk=org_pk, spec=target.provider, caller_key=caller_key)
