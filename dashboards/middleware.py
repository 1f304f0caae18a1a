"""The viewer's time zone, active for the whole of a dashboard request."""

from __future__ import annotations

from django.utils import timezone

from dashboards import selectors


def time_zone_middleware(get_response):
    """Activates the signed-in user's time zone (UTC until one is saved), so that every date a
    page, chart or CSV shows is in it. Only the dashboards' routes come here: the proxy's are
    served without this middleware (PROXY_MIDDLEWARE)."""

    def middleware(request):
        zone = selectors.user_time_zone(user=request.user) if hasattr(request, "user") else None
        # For the header's picker: whether to offer the browser's own zone on this visit.
        request.time_zone_saved = zone is not None
        if zone is None:
            timezone.deactivate()
            return get_response(request)
        with timezone.override(zone):
            return get_response(request)

    return middleware
