"""ASGI entry point.

Proxy paths are served by a handler whose middleware chain holds only async
middleware (`PROXY_MIDDLEWARE`): the admin's sync middleware would cost every
proxied request thread hops. Everything else gets the full chain.
"""

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

import django

django.setup(set_prefix=False)

from gateway_project.safety import refuse_unsafe_defaults  # noqa: E402

refuse_unsafe_defaults()

from django.conf import settings  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402

import budgets  # noqa: E402
from gateway_project import tracer  # noqa: E402
from gateway_project.lean_handler import ProxyASGIHandler  # noqa: E402
from proxy.db import close_db_connections  # noqa: E402
from proxy.invalidation import listener as invalidation_listener  # noqa: E402
from proxy.providers.base import close_shared_client  # noqa: E402
from telemetry import handoff  # noqa: E402

full_handler = ASGIHandler()
proxy_handler = ProxyASGIHandler()
_proxy_prefixes = tuple(settings.PROXY_PATH_PREFIXES)


async def application(scope, receive, send):
    if scope["type"] == "http":
        handler = proxy_handler if scope["path"].startswith(_proxy_prefixes) else full_handler
        await handler(scope, receive, send)
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)
    else:
        raise ValueError(f"Unsupported ASGI scope type {scope['type']!r}")


# A request allocates a few hundred objects the collector tracks, and frees them all as it ends
# (tests/proxy/test_request_lifetime.py). Each young-generation collection still walks every
# in-flight request's objects and moves them to an older generation, which is walked again: at
# Python's default of 700 allocations a collection ran every few requests and cost about a tenth of
# the CPU at concurrency 32. At 10,000 it runs some 14 times less often; the rare cycle waits longer.
_GC_THRESHOLDS = (10_000, 10, 10)


async def _lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            # Everything loaded at start-up lives as long as the process: move it out of the
            # collector's reach, so full collections only walk objects made while serving.
            gc.collect()
            gc.freeze()
            gc.set_threshold(*_GC_THRESHOLDS)
            # Records a stopped or killed process left in the journal go out with this one's.
            await handoff.pipeline.astart()
            # The tracer (and its export thread) is built before the first request, not by it.
            tracer.configure()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            # A graceful stop (SIGTERM) hands every buffered request record to the queue first.
            await handoff.pipeline.aclose()
            # Their records logged, the requests' budgets and token windows are settled before the process goes.
            await budgets.aclose()
            # After the hand-off, which ends the last requests' spans: those are exported too.
            tracer.shutdown()
            await invalidation_listener.aclose()
            await close_shared_client()
            close_db_connections()
            await send({"type": "lifespan.shutdown.complete"})
            return
