"""What every dashboard page's header needs: the time zone picker."""

from __future__ import annotations

import functools

from django.utils import timezone

from dashboards import selectors


@functools.cache
def _names() -> list[str]:
    return sorted(selectors.time_zone_names())


def time_zone(request) -> dict:
    return {
        "time_zone_name": timezone.get_current_timezone_name(),
        "time_zone_names": _names(),
        "time_zone_saved": getattr(request, "time_zone_saved", False),
    }
