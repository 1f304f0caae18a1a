"""Rollup maintenance off the request path: thin tasks over `dashboards.services`."""

from datetime import date

from celery import shared_task
from django.db import OperationalError

from dashboards import services


@shared_task(
    name="dashboards.rollups_rebuild",
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
)
def rollups_rebuild(since: str, until: str) -> int:
    """Rebuild rollups for the UTC days `since`..`until` (ISO dates, both included)."""
    return services.rollups_rebuild(since=date.fromisoformat(since), until=date.fromisoformat(until))
