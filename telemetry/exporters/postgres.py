"""The Postgres exporter: request logs into the `RequestLog` table, in bulk and idempotently.

Each batch is one transaction. On PostgreSQL the rows go in with COPY, the fastest way in:

1. straight into the table, or, when after-insert hooks are configured, into the temporary
   table `new_request_logs` and from there into the table with one INSERT ... SELECT;
2. if any record of the batch is stored already (the batch is a retry, or was redelivered
   after a worker died), that fails on the primary key and is undone (a savepoint), and
   the batch goes the idempotent way: COPY into a temporary staging table, then
   `INSERT INTO <table> SELECT ... ON CONFLICT DO NOTHING`, whose RETURNING rows (the
   ones actually written, never the skipped ones) fill `new_request_logs`;
3. each hook runs.

Both ways store each record once; the first saves the staging copy and the conflict
checks on the first attempt at a batch, which is nearly every batch. The conflict is on the
primary key, (id, timestamp) in the month-partitioned table (`telemetry.partitions`): a
record's timestamp never changes, so a replayed record meets its stored copy. Before its
first batch the exporter makes sure the months ahead exist.

On SQLite (the embedded mode) the same happens with `bulk_create(ignore_conflicts=True)`:
the batch is one write transaction, so the rows found missing at its start are exactly
the rows it writes.

After-insert hooks (TELEMETRY_POSTGRES_AFTER_INSERT, a list of dotted paths):
    Each is called as `fn(cursor, "new_request_logs")` inside the insert transaction,
    after the rows are written. `cursor` is a Django cursor on the exporter's database;
    `new_request_logs` is a temporary table with the request-log table's columns holding
    only the rows this transaction inserted. Because it commits or rolls back with the
    rows themselves, a hook sees each record exactly once however often a batch is
    retried: that is what keeps rollup tables exact. A hook must not commit, and should
    only read the columns it needs (`log_data` is the large one). If a hook raises, the
    whole batch rolls back and is retried later, like any transient failure.

A document whose fields do not fit the table's columns (a non-numeric latency, a timestamp
that is not one) is refused for good and ends up in dead letters; the rest of its batch
is written. The JSON document itself is stored unchanged in `log_data`, except for text
PostgreSQL refuses (NUL, lone surrogates), which becomes U+FFFD (`telemetry.storable`).
"""

from __future__ import annotations

import logging
import re

from django.conf import settings
from django.db import DataError, IntegrityError, connections, models, transaction
from django.db import Error as DatabaseError
from django.utils import timezone
from django.utils.module_loading import import_string
from psycopg.errors import UniqueViolation

from telemetry import partitions, schema
from telemetry.exporters.base import Exporter, ExportError, ExportResult, json_bytes, record_id
from telemetry.storable import storable_text

logger = logging.getLogger(__name__)

NEW_ROWS_TABLE = "new_request_logs"
_STAGING_TABLE = "request_log_staging"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# The table's columns, as `telemetry.schema` lists them.
COLUMNS = schema.COLUMNS
_LOG_DATA = COLUMNS.index("log_data")
_ID = COLUMNS.index("id")


class AfterInsertError(Exception):
    """An after-insert hook failed; the batch is rolled back and retried."""


