"""A Django ASGI handler with its own, async-only middleware chain."""

from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.test.utils import override_settings


class ProxyASGIHandler(ASGIHandler):
    def load_middleware(self, is_async=False):
        # BaseHandler reads settings.MIDDLEWARE; the chain is built once, at start-up.
        with override_settings(MIDDLEWARE=settings.PROXY_MIDDLEWARE):
            super().load_middleware(is_async)
