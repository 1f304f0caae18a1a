"""An after-insert hook for the tests: remembers every row the Postgres exporter reports as new.

The worker subprocesses run it (TELEMETRY_POSTGRES_AFTER_INSERT), so that a test can tell a
record inserted once from one inserted twice, which the primary key alone would hide.
"""

HOOK_TABLE = "telemetry_test_hook_rows"
HOOK_PATH = "tests.telemetry.hooks.remember_new_rows"


def remember_new_rows(cursor, table: str) -> None:
    cursor.execute(f"INSERT INTO {HOOK_TABLE} (id) SELECT id FROM {table}")