class PostgresExporter(Exporter):
    target_option = "table"

    def __init__(self, name: str, *, table: str | None = None, database: str = "default", after_insert=None):
        super().__init__(name)
        from telemetry.models import RequestLog

        self.model = RequestLog
        self.table = table or RequestLog._meta.db_table
        if not _IDENTIFIER.match(self.table):
            raise ValueError(f"not a plain table name: {self.table!r}")
        self.database = database
        self._partitions_made = False
        if connections[database].vendor not in ("postgresql", "sqlite"):
            raise ValueError(f"database {database!r} is neither PostgreSQL nor SQLite")
        if connections[database].vendor == "sqlite" and self.table != RequestLog._meta.db_table:
            raise ValueError("on SQLite the exporter writes only to the RequestLog table")
        paths = settings.TELEMETRY_POSTGRES_AFTER_INSERT if after_insert is None else after_insert
        self.after_insert = []
        for path in paths:
            try:
                self.after_insert.append(import_string(path))
            except ImportError as exc:
                raise ValueError(f"could not import after-insert hook {path!r}: {exc}") from exc

    # --- Exporter interface ------------------------------------------------------------

    def export(self, batch: list[dict]) -> ExportResult:
        result = ExportResult()
        unique: dict[str, dict] = {}
        for document in batch:
            unique.setdefault(record_id(document), document)
        documents = list(unique.values())
        if not documents:
            return result
        connection = connections[self.database]
        if not connection.in_atomic_block:
            # A connection broken by an earlier failure is replaced rather than failing again.
            connection.close_if_unusable_or_obsolete()
        if not self._partitions_made:
            self._partitions_made = self._make_partitions(connection)
        try:
            self._write_isolating(documents, result)
        except AfterInsertError as exc:
            logger.exception("telemetry: an after-insert hook failed; the batch will be retried")
            return ExportResult.batch_failed(batch, str(exc), done=result)
        except DatabaseError as exc:
            return ExportResult.batch_failed(batch, f"{type(exc).__name__}: {exc}".strip(), done=result)
        return result

    def check(self) -> str:
        connection = connections[self.database]
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT 1 FROM {connection.ops.quote_name(self.table)} LIMIT 1")
        except DatabaseError as exc:
            raise ExportError(f"{type(exc).__name__}: {exc}") from exc
        return f"{connection.vendor} database {connection.settings_dict['NAME']}, table {self.table}"

    @property
    def location(self) -> str:
        params = connections[self.database].settings_dict
        where = f" on {params['HOST']}:{params.get('PORT') or 5432}" if params.get("HOST") else ""
        return f"{connections[self.database].vendor} database {params['NAME']}{where}, table {self.table}"

    def check_warnings(self) -> list[str]:
        if connections[self.database].vendor != "sqlite":
            return []
        return [
            "The database is SQLite, not PostgreSQL (the embedded mode without DATABASE_URL): records go "
            "to its RequestLog table as plain JSON. Set DATABASE_URL to export to PostgreSQL."
        ]

    def _make_partitions(self, connection) -> bool:
        """The months ahead, so that a deployment without beat still writes into month partitions."""
        try:
            now = timezone.now()
            ahead = partitions.add_months(partitions.month_start(now), settings.POSTGRES_PARTITIONS_AHEAD)
            partitions.partitions_ensure(connection, table=self.table, since=now, until=ahead)
        except DatabaseError:
            # The default partition takes the rows meanwhile; the next batch tries again.
            logger.warning("telemetry: could not create the request-log partitions ahead", exc_info=True)
            return False
        return True

    # --- Writing -----------------------------------------------------------------------

    def _write_isolating(self, documents: list[dict], result: ExportResult) -> None:
        """Write the documents; when the database refuses the data, halve until the culprits are alone."""
        rows = _Rows(documents, result.failed)
        try:
            self._write(rows)
        except (DataError, IntegrityError) as exc:
            candidates = [document for document in documents if record_id(document) not in result.failed]
            if len(candidates) == 1:
                reason = f"refused by the database: {type(exc).__name__}: {exc}".strip()
                result.failed[record_id(candidates[0])] = reason
            elif candidates:
                middle = len(candidates) // 2
                self._write_isolating(candidates[:middle], result)
                self._write_isolating(candidates[middle:], result)
            return
        result.succeeded.extend(rows.ids())

    def _write(self, rows: _Rows) -> None:
        connection = connections[self.database]
        with transaction.atomic(using=self.database):
            if connection.vendor == "postgresql":
                self._write_postgresql(connection, rows)
            else:
                self._write_sqlite(connection, rows)

    def _write_postgresql(self, connection, rows: _Rows) -> None:
        table = connection.ops.quote_name(self.table)
        columns = ", ".join(connection.ops.quote_name(name) for name in COLUMNS)
        with connection.cursor() as cursor:
            if self.after_insert:
                # ON COMMIT DROP: nothing outlives the transaction, which also suits transaction poolers.
                cursor.execute(_create_temp(NEW_ROWS_TABLE, table))
            try:
                with transaction.atomic(using=self.database):
                    self._insert_new(cursor, rows, table, columns)
            except IntegrityError as exc:
                if not isinstance(exc.__cause__, UniqueViolation):
                    raise
                # Some of the records are stored already (a retried or redelivered batch).
                self._insert_skipping_stored(cursor, rows, table, columns)
            if self.after_insert:
                self._run_hooks(cursor)

    def _insert_new(self, cursor, rows: _Rows, table: str, columns: str) -> None:
        """The fast path, for a batch none of whose records is stored yet: the first attempt, nearly always."""
        if not self.after_insert:
            self._copy(cursor, rows, table, columns)
            return
        self._copy(cursor, rows, NEW_ROWS_TABLE, columns)
        cursor.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {NEW_ROWS_TABLE}")

    def _insert_skipping_stored(self, cursor, rows: _Rows, table: str, columns: str) -> None:
        cursor.execute(_create_temp(_STAGING_TABLE, table))
        self._copy(cursor, rows, _STAGING_TABLE, columns)
        # No conflict target: the primary key is (id) or, partitioned, (id, timestamp).
        move = f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {_STAGING_TABLE} ON CONFLICT DO NOTHING"
        if not self.after_insert:
            cursor.execute(move)
            return
        # Only what this INSERT wrote, never the conflicting records, goes to the hooks.
        cursor.execute(
            f"WITH inserted AS ({move} RETURNING {columns}) "
            f"INSERT INTO {NEW_ROWS_TABLE} ({columns}) SELECT {columns} FROM inserted"
        )

    def _copy(self, cursor, rows: _Rows, target: str, columns: str) -> None:
        connection = connections[self.database]
        with connection.wrap_database_errors, cursor.cursor.copy(f"COPY {target} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(_with_log_text(row))

    def _write_sqlite(self, connection, rows: _Rows) -> None:
        rows = list(rows)
        manager = self.model.objects.using(self.database)
        existing = set(manager.filter(pk__in=[row[_ID] for row in rows]).values_list("pk", flat=True))
        # Plain parameters for one executemany: building a model instance per row and compiling
        # the ORM's INSERT cost more than SQLite's own work on the batch.
        prepare = _sqlite_preparers(self.model, connection)
        params = [
            [value if convert is None else convert(value) for convert, value in zip(prepare, row, strict=True)]
            for row in rows
            if row[_ID] not in existing
        ]
        table = connection.ops.quote_name(self.table)
        columns = ", ".join(connection.ops.quote_name(name) for name in COLUMNS)
        marks = ", ".join(["%s"] * len(COLUMNS))
        with connection.cursor() as cursor:
            if not self.after_insert:
                cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING", params)
                return
            # The new rows go to the temporary table first and from there, in one statement, to the log.
            cursor.execute(f"DROP TABLE IF EXISTS temp.{NEW_ROWS_TABLE}")
            cursor.execute(f"CREATE TEMP TABLE {NEW_ROWS_TABLE} AS SELECT * FROM {table} WHERE 0")
            cursor.executemany(f"INSERT INTO {NEW_ROWS_TABLE} ({columns}) VALUES ({marks})", params)
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {NEW_ROWS_TABLE}"
                " WHERE true ON CONFLICT DO NOTHING"
            )
            self._run_hooks(cursor)
            cursor.execute(f"DROP TABLE temp.{NEW_ROWS_TABLE}")

    def _run_hooks(self, cursor) -> None:
        for hook in self.after_insert:
            try:
                hook(cursor, NEW_ROWS_TABLE)
            except Exception as exc:  # any hook failure rolls the batch back, to be retried
                raise AfterInsertError(f"after-insert hook {hook.__module__}.{hook.__qualname__}: {exc}") from exc


