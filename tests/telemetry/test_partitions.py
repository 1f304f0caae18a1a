"""The request-log table partitioned by month on PostgreSQL: the migration, the exporter, upkeep."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from gateway_project.celery import app
from telemetry import partitions, schema, services, tasks
from telemetry.exporters.base import json_bytes
from telemetry.exporters.postgres import PostgresExporter
from telemetry.models import RequestLog
from tests.telemetry.conftest import documents, hook_counts, ids_of, requires_postgres

pytestmark = requires_postgres

TABLE = settings.POSTGRES_LOG_TABLE
BEFORE = [("telemetry", "0005_request_content_permission")]
PARTITIONED = [("telemetry", "0006_request_log_partitions")]


def migrate(targets) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)


def where_rows_are(ids) -> dict[str, str]:
    """Each row's id and the partition (or plain table) holding it."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, tableoid::regclass::text FROM {TABLE} WHERE id = ANY(%s)", [list(ids)])
        return dict(cursor.fetchall())


def dated(document: dict, moment: datetime) -> dict:
    document["timestamp"] = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return document


def month_names() -> list[str]:
    return sorted(name for name, _ in partitions.month_partitions(connection, TABLE).values())


@pytest.fixture(autouse=True)
def months_as_migrated(transactional_db):
    """The months a fresh migration makes, whatever months earlier tests left behind (DDL outlives the flush)."""
    for name, _ in partitions.month_partitions(connection, TABLE).values():
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE {name}")
    now = datetime.now(UTC)
    last = partitions.add_months(partitions.month_start(now), settings.POSTGRES_PARTITIONS_AHEAD)
    partitions.partitions_ensure(connection, table=TABLE, since=now, until=last)


def write_as_then(batch: list[dict]) -> None:
    """Insert the documents' rows with only the columns the table has at this migration: later
    migrations add columns (metadata.deployment's) that today's exporter writes."""
    with connection.cursor() as cursor:
        present = {column.name for column in connection.introspection.get_table_description(cursor, TABLE)}
        for document in batch:
            row = {name: value for name, value in schema.row_values(document).items() if name in present}
            row["log_data"] = json_bytes(row["log_data"]).decode()
            cursor.execute(
                f"INSERT INTO {TABLE} ({', '.join(row)}) VALUES ({', '.join(['%s'] * len(row))})", list(row.values())
            )


@pytest.fixture
def unpartitioned_logs(transactional_db):
    """Request logs written into the table as it was before partitioning."""
    migrate(BEFORE)
    try:
        assert not partitions.is_partitioned(connection, TABLE)
        moments = {
            "old-1": datetime(2025, 11, 30, 23, 59, 59, 999000, tzinfo=UTC),
            "old-2": datetime(2025, 12, 1, tzinfo=UTC),
            "mid": datetime(2026, 6, 15, 12, tzinfo=UTC),
            "far-ahead": datetime(2035, 1, 1, tzinfo=UTC),
        }
        batch = [dated(document, moment) for document, moment in zip(documents(4), moments.values(), strict=True)]
        for document, key in zip(batch, moments, strict=True):
            document["attributes"]["id"] = key
        write_as_then(batch)
        yield {key: document for key, document in zip(moments, batch, strict=True)}
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


def test_the_migration_moves_every_row_into_its_month_and_back(unpartitioned_logs):
    assert set(where_rows_are(unpartitioned_logs)) == set(unpartitioned_logs)
    assert set(where_rows_are(unpartitioned_logs).values()) == {TABLE}

    migrate(PARTITIONED)

    assert partitions.is_partitioned(connection, TABLE)
    assert where_rows_are(unpartitioned_logs) == {
        "old-1": f"{TABLE}_p202511",
        "old-2": f"{TABLE}_p202512",
        "mid": f"{TABLE}_p202606",
        # Dated past the months made ahead: the default partition takes it.
        "far-ahead": f"{TABLE}_default",
    }
    # Every month from the oldest row's to POSTGRES_PARTITIONS_AHEAD after this one.
    now = datetime.now(UTC)
    last = partitions.add_months(partitions.month_start(now), settings.POSTGRES_PARTITIONS_AHEAD)
    names = month_names()
    assert names[0] == f"{TABLE}_p202511" and names[-1] == partitions.partition_name(TABLE, last)
    assert len(names) == (last.year - 2025) * 12 + last.month - 11 + 1
    for key, document in unpartitioned_logs.items():
        assert RequestLog.objects.values_list("log_data", flat=True).get(pk=key) == document
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            " AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY a.attnum",
            [TABLE],
        )
        assert [row[0] for row in cursor.fetchall()] == ["id", "timestamp"]
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", [TABLE])
        indexes = {row[0] for row in cursor.fetchall()}
    # The indexes the model had at that migration; later migrations add their own.
    then = MigrationExecutor(connection).loader.project_state(PARTITIONED).apps.get_model("telemetry", "RequestLog")
    assert {index.name for index in then._meta.indexes} <= indexes

    migrate(BEFORE)

    assert not partitions.is_partitioned(connection, TABLE)
    assert set(where_rows_are(unpartitioned_logs).values()) == {TABLE}
    for key, document in unpartitioned_logs.items():
        assert RequestLog.objects.values_list("log_data", flat=True).get(pk=key) == document


