"""Who is calling: the gateway key, and the org, project and user it may book requests to."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings

from proxy import invalidation
from proxy.db import run_in_db_thread
from proxy.errors import GatewayError, invalid_request
from proxy.key_usage import last_used
from proxy.models import GATEWAY_KEY_PREFIX, GatewayKey, Project, hash_gateway_key, looks_like_gateway_key
from proxy.ttl_cache import TTLCache

_MISSING = object()
_NEGATIVE_TTL_SECONDS = 5.0
_ID_HEADER_MAX_LENGTH = 200


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """What a valid gateway key allows."""

    key_id: int
    org_pk: int
    org_slug: str
    project_slug: str | None
    project_name: str | None
    content_logging: str
    expires_at: float | None = None  # a Unix time, so that the check on every request is one comparison


@dataclass(frozen=True, slots=True)
class ProjectInfo:
    slug: str
    name: str
    content_logging: str


@dataclass(frozen=True, slots=True)
class Attribution:
    grant: KeyGrant
    org_slug: str
    project: ProjectInfo | None
    user_id: str | None
    experiment_id: str | None
    thread_id: str | None

    @property
    def content_logging(self) -> str:
        return self.project.content_logging if self.project else self.grant.content_logging


_keys = TTLCache(ttl=settings.GATEWAY_KEY_CACHE_SECONDS)
# Unknown and revoked keys have a cache of their own, so that a flood of them cannot push valid keys out.
_unknown_keys = TTLCache(ttl=_NEGATIVE_TTL_SECONDS, max_entries=settings.GATEWAY_KEY_NEGATIVE_CACHE_MAX)
_projects = TTLCache(ttl=settings.GATEWAY_KEY_CACHE_SECONDS)


def clear_caches() -> None:
    _keys.clear()
    _unknown_keys.clear()
    _projects.clear()
    last_used.forget()


def _invalidated(topic: str, value: str) -> None:
    if topic == "key":
        _keys.pop(value)
        _unknown_keys.pop(value)
    elif topic in ("tenancy", invalidation.EVERYTHING):  # grants carry org and project: none can be trusted
        _keys.clear()
        _unknown_keys.clear()
        _projects.clear()


invalidation.on_invalidation(_invalidated)


def _load_grant(key_hash: str) -> KeyGrant | None:
    key = (
        GatewayKey.objects.active()
        .select_related("org", "project")
        .filter(key_hash=key_hash)
        .only(
            "id",
            "expires_at",
            "org__id",
            "org__slug",
            "project__slug",
            "project__name",
            "project__content_logging",
        )
        .first()
    )
    if key is None:
        return None
    project = key.project
    return KeyGrant(
        key_id=key.pk,
        org_pk=key.org.pk,
        org_slug=key.org.slug,
        project_slug=project.slug if project else None,
        project_name=project.name if project else None,
        content_logging=project.content_logging if project else Project.ContentLogging.FULL,
        expires_at=key.expires_at.timestamp() if key.expires_at else None,
    )


def _load_project(org_pk: int, slug: str) -> ProjectInfo | None:
    row = Project.objects.filter(org_id=org_pk, slug=slug).values_list("slug", "name", "content_logging").first()
    return ProjectInfo(*row) if row else None


def presented_key(request, *, prefer_anthropic: bool) -> str | None:
    """The gateway key as the SDKs send it: a bearer token (OpenAI) or `x-api-key` (Anthropic)."""
    authorization = request.headers.get("authorization", "")
    bearer = authorization[7:].strip() if authorization[:7].lower() == "bearer " else None
    api_key = request.headers.get("x-api-key")
    first, second = (api_key, bearer) if prefer_anthropic else (bearer, api_key)
    return first or second or None


async def authenticate_key(plaintext: str | None) -> KeyGrant:
    if not plaintext:
        raise GatewayError(
            "No gateway key: send it as the API key (Authorization: Bearer … or x-api-key).",
            kind="authentication",
            code="missing_api_key",
        )
    if not looks_like_gateway_key(plaintext):
        # Refused before any lookup: malformed keys never reach the database or a cache.
        raise GatewayError(
            f"Invalid gateway key: gateway keys start with {GATEWAY_KEY_PREFIX!r} and are 46 characters long.",
            kind="authentication",
            code="invalid_api_key",
        )
    invalidation.listener.ensure_running()
    key_hash = hash_gateway_key(plaintext)
    grant = _keys.get(key_hash)
    if grant is None:
        if _unknown_keys.get(key_hash) is not None:
            raise _invalid_key()
        grant = await run_in_db_thread(_load_grant, key_hash)
        if grant is None:
            _unknown_keys.set(key_hash, True)
            raise _invalid_key()
        _keys.set(key_hash, grant)
    if grant.expires_at is not None and grant.expires_at <= time.time():
        expired = datetime.fromtimestamp(grant.expires_at, tz=UTC).isoformat(timespec="seconds")
        raise GatewayError(
            f"This gateway key expired at {expired.replace('+00:00', 'Z')}. Ask for a new key.",
            kind="authentication",
            code="expired_api_key",
        )
    last_used.seen(grant.key_id)
    return grant


def _invalid_key() -> GatewayError:
    return GatewayError("Invalid or revoked gateway key.", kind="authentication", code="invalid_api_key")


async def _project(org_pk: int, slug: str) -> ProjectInfo | None:
    cache_key = (org_pk, slug)
    project = _projects.get(cache_key, _MISSING)
    if project is _MISSING:
        project = await run_in_db_thread(_load_project, org_pk, slug)
        _projects.set(cache_key, project, ttl=None if project else _NEGATIVE_TTL_SECONDS)
    return project


def _header_text(headers, name: str) -> str | None:
    """A header's value as text. Clients send UTF-8; Django hands every header over decoded as latin-1."""
    value = headers.get(name)
    if not value:
        return None
    if not value.isascii():
        try:
            value = value.encode("latin-1").decode("utf-8")
        except UnicodeDecodeError:
            raise invalid_request(f"The {name} header is not valid UTF-8.", code="invalid_header") from None
    if not value.isprintable():
        raise invalid_request(f"The {name} header holds control characters.", code="invalid_header")
    return value


