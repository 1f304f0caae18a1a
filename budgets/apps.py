from django.apps import AppConfig


class BudgetsConfig(AppConfig):
    name = "budgets"
    verbose_name = "Budgets and rate limits"

    def ready(self):
        from budgets import config_sections, settlement, signals  # noqa: F401 - signals connects the receivers
        from telemetry import handoff

        handoff.on_record_logged(settlement.record_logged)
        config_sections.register()