def test_a_replayed_batch_is_stored_once_in_its_month(direct_exporters):
    exporter = PostgresExporter("postgres")
    batch = documents(20)
    exporter.export(batch[5:12])

    # The whole batch again, twice: the second pass meets the conflicts, the third nothing new.
    for _ in range(2):
        result = exporter.export(batch)
        assert sorted(result.succeeded) == sorted(ids_of(batch)) and not result.failed

    ids = ids_of(batch)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*), count(DISTINCT id) FROM {TABLE} WHERE id = ANY(%s)", [ids])
        assert cursor.fetchone() == (20, 20)
    assert hook_counts(ids) == {rid: 1 for rid in ids}
    this_month = partitions.partition_name(TABLE, partitions.month_start(datetime.now(UTC)))
    assert set(where_rows_are(ids).values()) == {this_month}


def test_the_exporter_makes_the_months_ahead_before_its_first_batch(direct_exporters):
    ahead = partitions.add_months(partitions.month_start(datetime.now(UTC)), settings.POSTGRES_PARTITIONS_AHEAD)
    name = partitions.partition_name(TABLE, ahead)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {name}")
    assert name not in month_names()
    future = dated(documents(1)[0], ahead.replace(day=3))

    PostgresExporter("postgres").export([future])

    assert name in month_names()
    assert where_rows_are(ids_of([future])) == {future["attributes"]["id"]: name}


def test_upkeep_moves_caught_rows_into_their_months_and_drops_months_past_the_retention(direct_exporters, settings):
    now = datetime(2027, 3, 10, tzinfo=UTC)
    services.log_partitions_cover(since=datetime(2026, 9, 1, tzinfo=UTC), until=datetime(2026, 11, 1, tzinfo=UTC))
    logs = {
        "late-feb": datetime(2027, 2, 27, tzinfo=UTC),
        "early-mar": datetime(2027, 3, 1, tzinfo=UTC),
        "too-far": datetime(2031, 1, 1, tzinfo=UTC),
        "expired": datetime(2026, 10, 5, tzinfo=UTC),
        "expired-uncovered": datetime(2026, 8, 5, tzinfo=UTC),
    }
    batch = [dated(document, moment) for document, moment in zip(documents(5), logs.values(), strict=True)]
    for document, key in zip(batch, logs, strict=True):
        document["attributes"]["id"] = key
    PostgresExporter("postgres", after_insert=[]).export(batch)
    before = where_rows_are(logs)
    assert before["expired"] == f"{TABLE}_p202610"
    assert before["expired-uncovered"] == before["too-far"] == f"{TABLE}_default"
    settings.POSTGRES_RETENTION_DAYS = 120
    settings.POSTGRES_PARTITIONS_AHEAD = 1

    report = services.log_partitions_maintain(now=now)

    assert {f"{TABLE}_p202702", f"{TABLE}_p202703", f"{TABLE}_p202704"} <= set(month_names())
    after = where_rows_are(logs)
    assert after["late-feb"] == f"{TABLE}_p202702"
    assert after["early-mar"] == f"{TABLE}_p202703"
    # Dated further than the months made ahead: left where it is, and reported.
    assert after["too-far"] == f"{TABLE}_default"
    assert report.left_in_default == 1
    # 120 days before 2027-03-10 is 2026-11-10: September and October are past it, November is not.
    assert report.dropped == [f"{TABLE}_p202609", f"{TABLE}_p202610"]
    assert f"{TABLE}_p202611" in month_names()
    assert "expired" not in after and "expired-uncovered" not in after
    assert report.expired_from_default == 1
    assert report.moved_from_default == sum(before[key] == f"{TABLE}_default" for key in ("late-feb", "early-mar"))

    again = services.log_partitions_maintain(now=now)
    assert (again.created, again.dropped, again.moved_from_default, again.expired_from_default) == ([], [], 0, 0)


def test_without_a_retention_nothing_is_dropped(direct_exporters, settings):
    settings.POSTGRES_RETENTION_DAYS = 0
    months = month_names()

    report = services.log_partitions_maintain(now=datetime(2040, 1, 1, tzinfo=UTC))

    assert report.dropped == [] and set(months) <= set(month_names())
    assert partitions.partition_name(TABLE, datetime(2040, 3, 1, tzinfo=UTC)) in month_names()


def test_beat_runs_the_upkeep_task(direct_exporters):
    entries = [
        entry for entry in settings.CELERY_BEAT_SCHEDULE.values() if entry["task"] == tasks.maintain_log_partitions.name
    ]
    assert len(entries) == 1 and entries[0]["schedule"] <= 24 * 3600
    assert tasks.maintain_log_partitions.name in app.tasks

    report = tasks.maintain_log_partitions.apply().get()

    assert report["left_in_default"] == 0
