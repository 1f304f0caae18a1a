"""The gateway's own model catalog: the model names a gateway key may send, in OpenAI's or Anthropic's shape.

A key's org sees its own model groups, the shared ones (no org) and the model routes; an org's
group shadows a shared group of the same name, as it does when requests are routed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from django.db.models import F

from proxy.models import ModelGroup, ModelRoute

# Who a shared group belongs to, in OpenAI's `owned_by`.
SHARED_OWNER = "tollgate"
ANTHROPIC_DEFAULT_LIMIT = 20
ANTHROPIC_MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class CatalogModel:
    id: str
    created: int  # Unix seconds; 0 where unknown (routes keep no date)
    owned_by: str

    def openai(self) -> dict:
        return {"id": self.id, "object": "model", "created": self.created, "owned_by": self.owned_by}

    def anthropic(self) -> dict:
        created_at = datetime.fromtimestamp(self.created, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"type": "model", "id": self.id, "display_name": self.id, "created_at": created_at}


def model_catalog(*, org_pk: int) -> list[CatalogModel]:
    """What a key of the org `org_pk` may ask for, by name."""
    found: dict[str, CatalogModel] = {}
    groups = ModelGroup.objects.filter(org_id=org_pk) | ModelGroup.objects.filter(org__isnull=True)
    # The org's own groups first, so that they win over a shared group of the same name.
    ordered = groups.order_by(F("org_id").asc(nulls_last=True), "name")
    for name, created_at, org_slug in ordered.values_list("name", "created_at", "org__slug"):
        found.setdefault(name, CatalogModel(name, int(created_at.timestamp()), org_slug or SHARED_OWNER))
    for name, provider in ModelRoute.objects.values_list("model_name", "provider"):
        found.setdefault(name, CatalogModel(name, 0, provider))
    return sorted(found.values(), key=lambda model: model.id)


def openai_list(models: list[CatalogModel]) -> dict:
    return {"object": "list", "data": [model.openai() for model in models]}


def anthropic_page(models: list[CatalogModel], *, limit: int, after_id: str | None, before_id: str | None) -> dict:
    """One page of Anthropic's list; an unknown cursor gives an empty page."""
    ids = [model.id for model in models]
    if after_id is not None:
        start = ids.index(after_id) + 1 if after_id in ids else len(ids)
        page, has_more = models[start : start + limit], start + limit < len(models)
    elif before_id is not None:
        end = ids.index(before_id) if before_id in ids else 0
        page, has_more = models[max(0, end - limit) : end], end - limit > 0
    else:
        page, has_more = models[:limit], limit < len(models)
    return {
        "data": [model.anthropic() for model in page],
        "has_more": has_more,
        "first_id": page[0].id if page else None,
        "last_id": page[-1].id if page else None,
    }
