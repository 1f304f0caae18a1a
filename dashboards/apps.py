from django.apps import AppConfig


class DashboardsConfig(AppConfig):
    name = "dashboards"
    verbose_name = "Dashboards"

    def ready(self):
        from telemetry.recomputation import costs_recomputed

        costs_recomputed.connect(_rebuild_repriced_rollups, dispatch_uid="dashboards.rebuild_repriced_rollups")


def _rebuild_repriced_rollups(sender, *, since, until, **kwargs) -> None:
    """Rollups sum costs: a repriced range is summed again."""
    from dashboards import services

    services.rollups_rebuild(since=since, until=until)
