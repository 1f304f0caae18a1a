"""Monthly partitions of the request-log table on PostgreSQL.

The table is `PARTITION BY RANGE ("timestamp")`, one partition per UTC month named
`<table>_pYYYYMM`, plus a default partition `<table>_default` that takes any row no month
covers, so that an insert never fails for want of a partition. Months are created ahead
(POSTGRES_PARTITIONS_AHEAD) by the migration, by the exporter when it starts and by a beat
task, which also drops the months wholly older than POSTGRES_RETENTION_DAYS and moves rows
the default partition caught into their own month.

The primary key is (id, timestamp), because every unique constraint of a partitioned table
must hold the partition key. A record's timestamp is fixed when it is born and travels in
its document, so a replayed record still conflicts with its stored copy.

On SQLite (the embedded mode) the table stays a plain table and all of this does nothing.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import transaction

logger = logging.getLogger(__name__)

_BOUNDS = re.compile(r"FOR VALUES FROM \('([^']+)'\) TO \('([^']+)'\)")
# Room for the longest suffix ("_default", "_unpartitioned") within PostgreSQL's 63 characters.
_PREFIX_LENGTH = 49


@dataclass
class Maintenance:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    moved_from_default: int = 0
    expired_from_default: int = 0
    left_in_default: int = 0


def month_start(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def add_months(month: datetime, months: int) -> datetime:
    index = month.year * 12 + month.month - 1 + months
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(table: str, month: datetime) -> str:
    return f"{table[:_PREFIX_LENGTH]}_p{month:%Y%m}"


def default_partition_name(table: str) -> str:
    return f"{table[:_PREFIX_LENGTH]}_default"


def is_partitioned(connection, table: str) -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s))", [table])
        return cursor.fetchone()[0]


def month_partitions(connection, table: str) -> dict[datetime, tuple[str, datetime]]:
    """The table's range partitions: {lower bound: (name, upper bound)}."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT child.relname, pg_get_expr(child.relpartbound, child.oid) FROM pg_inherits"
            " JOIN pg_class child ON child.oid = pg_inherits.inhrelid"
            " WHERE pg_inherits.inhparent = to_regclass(%s)",
            [table],
        )
        found = {}
        for name, bounds in cursor.fetchall():
            if match := _BOUNDS.search(bounds or ""):
                lower, upper = (datetime.fromisoformat(text) for text in match.groups())
                found[lower.astimezone(UTC)] = (name, upper.astimezone(UTC))
        return found


# --- Converting the table ----------------------------------------------------------


def table_partition(connection, *, table: str, now: datetime, ahead: int) -> None:
    """Turn the plain table into a partitioned one holding the same rows, indexes and defaults.

    The rows are copied, so this needs the table's size again in free disk space, and takes
    about as long as a bulk load of it.
    """
    if connection.vendor != "postgresql" or is_partitioned(connection, table):
        return
    quote = connection.ops.quote_name
    old = f"{table[:_PREFIX_LENGTH]}_unpartitioned"
    with connection.cursor() as cursor:
        primary_key, index_definitions = _set_indexes_aside(cursor, table)
        cursor.execute(f"ALTER TABLE {quote(table)} RENAME TO {quote(old)}")
        cursor.execute(
            f"CREATE TABLE {quote(table)} (LIKE {quote(old)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
            f' INCLUDING STORAGE INCLUDING COMPRESSION) PARTITION BY RANGE ("timestamp")'
        )
        cursor.execute(f"CREATE TABLE {quote(default_partition_name(table))} PARTITION OF {quote(table)} DEFAULT")
        cursor.execute(f'SELECT min("timestamp") FROM {quote(old)}')
        oldest = cursor.fetchone()[0]
        first = month_start(min(oldest, now) if oldest else now)
        last = add_months(month_start(now), ahead)
        month = first
        while month <= last:
            _create_empty_month(cursor, connection, table, month)
            month = add_months(month, 1)
        # Indexes after the rows: building them once is much faster than growing them row by row.
        cursor.execute(f"INSERT INTO {quote(table)} SELECT * FROM {quote(old)}")
        cursor.execute(f"DROP TABLE {quote(old)}")
        cursor.execute(f'ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(primary_key)} PRIMARY KEY (id, "timestamp")')
        for definition in index_definitions:
            cursor.execute(definition)
        # New tables have no statistics yet, and the dashboards' plans need them from the first query.
        cursor.execute(f"ANALYZE {quote(table)}")


