"""A Django ASGI handler for the proxy routes: async-only middleware and no thread hops.

Django's own handler runs the request_started/finished signal receivers, which
are sync (database connection housekeeping), through thread hops, and closes
every response through another. The proxy never touches the database from the
event loop thread (see proxy/db.py, which does that housekeeping on its own
thread), so this handler skips the hops and keeps everything else: body reading,
disconnect detection (a client that goes away cancels the view or its stream),
the middleware chain from PROXY_MIDDLEWARE, Django's exception handling and its
log line for every error response.

It also keeps each request within limits before the view runs: a body is read
only up to GATEWAY_MAX_BODY_BYTES and for GATEWAY_BODY_READ_TIMEOUT (see
proxy/body.py), and past GATEWAY_MAX_CONCURRENT_REQUESTS a request is not read
at all. The view answers those in the route's own format, with a record.
"""

import asyncio
import contextlib
import io

from django.conf import settings
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.test.utils import override_settings
from django.urls import set_script_prefix, set_urlconf
from django.utils.log import log_response

from proxy.body import declared_length, read_body


class ProxyASGIHandler(ASGIHandler):
    def __init__(self):
        super().__init__()
        # Requests of this process being served now, streams included (one event loop per process).
        self.in_flight = 0

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

    async def send_response(self, response, send):
        """Django's, plus `response.encoded_headers`: pairs of bytes sent as they are (the rate-limit
        headers of every admitted request), which Django would otherwise check and encode one by one.
        They replace any header of the same name, as setting them on the response would (a provider's own
        rate-limit headers are passed through)."""
        encoded = getattr(response, "encoded_headers", None)
        if not encoded:
            await super().send_response(response, send)
            return
        names = {name for name, _ in encoded}

        async def send_with_encoded_headers(message):
            if message["type"] == "http.response.start":
                kept = [header for header in message["headers"] if header[0].lower() not in names]
                message["headers"] = kept + encoded
            await send(message)

        await super().send_response(response, send_with_encoded_headers)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"The proxy handler serves HTTP only, not {scope['type']!r}")
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send):
        if self.in_flight >= settings.GATEWAY_MAX_CONCURRENT_REQUESTS:
            await self.serve(scope, receive, send, over_capacity=True)
            return
        self.in_flight += 1
        try:
            await self.serve(scope, receive, send, over_capacity=False)
        finally:
            self.in_flight -= 1

    async def serve(self, scope, receive, send, *, over_capacity):
        set_script_prefix(get_script_prefix(scope))
        # The request is built before its body is read, so its declared size is checked first.
        request, error_response = self.create_request(scope, None)
        if request is None:
            await self.send_response(error_response, send)
            return
        request.sends_encoded_headers = True  # see send_response
        unread = None
        if over_capacity:
            request.over_capacity = True
            body = b""
        else:
            try:
                body, unread = await read_body(
                    receive,
                    declared=declared_length(request.META),
                    limit=settings.GATEWAY_MAX_BODY_BYTES,
                    timeout=settings.GATEWAY_BODY_READ_TIMEOUT,
                )
            except RequestAborted:
                return
            if unread is not None:
                request.unread_body = unread
        request._body = body
        request._stream = io.BytesIO(body)
        read_whole = unread is None and not over_capacity

        async def respond():
            response = await self.run_get_response(request)
            if not read_whole:
                # The rest of the body is still on its way: end the connection rather than drain it.
                response["connection"] = "close"
            # A client that goes away while the response is being sent cancels the send.
            with contextlib.suppress(asyncio.CancelledError):
                await self.send_response(response, send)
            return response

        if not read_whole:
            # Reading stopped mid-body, so the connection has no disconnect to listen for, only more body.
            response = await respond()
            response.close()
            return
        listener = asyncio.create_task(self.listen_for_disconnect(receive))
        responder = asyncio.create_task(respond())
        await asyncio.wait((listener, responder), return_when=asyncio.FIRST_COMPLETED)
        for task in (listener, responder):
            if not task.done():
                task.cancel()
        # Waited for, not awaited: an exception raised into this frame (the listener's RequestAborted, or
        # its cancellation) would hold the frame, and with it the whole request, in a reference cycle
        # that only the garbage collector frees, for every request.
        await asyncio.wait((listener, responder))
        for task in (listener, responder):
            error = None if task.cancelled() else task.exception()
            if error is not None and not isinstance(error, RequestAborted):
                raise error
        if not responder.cancelled() and responder.exception() is None:
            responder.result().close()
