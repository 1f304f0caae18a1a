"""Compress the log documents with lz4 on PostgreSQL builds that have it.

Most documents are 2-4 KB, past the size at which PostgreSQL compresses a value; lz4 does
that several times faster than the default pglz, which is most of the write cost.
"""

from django.conf import settings
from django.db import migrations


def _set_compression(schema_editor, method: str) -> None:
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'", [method])
        row = cursor.fetchone()
        if not row or not row[0]:
            return
        table = schema_editor.quote_name(settings.POSTGRES_LOG_TABLE)
        cursor.execute(f"ALTER TABLE {table} ALTER COLUMN log_data SET COMPRESSION {method}")


def use_lz4(apps, schema_editor):
    _set_compression(schema_editor, "lz4")


def use_pglz(apps, schema_editor):
    _set_compression(schema_editor, "pglz")


class Migration(migrations.Migration):
    dependencies = [("telemetry", "0001_initial")]

    operations = [migrations.RunPython(use_lz4, use_pglz, elidable=True)]
