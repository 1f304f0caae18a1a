"""Writes for orgs, projects, keys and credentials. Views, admin and commands call these."""

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from proxy.models import GatewayKey, Organisation, Project, ProviderCredential


@dataclass(frozen=True)
class IssuedKey:
    key: GatewayKey
    plaintext: str


def organisation_get_or_create(*, slug: str, name: str = "") -> Organisation:
    org, _ = Organisation.objects.get_or_create(slug=slug, defaults={"name": name or slug})
    return org


def project_get_or_create(*, org: Organisation, slug: str, name: str = "") -> Project:
    project, _ = Project.objects.get_or_create(org=org, slug=slug, defaults={"name": name or slug})
    return project


@transaction.atomic
def gateway_key_issue(
    *, org: Organisation, project: Project | None = None, name: str = "", expires_at: datetime | None = None
) -> IssuedKey:
    """Create a key; the plaintext exists only in the returned value."""
    if project is not None and project.org_id != org.pk:
        raise ValueError("A key can only be pinned to a project of its own org")
    plaintext = GatewayKey.generate_plaintext()
    key = GatewayKey(org=org, project=project, name=name, expires_at=expires_at)
    key.set_plaintext(plaintext)
    key.save()
    return IssuedKey(key=key, plaintext=plaintext)


def gateway_key_revoke(*, key: GatewayKey) -> None:
    """Revoke a key; every gateway process stops accepting it with the next request (see proxy.signals)."""
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])


def provider_credential_set(
    *, org: Organisation, provider: str, api_key: str, base_url: str = ""
) -> ProviderCredential:
    credential = ProviderCredential.objects.filter(org=org, provider=provider).first() or ProviderCredential(
        org=org, provider=provider
    )
    credential.api_key = api_key
    credential.base_url = base_url
    credential.save()
    return credential


def provider_credential_update(
    *, credential: ProviderCredential, base_url: str, api_key: str | None = None
) -> tuple[ProviderCredential, bool]:
    """Change a credential's base URL and/or key; returns it and whether the stored key was dropped.

    `api_key` None keeps the stored key, unless the base URL changes: a key is only ever
    sent where it was entered for, so pointing the credential elsewhere clears it.
    """
    stored_base_url = ProviderCredential.objects.filter(pk=credential.pk).values_list("base_url", flat=True).first()
    dropped = api_key is None and stored_base_url is not None and base_url != stored_base_url
    if api_key is not None:
        credential.api_key = api_key
    elif dropped:
        credential.api_key = ""
    credential.base_url = base_url
    credential.save()
    return credential, dropped
