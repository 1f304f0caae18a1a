"""Who may see which org: the one place every dashboard view and query asks.

Staff see every org; owners and members see the orgs they belong to. Anything else is a
404, never a 403, so that a guessed URL does not tell an outsider that an org or a log exists.
Request and response content (prompts, replies) is for the org's own people, and for staff
only with the `telemetry.view_request_content` permission (superusers have it implicitly).
"""

from __future__ import annotations

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from proxy.models import Membership, Organisation, Project
from telemetry.read import REQUEST_CONTENT_PERMISSION


def visible_orgs(*, user) -> QuerySet[Organisation]:
    if not user.is_authenticated or not user.is_active:
        return Organisation.objects.none()
    if user.is_staff:
        return Organisation.objects.all()
    return Organisation.objects.filter(memberships__user=user)


def visible_org_slugs(*, user) -> list[str] | None:
    """The slugs of the orgs `user` may see, or None for every org (staff), logs of deleted orgs included."""
    if user.is_authenticated and user.is_active and user.is_staff:
        return None
    return list(visible_orgs(user=user).values_list("slug", flat=True))


def org_for_user(*, user, org_slug: str) -> Organisation:
    """The org `user` may see, or Http404."""
    return get_object_or_404(visible_orgs(user=user), slug=org_slug)


def project_for_user(*, user, org_slug: str, project_slug: str) -> tuple[Organisation, Project]:
    """The org and project `user` may see, or Http404."""
    org = org_for_user(user=user, org_slug=org_slug)
    return org, get_object_or_404(Project.objects.filter(org=org), slug=project_slug)


def may_see_content(*, user, org: Organisation) -> bool:
    """Whether `user` may read the prompts and replies in `org`'s request logs."""
    if not user.is_authenticated or not user.is_active:
        return False
    if Membership.objects.filter(org=org, user=user).exists():
        return True
    return user.has_perm(REQUEST_CONTENT_PERMISSION)
