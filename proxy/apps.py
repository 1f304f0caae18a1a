from django.apps import AppConfig


class ProxyConfig(AppConfig):
    name = "proxy"
    verbose_name = "Gateway"

    def ready(self):
        # Registers the system check that refuses a deployment on development defaults.
        from gateway_project import safety  # noqa: F401
        from proxy import routing, signals  # noqa: F401 - signals connects the receivers
        from proxy.router import groups
        from telemetry import metrics

        metrics.register_model_names(routing.routed_model_names)
        metrics.register_model_names(groups.group_model_names)
