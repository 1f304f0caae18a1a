"""Rollup maintenance and repricing off the request path: thin tasks over `dashboards.services`."""

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


@shared_task(
    name="dashboards.recompute_costs",
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=3,
)
def recompute_costs(recomputation_id: int) -> int:
    """Reprice the request logs of one `CostRecomputation`; returns how many costs changed."""
    return services.cost_recomputation_run(recomputation_id=recomputation_id).changed