class _Rows:
    """A batch's table rows, made while COPY sends them, so that the database works meanwhile.

    A document that does not fit is entered in `failed` and left out. The rows are kept
    for a second pass (the idempotent path after a conflict).
    """

    def __init__(self, documents: list[dict], failed: dict[str, str]):
        self._documents = documents
        self._failed = failed
        self._made: list[tuple] | None = None

    def __iter__(self):
        if self._made is not None:
            yield from self._made
            return
        made = []
        for document in self._documents:
            try:
                row = table_row(storable_text(document))
            except (KeyError, TypeError, ValueError) as exc:
                self._failed[record_id(document)] = f"does not fit the request log table: {exc}"
                continue
            made.append(row)
            yield row
        self._made = made

    def ids(self) -> list[str]:
        return [row[_ID] for row in self]


# Fields whose values (already of the column's Python type, see telemetry.schema) SQLite takes as they are.
_SQLITE_AS_IS = (models.CharField, models.IntegerField, models.BooleanField)


def _sqlite_preparers(model, connection) -> list:
    """Per column, None or what turns its value into SQLite's (datetimes, decimals, the JSON document)."""
    preparers = []
    for name in COLUMNS:
        field = model._meta.get_field(name)
        if isinstance(field, _SQLITE_AS_IS):
            preparers.append(None)
        else:
            preparers.append(lambda value, field=field: field.get_db_prep_save(value, connection))
    return preparers


def _create_temp(name: str, like: str) -> str:
    # The log table's compression too, so that a document compressed once is copied as it is.
    return f"CREATE TEMP TABLE {name} (LIKE {like} INCLUDING COMPRESSION) ON COMMIT DROP"


def _with_log_text(row: tuple) -> tuple:
    return (*row[:_LOG_DATA], json_bytes(row[_LOG_DATA]).decode(), *row[_LOG_DATA + 1 :])


def table_row(document: dict) -> tuple:
    """The table's columns for one document, in COLUMNS order; ValueError when it does not fit."""
    return schema.row_from_document(document)
