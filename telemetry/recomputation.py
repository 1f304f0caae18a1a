"""Writes for repricing the request log after a price change: start a recomputation, run it.

The request log (`RequestLog`) is repriced in place, and every other store that keeps a copy
of the documents (Elasticsearch) gets the repriced documents too. Whoever keeps figures
derived from costs (the dashboards' rollups) listens to `costs_recomputed`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone

from telemetry import pricing, selectors
from telemetry.exporters import exporters
from telemetry.models import CostRecomputation, PriceOverride, RequestLog

RECOMPUTE_CHUNK_ROWS = 2_000
COST_PLACES = Decimal("1e-10")

# Sent with `since` and `until` (dates, both included) once a range has been repriced.
costs_recomputed = Signal()


class StoreUpdateError(Exception):
    """A store that keeps copies of the documents did not take the repriced ones; the chunk is undone."""


def cost_recomputation_start(*, provider: str = "", model: str = "", since: date, until: date) -> CostRecomputation:
    """Record a repricing of the request log over `since`..`until` (UTC days, both included) and queue it.

    An empty `provider` or `model` means every one. The task is queued once the row is committed,
    so a worker never looks for a recomputation that is not there yet.
    """
    from telemetry import tasks

    if since > until:
        raise ValueError("since must not be after until")
    recomputation = CostRecomputation.objects.create(provider=provider, model=model, since=since, until=until)
    transaction.on_commit(lambda: tasks.recompute_costs.delay(recomputation.pk))
    return recomputation


def overrides_starting_after(*, overrides, until: date) -> list[PriceOverride]:
    """The overrides that take effect only after `until`: repricing up to then cannot apply them."""
    end = datetime.combine(until + timedelta(days=1), time.min, tzinfo=UTC)
    return [override for override in overrides if override.valid_from >= end]


def _recomputation_logs(recomputation: CostRecomputation):
    start = datetime.combine(recomputation.since, time.min, tzinfo=UTC)
    end = datetime.combine(recomputation.until + timedelta(days=1), time.min, tzinfo=UTC)
    logs = RequestLog.objects.filter(timestamp__gte=start, timestamp__lt=end)
    if recomputation.provider:
        logs = logs.filter(provider=recomputation.provider)
    if recomputation.model:
        # The price is looked up under the upstream model when the route renamed it.
        logs = logs.filter(
            Q(model=recomputation.model) | Q(log_data__attributes__metadata__upstream_model=recomputation.model)
        )
    return logs


def _metadata(log: RequestLog) -> dict:
    return (log.log_data or {}).setdefault("attributes", {}).setdefault("metadata", {})


def _reprice_chunk(logs: list[RequestLog]) -> int:
    """Write the current price of each log in `logs` where it differs; returns how many changed."""
    changed = []
    for log in logs:
        metadata = _metadata(log)
        tokens = metadata.get("tokens")
        usage = (
            pricing.TokenUsage.from_metadata(tokens)
            if isinstance(tokens, dict)
            else pricing.TokenUsage(input=log.input_tokens, output=log.output_tokens)
        )
        cost = pricing.request_cost(
            provider=log.provider or "",
            model=metadata.get("upstream_model") or log.model or "",
            at=log.timestamp,
            usage=usage,
        )
        # A model no price is known for keeps the cost it was logged with.
        if cost is None:
            continue
        new_cost = Decimal(str(cost)).quantize(COST_PLACES)
        if log.cost is not None and log.cost == new_cost and not metadata.get("cost_unknown"):
            continue
        log.cost = new_cost
        metadata["cost"] = float(new_cost)
        if "cost_unknown" in metadata:
            metadata["cost_unknown"] = False
        changed.append(log)
    if changed:
        _update_other_stores([log.log_data for log in changed])
        RequestLog.objects.bulk_update(changed, ["cost", "log_data"], batch_size=RECOMPUTE_CHUNK_ROWS)
    return len(changed)


def _update_other_stores(documents: list[dict]) -> None:
    for config in selectors.enabled_exporter_configs():
        exporter = exporters.get(config)
        result = exporter.replace(documents)
        if result.failed or result.retry:
            reasons = sorted({*result.failed.values(), result.transient_error} - {""})
            raise StoreUpdateError(f"{config.name} kept the old costs: {'; '.join(reasons)[:500]}")


def cost_recomputation_run(*, recomputation_id: int) -> CostRecomputation:
    """Reprice the request logs of a recomputation with today's prices and overrides, in every store.

    Rows are walked in (timestamp, id) order, a chunk at a time, and progress is saved after each
    chunk. Running it again is harmless: a cost already right is left alone.
    """
    recomputation = CostRecomputation.objects.get(pk=recomputation_id)
    if recomputation.status == CostRecomputation.Status.DONE:
        return recomputation
    try:
        recomputation.status = CostRecomputation.Status.RUNNING
        recomputation.started_at = timezone.now()
        recomputation.finished_at = None
        recomputation.error = ""
        recomputation.processed = recomputation.changed = 0
        logs = _recomputation_logs(recomputation)
        recomputation.total = logs.count()
        recomputation.save(
            update_fields=["status", "started_at", "finished_at", "error", "processed", "changed", "total"]
        )
        # Overrides saved moments ago must be seen, not the copy cached for the request path.
        pricing.invalidate_overrides()
        columns = ("id", "timestamp", "provider", "model", "input_tokens", "output_tokens", "cost", "log_data")
        after: tuple[datetime, str] | None = None
        while True:
            chunk = logs.only(*columns).order_by("timestamp", "id")
            if after is not None:
                chunk = chunk.filter(Q(timestamp__gt=after[0]) | Q(timestamp=after[0], id__gt=after[1]))
            rows = list(chunk[:RECOMPUTE_CHUNK_ROWS])
            if not rows:
                break
            with transaction.atomic():
                recomputation.changed += _reprice_chunk(rows)
                recomputation.processed += len(rows)
                recomputation.save(update_fields=["processed", "changed"])
            after = (rows[-1].timestamp, rows[-1].pk)
        costs_recomputed.send(sender=CostRecomputation, since=recomputation.since, until=recomputation.until)
        recomputation.status = CostRecomputation.Status.DONE
        recomputation.finished_at = timezone.now()
        recomputation.save(update_fields=["status", "finished_at"])
    except Exception as exc:
        CostRecomputation.objects.filter(pk=recomputation_id).update(
            status=CostRecomputation.Status.FAILED, error=f"{type(exc).__name__}: {exc}", finished_at=timezone.now()
        )
        raise
    return recomputation
