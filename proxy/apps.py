from django.apps import AppConfig


class ProxyConfig(AppConfig):
    name = "proxy"
    verbose_name = "Gateway"

    def ready(self):
        from proxy import signals  # noqa: F401 - connects the receivers