def table_unpartition(connection, *, table: str) -> None:
    """The way back: one plain table with primary key (id), the rows of every partition."""
    if connection.vendor != "postgresql" or not is_partitioned(connection, table):
        return
    quote = connection.ops.quote_name
    old = f"{table[:_PREFIX_LENGTH]}_partitioned"
    with connection.cursor() as cursor:
        primary_key, index_definitions = _set_indexes_aside(cursor, table)
        cursor.execute(f"ALTER TABLE {quote(table)} RENAME TO {quote(old)}")
        cursor.execute(
            f"CREATE TABLE {quote(table)} (LIKE {quote(old)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
            " INCLUDING STORAGE INCLUDING COMPRESSION)"
        )
        cursor.execute(f"INSERT INTO {quote(table)} SELECT * FROM {quote(old)}")
        cursor.execute(f"DROP TABLE {quote(old)}")
        cursor.execute(f"ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(primary_key)} PRIMARY KEY (id)")
        for definition in index_definitions:
            cursor.execute(definition)
        cursor.execute(f"ANALYZE {quote(table)}")


def _set_indexes_aside(cursor, table: str) -> tuple[str, list[str]]:
    """Drop the table's indexes, so that their names are free for the new table; return how to rebuild them.

    Returns the primary key's name and the other indexes' definitions (which name the table
    by its current name, the name the new table takes).
    """
    cursor.execute(
        "SELECT index.relname, pg_get_indexdef(pg_index.indexrelid), pg_index.indisprimary FROM pg_index"
        " JOIN pg_class index ON index.oid = pg_index.indexrelid WHERE pg_index.indrelid = to_regclass(%s)",
        [table],
    )
    primary_key, definitions = f"{table}_pkey", []
    for name, definition, primary in cursor.fetchall():
        if primary:
            primary_key = name
            cursor.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
        else:
            definitions.append(definition)
            cursor.execute(f'DROP INDEX "{name}"')
    return primary_key, definitions


def _create_empty_month(cursor, connection, table: str, month: datetime) -> None:
    quote = connection.ops.quote_name
    cursor.execute(
        f"CREATE TABLE {quote(partition_name(table, month))} PARTITION OF {quote(table)} FOR VALUES FROM (%s) TO (%s)",
        [month, add_months(month, 1)],
    )


# --- Maintenance -------------------------------------------------------------------


def partitions_ensure(connection, *, table: str, since: datetime, until: datetime) -> list[str]:
    """Create the months from `since`'s to `until`'s where missing; the names created."""
    if not is_partitioned(connection, table):
        return []
    existing = month_partitions(connection, table)
    created = []
    month = month_start(since)
    while month <= until:
        if month not in existing and _month_create(connection, table, month) is not None:
            created.append(partition_name(table, month))
        month = add_months(month, 1)
    return created


