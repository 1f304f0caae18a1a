"""Reads for telemetry: the exporter configuration every process works from, queue backlogs."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import Error as DatabaseError
from django.db.models import Count, Max, Sum

from telemetry.exporters import ExporterConfig
from telemetry.models import ExporterSetting, RequestLog

logger = logging.getLogger(__name__)

_lock = threading.RLock()
_cached: tuple[float, dict[str, ExporterConfig]] | None = None


def exporter_configs() -> dict[str, ExporterConfig]:
    """Every exporter by name, as the database said at most TELEMETRY_EXPORTER_SETTINGS_TTL ago.

    Enabled exporters missing from the database get their row from the environment first.
    When the database cannot be read, the last configuration read (or else the
    environment's) stands in, so export never waits on the settings table.
    """
    global _cached
    cached = _cached
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    with _lock:
        cached = _cached
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        try:
            configs = _configs_from_database()
        except DatabaseError as exc:
            logger.warning("telemetry: cannot read exporter settings (%s); using the last known ones", exc)
            configs = cached[1] if cached is not None else configs_from_settings()
        _cached = (time.monotonic() + settings.TELEMETRY_EXPORTER_SETTINGS_TTL, configs)
        return configs


def exporter_config(*, name: str) -> ExporterConfig | None:
    return exporter_configs().get(name)


def enabled_exporter_configs() -> list[ExporterConfig]:
    return [config for config in exporter_configs().values() if config.enabled]


def exporter_configs_forget() -> None:
    """Drop this process's copy, so the next read goes to the database (after an edit here)."""
    global _cached
    with _lock:
        _cached = None


def _configs_from_database() -> dict[str, ExporterConfig]:
    from telemetry import services

    rows = list(ExporterSetting.objects.all())
    missing = set(settings.ENABLED_EXPORTERS) - {row.name for row in rows}
    if missing:
        services.exporter_settings_seed(names=sorted(missing))
        rows = list(ExporterSetting.objects.all())
    return {row.name: config_from_row(row) for row in rows}


def config_from_row(row: ExporterSetting) -> ExporterConfig:
    default = settings.TELEMETRY_EXPORTERS.get(row.name, {})
    backend = row.backend or default.get("BACKEND", "")
    version = f"{row.pk}:{row.updated_at.isoformat() if row.updated_at else ''}"
    try:
        password, api_key = row.password, row.api_key
    except ImproperlyConfigured as exc:
        # Exported later, once the key is right; the export task reports this and retries.
        return ExporterConfig(name=row.name, backend=backend, enabled=row.enabled, problem=str(exc), version=version)
    return ExporterConfig(
        name=row.name,
        backend=backend,
        enabled=row.enabled,
        url=row.url,
        target=row.index_or_table,
        username=row.username,
        password=password,
        api_key=api_key,
        options=dict(row.options or {}),
        batch_size=row.batch_size or default.get("BATCH_SIZE", 500),
        flush_interval=row.flush_interval,
        version=version,
    )


def configs_from_settings() -> dict[str, ExporterConfig]:
    """The enabled exporters as the environment describes them, without the database."""
    configs = {}
    for name in settings.ENABLED_EXPORTERS:
        default = settings.TELEMETRY_EXPORTERS[name]
        configs[name] = ExporterConfig(
            name=name,
            backend=default["BACKEND"],
            options=dict(default.get("OPTIONS", {})),
            batch_size=default.get("BATCH_SIZE", 500),
            version="settings",
        )
    return configs


def export_queue_backlog(*, queue: str) -> int | None:
    """Messages (export batches) waiting in a queue, or None when the broker cannot say."""
    from celery import current_app
    from kombu.exceptions import ChannelError, LimitExceeded, OperationalError

    try:
        with current_app.pool.acquire(block=True, timeout=1) as connection:
            try:
                return connection.default_channel.queue_declare(queue=queue, passive=True).message_count
            except (ChannelError, *connection.channel_errors):
                return 0  # never declared, or drained away: nothing waiting
            except (OperationalError, OSError, *connection.connection_errors) as exc:
                logger.debug("telemetry: cannot read the length of %s: %s", queue, exc)
                return None
    except LimitExceeded:
        return None


def gateway_key_spend(*, org_id: str, key_id: int) -> Decimal:
    """What the requests made with one gateway key have cost so far, in USD."""
    total = (
        RequestLog.objects.filter(org_id=org_id, log_data__attributes__metadata__gateway_key_id=key_id)
        .aggregate(total=Sum("cost"))
        .get("total")
    )
    return total or Decimal(0)


def unpriced_models(*, since: datetime) -> list[dict]:
    """Models whose requests since `since` carried tokens but no known price, most requests first.

    Each row: provider, model, requests, tokens and last_seen.
    """
    return list(
        RequestLog.objects.filter(timestamp__gte=since, cost__isnull=True, total_tokens__gt=0)
        .values("provider", "model")
        .annotate(requests=Count("id"), tokens=Sum("total_tokens"), last_seen=Max("timestamp"))
        .order_by("-requests", "provider", "model")
    )
