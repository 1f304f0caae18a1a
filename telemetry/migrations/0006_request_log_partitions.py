"""The request-log table becomes partitioned by month on PostgreSQL (see telemetry.partitions).

Its rows are copied into the new table, whose primary key is (id, timestamp). The model
keeps `id` as its primary key: ids are unique by construction, and the ORM looks rows up
by id. On SQLite nothing changes.
"""

from django.conf import settings
from django.db import migrations
from django.utils import timezone


def partition(apps, schema_editor):
    from telemetry import partitions

    partitions.table_partition(
        schema_editor.connection,
        table=settings.POSTGRES_LOG_TABLE,
        now=timezone.now(),
        ahead=settings.POSTGRES_PARTITIONS_AHEAD,
    )


def unpartition(apps, schema_editor):
    from telemetry import partitions

    partitions.table_unpartition(schema_editor.connection, table=settings.POSTGRES_LOG_TABLE)


class Migration(migrations.Migration):
    dependencies = [("telemetry", "0005_request_content_permission")]

    operations = [migrations.RunPython(partition, unpartition)]