def partitions_maintain(
    connection, *, table: str, now: datetime, ahead: int, retention_days: int = 0
) -> Maintenance | None:
    """Create the months up to `ahead` months on, move what the default partition caught into its
    month, drop months wholly older than `retention_days` (0: keep everything).

    None when the table is not partitioned (SQLite, or a table this does not manage).
    """
    if not is_partitioned(connection, table):
        return None
    report = Maintenance()
    cutoff = now - timedelta(days=retention_days) if retention_days else None
    last = add_months(month_start(now), ahead)
    wanted = {add_months(month_start(now), offset) for offset in range(ahead + 1)}
    wanted |= {month for month in _months_in_default(connection, table) if month <= last}
    existing = month_partitions(connection, table)
    for month in sorted(wanted - existing.keys()):
        if cutoff is not None and add_months(month, 1) <= cutoff:
            continue
        moved = _month_create(connection, table, month)
        if moved is not None:
            report.created.append(partition_name(table, month))
            report.moved_from_default += moved
    if cutoff is not None:
        for name, upper in sorted(month_partitions(connection, table).values()):
            if upper <= cutoff:
                _partition_drop(connection, table, name)
                report.dropped.append(name)
        report.expired_from_default = _default_expire(connection, table, cutoff)
    report.left_in_default = _default_rows(connection, table)
    if report.left_in_default:
        logger.warning(
            "telemetry: %d request logs are in %s, dated further ahead than the months made so far",
            report.left_in_default,
            default_partition_name(table),
        )
    return report


def _lock(cursor, table: str) -> None:
    # Exporters starting together and the beat task never create the same month twice.
    cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"tollgate partitions {table}"])


def _month_create(connection, table: str, month: datetime) -> int | None:
    """Create one month, taking its rows out of the default partition; None if it exists already."""
    quote = connection.ops.quote_name
    name = partition_name(table, month)
    upper = add_months(month, 1)
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        _lock(cursor, table)
        if month in month_partitions(connection, table):
            return None
        # Rows of this month written into the default partition meanwhile would fail the ATTACH.
        cursor.execute(f"LOCK TABLE {quote(default_partition_name(table))} IN SHARE ROW EXCLUSIVE MODE")
        # A month cannot be attached while the default partition holds rows of it: they move first.
        cursor.execute(
            f"CREATE TABLE {quote(name)} (LIKE {quote(table)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
            " INCLUDING STORAGE INCLUDING COMPRESSION)"
        )
        cursor.execute(
            f'WITH moved AS (DELETE FROM {quote(table)} WHERE "timestamp" >= %s AND "timestamp" < %s RETURNING *)'
            f" INSERT INTO {quote(name)} SELECT * FROM moved",
            [month, upper],
        )
        moved = cursor.rowcount
        cursor.execute(
            f"ALTER TABLE {quote(table)} ATTACH PARTITION {quote(name)} FOR VALUES FROM (%s) TO (%s)", [month, upper]
        )
    if moved:
        logger.info("telemetry: moved %d request logs from the default partition into %s", moved, name)
    return moved


def _partition_drop(connection, table: str, name: str) -> None:
    quote = connection.ops.quote_name
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        _lock(cursor, table)
        # DETACH locks the whole table: rather than queue every insert behind a long dashboard
        # query, give up (OperationalError) and let the task try again.
        cursor.execute("SET LOCAL lock_timeout = '5s'")
        cursor.execute(f"ALTER TABLE {quote(table)} DETACH PARTITION {quote(name)}")
        cursor.execute(f"DROP TABLE {quote(name)}")
    logger.info("telemetry: dropped request-log partition %s, past the retention", name)


def _months_in_default(connection, table: str) -> set[datetime]:
    default = connection.ops.quote_name(default_partition_name(table))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT DISTINCT date_trunc('month', \"timestamp\", 'UTC') FROM {default}")
        return {month_start(row[0]) for row in cursor.fetchall()}


def _default_expire(connection, table: str, cutoff: datetime) -> int:
    default = connection.ops.quote_name(default_partition_name(table))
    with connection.cursor() as cursor:
        cursor.execute(f'DELETE FROM {default} WHERE "timestamp" < %s', [month_start(cutoff)])
        return cursor.rowcount


def _default_rows(connection, table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {connection.ops.quote_name(default_partition_name(table))}")
        return cursor.fetchone()[0]
