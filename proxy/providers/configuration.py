"""Which providers can be called as configured, for the start-up summary.

A provider gets its key from the caller (`x-provider-api-key`), an org's credential in admin or
the deployment's `<NAME>_API_KEY`, and its base URL from an org's credential, `<NAME>_BASE_URL`
or the registry's default. Providers nobody set anything for share one line; a provider someone
did configure, and the default provider, get a warning of their own for what is still missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from proxy.providers.registry import PROVIDERS, ProviderSpec

# Local OpenAI-compatible servers (Ollama, vLLM) usually take no key.
KEYLESS_PROVIDERS = frozenset({"custom"})


@dataclass(frozen=True)
class ProviderStatus:
    spec: ProviderSpec
    env_key: bool
    env_base_url: bool
    orgs_with_key: int
    orgs_with_base_url: int

    @property
    def has_key(self) -> bool:
        return self.env_key or self.orgs_with_key > 0

    @property
    def has_base_url(self) -> bool:
        return self.env_base_url or bool(self.spec.default_base_url) or self.orgs_with_base_url > 0

    @property
    def configured(self) -> bool:
        return self.env_key or self.env_base_url or self.orgs_with_key > 0 or self.orgs_with_base_url > 0


def provider_statuses() -> list[ProviderStatus]:
    from proxy.models import ProviderCredential

    with_key: dict[str, int] = {}
    with_base_url: dict[str, int] = {}
    for provider, encrypted, base_url in ProviderCredential.objects.values_list(
        "provider", "api_key_encrypted", "base_url"
    ):
        with_key[provider] = with_key.get(provider, 0) + bool(encrypted)
        with_base_url[provider] = with_base_url.get(provider, 0) + bool(base_url)
    return [
        ProviderStatus(
            spec=spec,
            env_key=bool(os.environ.get(f"{spec.env_prefix}_API_KEY")),
            env_base_url=bool(os.environ.get(f"{spec.env_prefix}_BASE_URL")),
            orgs_with_key=with_key.get(name, 0),
            orgs_with_base_url=with_base_url.get(name, 0),
        )
        for name, spec in PROVIDERS.items()
    ]


def configuration_notes(*, default_provider: str) -> list[str]:
    """Lines for the start-up summary: a warning per provider that is in use but incomplete, then a summary."""
    notes, ready, unconfigured = [], [], []
    for status in provider_statuses():
        name, prefix = status.spec.name, status.spec.env_prefix
        in_use = status.configured or name == default_provider
        role = f"{name}, the default provider," if name == default_provider else name
        if in_use and not status.has_base_url:
            notes.append(f"WARNING {role} has no base URL: set {prefix}_BASE_URL or an org's base URL in admin")
        if in_use and not status.has_key and name not in KEYLESS_PROVIDERS:
            notes.append(
                f"WARNING {role} has no key: set {prefix}_API_KEY or add a provider credential in admin "
                "(until then callers must send their own in x-provider-api-key)"
            )
        if status.configured and status.has_base_url and (status.has_key or name in KEYLESS_PROVIDERS):
            ready.append(name)
        elif not in_use:
            unconfigured.append(name)
    if ready:
        notes.append(f"Providers ready: {', '.join(ready)}")
    if unconfigured:
        notes.append(f"Providers not configured (no <NAME>_API_KEY, no credential in admin): {', '.join(unconfigured)}")
    return notes
