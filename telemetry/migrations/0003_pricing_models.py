"""Price overrides and cost recomputations move to telemetry, which prices requests.

State only: both tables were created by the proxy and dashboards apps and keep their names
(`db_table`) and rows.
"""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("telemetry", "0002_log_data_lz4"),
        ("proxy", "0001_initial"),
        ("dashboards", "0003_cost_recomputation"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="PriceOverride",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("provider", models.CharField(help_text='The gateway\'s provider name, e.g. "openai"', max_length=32)),
                        ("model", models.CharField(max_length=200)),
                        ("input_per_mtok", models.DecimalField(decimal_places=6, max_digits=12, verbose_name="input price per 1M tokens (USD)")),
                        ("output_per_mtok", models.DecimalField(decimal_places=6, max_digits=12, verbose_name="output price per 1M tokens (USD)")),
                        ("valid_from", models.DateTimeField(default=django.utils.timezone.now)),
                    ],
                    options={"db_table": "proxy_priceoverride", "ordering": ["provider", "model", "-valid_from"]},
                ),
                migrations.CreateModel(
                    name="CostRecomputation",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("provider", models.CharField(blank=True, help_text="Empty for every provider.", max_length=32)),
                        ("model", models.CharField(blank=True, help_text="Empty for every model.", max_length=200)),
                        ("since", models.DateField(help_text="First UTC day repriced.")),
                        ("until", models.DateField(help_text="Last UTC day repriced (included).")),
                        ("status", models.CharField(choices=[("pending", "Pending"), ("running", "Running"), ("done", "Done"), ("failed", "Failed")], default="pending", max_length=16)),
                        ("total", models.BigIntegerField(default=0, help_text="Request logs in the range.")),
                        ("processed", models.BigIntegerField(default=0)),
                        ("changed", models.BigIntegerField(default=0, help_text="Request logs whose cost changed.")),
                        ("error", models.TextField(blank=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("started_at", models.DateTimeField(blank=True, null=True)),
                        ("finished_at", models.DateTimeField(blank=True, null=True)),
                    ],
                    options={"db_table": "dashboards_costrecomputation", "ordering": ["-created_at"]},
                ),
            ],
        ),
    ]
