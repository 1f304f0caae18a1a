"""A Django ASGI handler for the proxy routes: async-only middleware and no thread hops.

Django's own handler runs the request_started/finished signal receivers, which
are sync (database connection housekeeping), through thread hops, and closes
every response through another. The proxy never touches the database from the
event loop thread (see proxy/db.py, which does that housekeeping on its own
thread), so this handler skips the hops and keeps everything else: body reading,
disconnect detection (a client that goes away cancels the view or its stream),
the middleware chain from PROXY_MIDDLEWARE, Django's exception handling and its
log line for every error response.
"""

import asyncio
import contextlib

from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.test.utils import override_settings
from django.urls import set_script_prefix, set_urlconf
from django.utils.log import log_response


class ProxyASGIHandler(ASGIHandler):
    def load_middleware(self, is_async=False):
        # BaseHandler reads settings.MIDDLEWARE; the chain is built once, at start-up.
        with override_settings(MIDDLEWARE=settings.PROXY_MIDDLEWARE):
            super().load_middleware(is_async)

    async def get_response_async(self, request):
        set_urlconf(settings.ROOT_URLCONF)
        response = await self._middleware_chain(request)
        response._resource_closers.append(request.close)
        if response.status_code >= 400:
            # Django logs error responses through a thread hop; a log line is cheap enough to write here.
            log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
        return response

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"The proxy handler serves HTTP only, not {scope['type']!r}")
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send):
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            return

        async def respond():
            response = await self.run_get_response(request)
            # A client that goes away while the response is being sent cancels the send.
            with contextlib.suppress(asyncio.CancelledError):
                await self.send_response(response, send)
            return response

        listener = asyncio.create_task(self.listen_for_disconnect(receive))
        responder = asyncio.create_task(respond())
        await asyncio.wait((listener, responder), return_when=asyncio.FIRST_COMPLETED)
        for task in (listener, responder):
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RequestAborted):
                await task
        if responder.done() and not responder.cancelled() and responder.exception() is None:
            responder.result().close()
        body_file.close()