def _id_header(headers, name: str, *, max_length: int = _ID_HEADER_MAX_LENGTH) -> str | None:
    value = _header_text(headers, name)
    if value is not None and len(value) > max_length:
        raise invalid_request(f"The {name} header is longer than {max_length} characters.", code="header_too_long")
    return value


def _org_header(headers) -> str | None:
    british, american = _header_text(headers, "x-organisation-id"), _header_text(headers, "x-organization-id")
    if british and american and british != american:
        raise invalid_request(
            "x-organisation-id and x-organization-id name different organisations.", code="conflicting_headers"
        )
    return british or american


async def attribute(request, grant: KeyGrant) -> Attribution:
    """Check the attribution headers against what the key allows; a header can never widen the key's scope."""
    headers = request.headers
    org_header = _org_header(headers)
    if org_header and org_header != grant.org_slug:
        raise GatewayError(
            f"This key does not belong to organisation {org_header!r}.", kind="permission", code="org_forbidden"
        )
    project_header = _id_header(headers, "x-project-id")
    project = None
    if grant.project_slug is not None:
        if project_header and project_header != grant.project_slug:
            raise GatewayError(
                f"This key is pinned to project {grant.project_slug!r}, not {project_header!r}.",
                kind="permission",
                code="project_forbidden",
            )
        project = ProjectInfo(grant.project_slug, grant.project_name or grant.project_slug, grant.content_logging)
    elif project_header:
        project = await _project(grant.org_pk, project_header)
        if project is None:
            raise GatewayError(
                f"Project {project_header!r} is not in organisation {grant.org_slug!r}.",
                kind="permission",
                code="project_forbidden",
            )
    return Attribution(
        grant=grant,
        org_slug=grant.org_slug,
        project=project,
        user_id=_id_header(headers, "x-user-id", max_length=settings.GATEWAY_USER_ID_MAX_LENGTH),
        experiment_id=_id_header(headers, "x-experiment-id"),
        thread_id=_id_header(headers, "x-thread-id"),
    )
