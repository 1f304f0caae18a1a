"""Writes for telemetry: exporting batches, dead letters, exporter settings.

Export tasks, admin actions and commands call these; they hold no logic of their own.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import Error as DatabaseError
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.module_loading import import_string

from telemetry import metrics, partitions, selectors
from telemetry.exporters import ExportError, ExportResult, build_exporter, exporters
from telemetry.exporters.base import json_bytes, parse_timestamp, record_id
from telemetry.models import DeadLetter, ExporterSetting, RequestLog

logger = logging.getLogger(__name__)
# Records per transaction of a bulk load.
LOAD_BATCH_SIZE = 5_000


class ExportRetry(Exception):
    """Some documents could not be exported for a reason that will pass; export them again later."""

    def __init__(self, documents: list[dict], reason: str):
        super().__init__(reason)
        self.documents = documents
        self.reason = reason


@dataclass(frozen=True)
class ExportOutcome:
    exported: int = 0
    dead_lettered: int = 0


# --- Export ------------------------------------------------------------------------


def batch_export(*, exporter_name: str, documents: list[dict]) -> ExportOutcome:
    """Export one batch with the named exporter.

    Records the exporter refuses for good become dead letters; the rest of the batch is
    still exported. Raises ExportRetry with the documents to send again when the store
    (or the exporter's configuration) is unavailable for now.
    """
    config = selectors.exporter_config(name=exporter_name)
    if config is None or not config.enabled:
        # Whoever published this saw the exporter enabled: check the database rather than
        # this process's copy, which may predate the exporter being switched on.
        selectors.exporter_configs_forget()
        config = selectors.exporter_config(name=exporter_name)
    if config is None or not config.enabled:
        # Disabling an exporter stops new batches (enqueue_batch skips it); those already queued
        # are kept as dead letters, to be exported by a retry once it is enabled again.
        logger.warning(
            "telemetry: exporter %s is disabled; %d queued records kept as dead letters", exporter_name, len(documents)
        )
        failures = {record_id(document): _disabled_error(exporter_name) for document in documents}
        try:
            dead_letters_record(
                exporter_name=exporter_name,
                failures=failures,
                documents={record_id(document): document for document in documents},
            )
        except DatabaseError as exc:
            raise ExportRetry(documents, f"cannot record dead letters: {exc}") from exc
        return ExportOutcome(dead_lettered=len(failures))
    try:
        exporter = exporters.get(config)
    except ImproperlyConfigured as exc:
        logger.error("telemetry: %s", exc)
        metrics.TELEMETRY_EXPORT_FAILURES.labels(exporter_name, "configuration").inc()
        raise ExportRetry(documents, str(exc)) from exc
    started = time.perf_counter()
    try:
        result = exporter.export(documents)
    except Exception as exc:  # an exporter bug must neither lose the batch nor block its queue
        logger.exception("telemetry: exporter %s failed unexpectedly; the batch goes to dead letters", exporter_name)
        result = ExportResult(failed={record_id(doc): f"exporter error: {exc!r}" for doc in documents})
    metrics.TELEMETRY_EXPORT_DURATION.labels(exporter_name).observe(time.perf_counter() - started)
    return _settle(exporter_name, documents, result)


def _settle(exporter_name: str, documents: list[dict], result: ExportResult) -> ExportOutcome:
    by_id = {record_id(document): document for document in documents}
    if result.succeeded:
        metrics.TELEMETRY_EXPORT_RECORDS.labels(exporter_name, "exported").inc(len(result.succeeded))
        _observe_lag(exporter_name, [by_id[rid] for rid in result.succeeded if rid in by_id])
    if result.failed:
        metrics.TELEMETRY_EXPORT_FAILURES.labels(exporter_name, "permanent").inc(len(result.failed))
        try:
            dead_letters_record(exporter_name=exporter_name, failures=result.failed, documents=by_id)
        except DatabaseError as exc:
            # Not recorded, so not settled: they come back with the retry and fail again then.
            result.retry.extend(result.failed)
            result.transient_error = result.transient_error or f"cannot record dead letters: {exc}"
    if result.retry:
        metrics.TELEMETRY_EXPORT_FAILURES.labels(exporter_name, "transient").inc(len(result.retry))
        logger.warning(
            "telemetry: export to %s failed for %d records, will retry: %s",
            exporter_name,
            len(result.retry),
            result.transient_error,
        )
        raise ExportRetry([by_id[rid] for rid in dict.fromkeys(result.retry) if rid in by_id], result.transient_error)
    return ExportOutcome(exported=len(result.succeeded), dead_lettered=len(result.failed))


def _observe_lag(exporter_name: str, documents: list[dict]) -> None:
    now = datetime.now(UTC)
    histogram = metrics.TELEMETRY_EXPORT_LAG.labels(exporter_name)
    for document in documents:
        try:
            histogram.observe(max((now - parse_timestamp(document.get("timestamp"))).total_seconds(), 0.0))
        except ValueError:
            continue


# --- Dead letters ------------------------------------------------------------------


def dead_letters_record(*, exporter_name: str, failures: dict[str, str], documents: dict[str, dict]) -> None:
    """Keep each refused record once per exporter; a record refused again updates its row."""
    for rid, error in failures.items():
        document_json = json_bytes(documents.get(rid)).decode()
        with transaction.atomic():
            updated = DeadLetter.objects.filter(exporter=exporter_name, record_id=rid).update(
                error=error, document_json=document_json, attempts=F("attempts") + 1, resolved_at=None
            )
            if not updated:
                try:
                    with transaction.atomic():
                        DeadLetter.objects.create(
                            exporter=exporter_name, record_id=rid, error=error, document_json=document_json
                        )
                except IntegrityError:
                    # Another worker recorded it in the meantime.
                    continue
        logger.error("telemetry: %s refused record %s for good: %s", exporter_name, rid, error)
    metrics.TELEMETRY_DEAD_LETTERS.labels(exporter_name).inc(len(failures))


@dataclass(frozen=True)
class RetryOutcome:
    exported: int = 0
    failed: int = 0


def dead_letter_retry(*, dead_letters: Iterable[DeadLetter]) -> RetryOutcome:
    """Export dead letters again now, each with the exporter that refused it.

    Exported ones are marked resolved; the others keep (or update) their error.
    """
    groups: dict[str, list[DeadLetter]] = defaultdict(list)
    for letter in dead_letters:
        if not letter.resolved:
            groups[letter.exporter].append(letter)
    exported = failed = 0
    now = timezone.now()
    for exporter_name, letters in groups.items():
        documents = [letter.document for letter in letters]
        result = _export_now(exporter_name, documents)
        for letter, document in zip(letters, documents, strict=True):
            rid = record_id(document)
            letter.retried_at = now
            if rid in result.succeeded:
                letter.resolved_at = now
                exported += 1
                continue
            letter.attempts += 1
            letter.error = result.failed.get(rid) or f"not exported, will need another retry: {result.transient_error}"
            failed += 1
        DeadLetter.objects.bulk_update(letters, ["retried_at", "resolved_at", "attempts", "error"])
    return RetryOutcome(exported=exported, failed=failed)


def _disabled_error(exporter_name: str) -> str:
    return f"exporter {exporter_name!r} is disabled; retry once it is enabled again"


def _export_now(exporter_name: str, documents: list[dict]) -> ExportResult:
    selectors.exporter_configs_forget()  # a person retrying expects the settings as they are now
    config = selectors.exporter_config(name=exporter_name)
    if config is None:
        return ExportResult.batch_failed(documents, f"no exporter named {exporter_name!r} is configured")
    if not config.enabled:
        return ExportResult.batch_failed(documents, _disabled_error(exporter_name))
    try:
        exporter = exporters.get(config)
    except ImproperlyConfigured as exc:
        return ExportResult.batch_failed(documents, str(exc))
    result = exporter.export(documents)
    if result.succeeded:
        metrics.TELEMETRY_EXPORT_RECORDS.labels(exporter_name, "exported").inc(len(result.succeeded))
    return result


def dead_letter_update_document(*, dead_letter: DeadLetter, document: dict) -> DeadLetter:
    """Replace a dead letter's document (to correct what made it fail) before a retry."""
    if not isinstance(document, dict):
        raise ValidationError("The document must be a JSON object.")
    dead_letter.document = document
    dead_letter.save(update_fields=["document_json"])
    return dead_letter


# --- Exporter settings ---------------------------------------------------------------

_ROW_FIELDS = ("url", "username", "password", "api_key")
_EDITABLE = frozenset(
    {
        "enabled",
        "backend",
        "url",
        "index_or_table",
        "username",
        "password",
        "api_key",
        "options",
        "batch_size",
        "flush_interval",
    }
)


def exporter_settings_seed(*, names: Iterable[str]) -> None:
    """Create the rows of exporters that have none, from TELEMETRY_EXPORTERS (the environment)."""
    for name in names:
        default = settings.TELEMETRY_EXPORTERS.get(name)
        if default is None or ExporterSetting.objects.filter(name=name).exists():
            continue
        options = dict(default.get("OPTIONS", {}))
        row = ExporterSetting(
            name=name,
            enabled=name in settings.ENABLED_EXPORTERS,
            backend=default["BACKEND"],
            batch_size=default.get("BATCH_SIZE", 500),
        )
        for field in _ROW_FIELDS:
            setattr(row, field, options.pop(field, "") or "")
        target = _target_option(default["BACKEND"])
        if target:
            row.index_or_table = options.pop(target, "") or ""
        row.options = options
        try:
            with transaction.atomic():
                row.save()
        except IntegrityError:
            continue  # another process seeded it first
    selectors.exporter_configs_forget()


def _target_option(backend: str) -> str | None:
    try:
        return getattr(import_string(backend), "target_option", None)
    except ImportError:
        return None


def exporter_setting_update(*, setting: ExporterSetting, **changes) -> ExporterSetting:
    """Change an exporter's settings; running workers pick the change up within the TTL.

    `password` / `api_key`: None keeps the stored secret, "" clears it. The new
    configuration is checked (the backend imports and takes these options) before saving.
    """
    unknown = set(changes) - _EDITABLE
    if unknown:
        raise ValidationError(f"Not an exporter setting: {', '.join(sorted(unknown))}")
    changes = exporter_secrets_for_destination(setting=setting, changes=changes)
    for field, value in changes.items():
        if field in ("password", "api_key") and value is None:
            continue
        setattr(setting, field, value)
    exporter_setting_validate(setting=setting)
    setting.save()
    selectors.exporter_configs_forget()
    return setting


# Options that say where an exporter connects, besides the row's URL.
_DESTINATION_OPTIONS = ("url", "hosts", "host", "cloud_id")


def exporter_destination_changed(*, setting: ExporterSetting, changes: dict) -> bool:
    """Whether `changes` point the stored row at another URL or host."""
    if setting.pk is None:
        return False
    stored = ExporterSetting.objects.filter(pk=setting.pk).values("url", "options").first()
    if stored is None:
        return False
    if "url" in changes and (changes["url"] or "") != stored["url"]:
        return True
    if "options" in changes:
        before, after = stored["options"] or {}, changes["options"] or {}
        return any(before.get(name) != after.get(name) for name in _DESTINATION_OPTIONS)
    return False


def exporter_secrets_for_destination(*, setting: ExporterSetting, changes: dict) -> dict:
    """`changes` with the stored secrets cleared when the destination changes and they were not re-entered.

    A secret is only ever sent where it was entered for: otherwise whoever may edit the URL but
    not read the secret could point the exporter at their own server and receive it.
    """
    if not exporter_destination_changed(setting=setting, changes=changes):
        return changes
    return {
        **changes,
        "password": changes.get("password") or "",
        "api_key": changes.get("api_key") or "",
    }


def exporter_setting_validate(*, setting: ExporterSetting) -> None:
    """ValidationError unless the backend imports and takes these options (nothing is contacted)."""
    try:
        build_exporter(selectors.config_from_row(setting)).shutdown()
    except ImproperlyConfigured as exc:
        raise ValidationError(str(exc)) from exc


@dataclass(frozen=True)
class ConnectionCheck:
    found: str
    warnings: tuple[str, ...] = ()


def exporter_setting_check(*, setting: ExporterSetting) -> ConnectionCheck:
    """Reach the store with the row's saved settings; raises ExportError naming where and why not."""
    try:
        exporter = build_exporter(selectors.config_from_row(setting))
    except ImproperlyConfigured as exc:
        raise ExportError(f"{setting.url or setting.backend}: {exc}") from exc
    try:
        try:
            found = exporter.check()
        except ExportError as exc:
            raise ExportError(f"{exporter.location}: {exc}") from exc
        return ConnectionCheck(found=found, warnings=tuple(exporter.check_warnings()))
    finally:
        exporter.shutdown()


# --- Request-log partitions --------------------------------------------------------


def log_partitions_maintain(*, now: datetime | None = None) -> partitions.Maintenance | None:
    """Months made ahead, months past POSTGRES_RETENTION_DAYS dropped; None unless partitioned."""
    report = partitions.partitions_maintain(
        connection,
        table=RequestLog._meta.db_table,
        now=now or timezone.now(),
        ahead=settings.POSTGRES_PARTITIONS_AHEAD,
        retention_days=settings.POSTGRES_RETENTION_DAYS,
    )
    if report is not None and (report.created or report.dropped):
        logger.info("telemetry: request-log partitions created %s, dropped %s", report.created, report.dropped)
    return report


def log_partitions_cover(*, since: datetime, until: datetime) -> list[str]:
    """Months of the request-log table for rows about to be loaded from `since` to `until`."""
    return partitions.partitions_ensure(connection, table=RequestLog._meta.db_table, since=since, until=until)


@dataclass(frozen=True)
class LoadResult:
    stored: int
    refused: dict[str, str]


def request_logs_load(
    *, documents: Iterable[dict], after_insert: bool = False, batch_size: int = LOAD_BATCH_SIZE
) -> LoadResult:
    """Store record documents as request logs, as the Postgres exporter stores them (COPY, once
    per record however often loaded), in transactions of `batch_size`; for bulk loads such as
    demo traffic. The rollups' after-insert hooks run only with `after_insert`: a bulk load
    usually rebuilds them once at its end instead.

    Documents the table refuses are returned in `refused` (id: reason), not stored.
    """
    from telemetry.exporters.postgres import PostgresExporter

    exporter = PostgresExporter("request-log-load", after_insert=None if after_insert else [])
    stored, refused = 0, {}
    batch: list[dict] = []
    for document in documents:
        batch.append(document)
        if len(batch) >= batch_size:
            stored += _load_batch(exporter, batch, refused)
            batch = []
    if batch:
        stored += _load_batch(exporter, batch, refused)
    return LoadResult(stored=stored, refused=refused)


def _load_batch(exporter, batch: list[dict], refused: dict[str, str]) -> int:
    result = exporter.export(batch)
    if result.failed_transiently:
        raise ExportError(f"could not load request logs: {result.transient_error}")
    refused.update(result.failed)
    return len(result.succeeded)


def request_logs_delete(*, org_ids: Iterable[str]) -> int:
    """Delete every request log of these orgs; returns how many."""
    deleted, _ = RequestLog.objects.filter(org_id__in=list(org_ids)).delete()
    return deleted
