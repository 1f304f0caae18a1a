"""CostRecomputation now belongs to telemetry; its table and rows stay where they are."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("dashboards", "0003_cost_recomputation"),
        ("telemetry", "0003_pricing_models"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.DeleteModel(name="CostRecomputation")]),
    ]
