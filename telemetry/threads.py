"""Reads of one conversation thread's request logs, for the dashboards' thread page.

A thread is the requests an org's caller sent with one thread id. They are read in the order
they were made, through the partial (org_id, thread_id, timestamp) index, a page at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q

from telemetry.models import RequestLog


@dataclass(frozen=True)
class ThreadPage:
    requests: list[RequestLog]
    # Where the next page starts (the last row's timestamp and id), or None on the last page.
    after: tuple[datetime, str] | None


def thread_requests(
    *,
    org_id: str,
    thread_id: str,
    project_id: str | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int = 50,
) -> ThreadPage:
    """Up to `limit` of the thread's requests, oldest first, from just after `after` on.

    `project_id` narrows to one project ("" for requests without one); None reads all of them.
    """
    rows = RequestLog.objects.filter(org_id=org_id, thread_id=thread_id)
    if project_id is not None:
        rows = rows.filter(project_id=project_id) if project_id else rows.filter(project_id__isnull=True)
    if after is not None:
        moment, log_id = after
        rows = rows.filter(Q(timestamp__gt=moment) | Q(timestamp=moment, id__gt=log_id))
    found = list(rows.order_by("timestamp", "id")[: limit + 1])
    more = len(found) > limit
    found = found[:limit]
    return ThreadPage(requests=found, after=(found[-1].timestamp, found[-1].id) if more else None)
