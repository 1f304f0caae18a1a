"""PriceOverride now belongs to telemetry; its table and rows stay where they are."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("proxy", "0001_initial"),
        ("telemetry", "0003_pricing_models"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.DeleteModel(name="PriceOverride")]),
    ]
