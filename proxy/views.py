"""The proxy's endpoints: async REST framework views, one per provider route.

Every request, rejected ones included, produces exactly one request record,
handed to the telemetry pipeline when the response (or its stream) ends.
"""

from __future__ import annotations

import contextlib
import logging
import time
from functools import lru_cache

import httpx
import orjson
from asgiref.sync import markcoroutinefunction
from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from proxy import auth, streaming
from proxy.body import PREFIX_BYTES, TIMED_OUT, TOO_LARGE, UnreadBody
from proxy.credentials import upstream_credentials
from proxy.errors import ErrorFormat, GatewayError, invalid_request, json_response
from proxy.providers.base import (
    ProviderAdapter,
    adapter_for,
    display_host,
    passed_back,
    points_at_gateway,
    shared_client,
    upstream_failure,
)
from proxy.providers.registry import PROVIDERS, Dialect
from proxy.routing import Route, choose_route
from proxy.tracing import trace_context
from proxy.translation import (
    TranslationError,
    chat_request_to_messages,
    messages_error_to_chat,
    messages_response_to_chat,
)
from telemetry.handoff import pipeline
from telemetry.record import RequestRecord

logger = logging.getLogger(__name__)


class GatewayKeyAuthentication:
    """Authenticates the gateway key the SDK sends as its API key."""

    async def authenticate(self, request, view) -> auth.KeyGrant:
        plaintext = auth.presented_key(request, prefer_anthropic=view.error_format is ErrorFormat.ANTHROPIC)
        return await auth.authenticate_key(plaintext)


# Headers passed on to providers, whose HTTP client sends ASCII only; (META key, header name).
_FORWARDED_HEADERS = (
    ("HTTP_OPENAI_BETA", "openai-beta"),
    ("HTTP_ANTHROPIC_BETA", "anthropic-beta"),
    ("HTTP_ANTHROPIC_VERSION", "anthropic-version"),
    ("HTTP_X_PROVIDER_API_KEY", "x-provider-api-key"),
)
# What a browser may send when the preflight does not say (the SDKs' own headers included).
_CORS_DEFAULT_HEADERS = (
    "authorization, content-type, x-api-key, anthropic-version, anthropic-beta, openai-beta, "
    "x-provider, x-provider-api-key, x-organisation-id, x-organization-id, x-project-id, x-user-id, "
    "x-experiment-id, x-thread-id, traceparent"
)
_CORS_MAX_AGE = "86400"


def _check_forwarded_headers(meta: dict) -> None:
    for key, name in _FORWARDED_HEADERS:
        value = meta.get(key)
        if value is not None and not (value.isascii() and value.isprintable()):
            raise invalid_request(f"The {name} header must be printable ASCII.", code="invalid_header")


def _preflight_headers(requested: str | None) -> str:
    if requested and len(requested) <= 4096 and requested.isascii() and requested.isprintable():
        return requested
    return _CORS_DEFAULT_HEADERS


class ProxyView(APIView):
    """Async dispatch without the REST framework's sync `initial()`, which would cost a thread hop per request."""

    error_format = ErrorFormat.OPENAI
    authentication_classes = [GatewayKeyAuthentication]
    endpoint = ""

    @classmethod
    def as_view(cls, **initkwargs):
        view = super().as_view(**initkwargs)
        markcoroutinefunction(view)
        return view

    async def dispatch(self, request, *args, **kwargs):
        self.args, self.kwargs, self.request = args, kwargs, request
        self.headers = {}
        record = RequestRecord(path=request.path, method=request.method)
        record.trace_id, record.span_id, self.upstream_traceparent = trace_context(request.headers.get("traceparent"))
        self.record = record
        try:
            if getattr(request, "over_capacity", False):
                raise GatewayError(
                    "The gateway is serving as many requests as it may; retry shortly.",
                    kind="overloaded",
                    code="gateway_overloaded",
                )
            response = await self.handler_for(request)(request, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure is rendered and recorded by the one handler
            response = self.handle_exception(exc)
        response["x-request-id"] = record.id
        if "HTTP_ORIGIN" in request.META:
            # Keys travel in headers, never cookies, so any origin may call and read the answer.
            response["access-control-allow-origin"] = "*"
            response["access-control-expose-headers"] = "*"
        if not response.streaming:
            record.response_size = len(response.content)
            record.finish(response.status_code)
            pipeline.submit(record)
        return response

    def handler_for(self, request):
        method = request.method.lower()
        handler = getattr(self, method, None) if method in self.http_method_names else None
        if handler is None:
            raise GatewayError(
                f"{request.method} is not allowed here.", kind="method_not_allowed", code="method_not_allowed"
            )
        return handler

    def allowed_methods(self) -> str:
        return ", ".join(self._allowed_methods())

    def handle_exception(self, exc):
        response = api_settings.EXCEPTION_HANDLER(exc, {"view": self, "request": self.request})
        error = response.gateway_error
        record = self.record
        record.error_type = error.code
        record.response_body = response.content
        if not record.request_body:
            # Refused before its body was looked at: the record keeps the size only.
            unread = getattr(self.request, "unread_body", None)
            record.request_size = unread.size if unread is not None else len(self.request.body)
        if error.kind == "method_not_allowed":
            response["allow"] = self.allowed_methods()
        return response

    async def options(self, request, *args, **kwargs):
        """A CORS preflight: what a browser may send here."""
        allowed = self.allowed_methods()
        response = HttpResponse(status=204)
        response["allow"] = allowed
        response["access-control-allow-origin"] = "*"
        response["access-control-allow-methods"] = allowed
        response["access-control-allow-headers"] = _preflight_headers(
            request.META.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS")
        )
        response["access-control-max-age"] = _CORS_MAX_AGE
        return response

    # --- Steps shared by the routes ---------------------------------------------

    async def authenticate(self, request) -> auth.Attribution:
        grant = await self.authentication_classes[0]().authenticate(request, self)
        record = self.record
        record.org_id = grant.org_slug
        record.gateway_key_id = grant.key_id
        attribution = await auth.attribute(request, grant)
        record.user_id = attribution.user_id
        record.experiment_id = attribution.experiment_id
        record.thread_id = attribution.thread_id
        if attribution.project is not None:
            record.project_id = attribution.project.slug
            record.project_name = attribution.project.name
        record.content_logging = attribution.content_logging
        _check_forwarded_headers(request.META)
        return attribution

    def read_body(self, request) -> bytes:
        """The body, once the caller is known; one the handler could not read whole is refused here."""
        unread = getattr(request, "unread_body", None)
        if unread is None:
            body = request.body
            if len(body) <= settings.GATEWAY_MAX_BODY_BYTES:
                self.record.request_body = body
                return body
            # Only a handler that reads bodies without a limit (Django's own) gets here.
            unread = UnreadBody(TOO_LARGE, len(body), body[:PREFIX_BYTES])
        raise self.unread_body_error(unread)

    def unread_body_error(self, unread: UnreadBody) -> GatewayError:
        record = self.record
        record.request_size = unread.size
        if record.content_logging != "metadata":
            record.request_body = unread.prefix
        if unread.reason == TIMED_OUT:
            timeout = settings.GATEWAY_BODY_READ_TIMEOUT
            return GatewayError(
                f"The request body did not arrive within {timeout:g} seconds.",
                kind="request_timeout",
                code="request_timeout",
            )
        limit = settings.GATEWAY_MAX_BODY_BYTES
        return GatewayError(
            f"The request body is larger than {limit} bytes.", kind="request_too_large", code="request_too_large"
        )

    def parse_payload(self, body: bytes) -> dict:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise invalid_request(f"The request body is not valid JSON: {exc}.", code="invalid_json") from None
        if not isinstance(payload, dict):
            raise invalid_request("The request body must be a JSON object.", code="invalid_json")
        if _nested_deeper_than(body, payload, MAX_JSON_DEPTH):
            raise invalid_request(
                f"The request body is nested more than {MAX_JSON_DEPTH} levels deep.", code="invalid_json"
            )
        self.record.request_json = payload
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise invalid_request("You must provide a model parameter.", code="missing_model", param="model")
        self.record.model = model
        stream = payload.get("stream")
        if stream is not None and stream is not True and stream is not False:
            # The gateway relays a stream differently from a single answer, so it has to know which it gets.
            raise invalid_request("stream must be a boolean.", code="invalid_type", param="stream")
        self.record.stream = stream is True
        return payload

    async def route(self, request, model: str) -> Route:
        route = await choose_route(model=model, provider_header=request.headers.get("x-provider"))
        self.record.provider = route.provider.name
        self.record.upstream_model = route.upstream_model
        return route

    async def adapter(self, request, route: Route, attribution: auth.Attribution):
        api_key, base_url = await upstream_credentials(
            org_pk=attribution.grant.org_pk,
            spec=route.provider,
            caller_key=request.headers.get("x-provider-api-key"),
        )
        return adapter_for(route.provider, api_key=api_key, base_url=base_url)

    # --- Talking to the provider -----------------------------------------------

    async def send(self, adapter, *, method: str, url: str, content: bytes | None, stream: bool) -> httpx.Response:
        """The provider's response with its headers read; the body is read by `read_upstream_body` or by the relay."""
        self.refuse_to_call_ourselves(adapter)
        client = shared_client()
        headers = adapter.headers(self.request.headers, traceparent=self.upstream_traceparent)
        if stream:
            # Compressing a stream only delays its events; an upstream that still does is decoded by the relay.
            headers["accept-encoding"] = "identity"
        timeout = _timeout(settings.GATEWAY_UPSTREAM_TIMEOUT, settings.GATEWAY_UPSTREAM_CONNECT_TIMEOUT)
        upstream_request = client.build_request(method, _url(url), content=content, headers=headers, timeout=timeout)
        self.upstream_adapter = adapter
        self.upstream_started = started = time.perf_counter()
        try:
            # Always as a stream: a body is read under GATEWAY_MAX_RESPONSE_BYTES, never whole by httpx.
            upstream = await client.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            self.record.provider_latency_ms = (time.perf_counter() - started) * 1000.0
            raise self.transport_failure(exc) from None
        self.record.provider_latency_ms = (time.perf_counter() - started) * 1000.0
        self.record.provider_status_code = upstream.status_code
        self.record.provider_request_id = upstream.headers.get("x-request-id") or upstream.headers.get("request-id")
        return upstream

    def refuse_to_call_ourselves(self, adapter: ProviderAdapter) -> None:
        """A base URL that is the gateway's own address would loop (a shell's OPENAI_BASE_URL, meant for an SDK)."""
        meta = self.request.META
        server_port = meta.get("SERVER_PORT")
        server = (meta.get("SERVER_NAME", ""), int(server_port)) if server_port and server_port.isdigit() else None
        if not points_at_gateway(adapter.base_url, server=server, host_header=meta.get("HTTP_HOST")):
            return
        spec = adapter.spec
        self.record.provider_error_type = "upstream_is_gateway"
        message = (
            f"The base URL of provider {spec.name!r} ({display_host(adapter.base_url)}) is this gateway's own "
            f"address, so the request would come straight back here. Point {spec.env_prefix}_BASE_URL (or the "
            f"org's {spec.label} credential) at the provider itself; a shell that exported {spec.env_prefix}_BASE_URL "
            "for an SDK is the usual cause."
        )
        self.record.error_message = message
        logger.warning("Refused to forward request %s to the gateway itself: %s", self.record.id, message)
        raise GatewayError(message, kind="bad_gateway", code="upstream_is_gateway")

    def transport_failure(self, exc: httpx.HTTPError) -> GatewayError:
        adapter = self.upstream_adapter
        failure = upstream_failure(exc, provider=adapter.spec.name, base_url=adapter.base_url)
        self.record.provider_error_type = failure.code
        self.record.error_message = failure.message
        logger.warning("Request %s: %s", self.record.id, failure.message)
        return failure

    async def read_upstream_body(self, upstream: httpx.Response) -> bytes:
        """The whole body, decompressed, but never more than GATEWAY_MAX_RESPONSE_BYTES of it (gzip bombs)."""
        limit = settings.GATEWAY_MAX_RESPONSE_BYTES
        chunks = []
        size = 0
        try:
            async for chunk in upstream.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise self.response_too_large(limit)
                chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise self.transport_failure(exc) from None
        finally:
            await upstream.aclose()
        self.record.provider_latency_ms = (time.perf_counter() - self.upstream_started) * 1000.0
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def response_too_large(self, limit: int) -> GatewayError:
        record = self.record
        record.provider_error_type = "response_too_large"
        record.error_message = (
            f"The provider's response is larger than the gateway's limit of {limit} bytes "
            "(GATEWAY_MAX_RESPONSE_BYTES, counted after decompression)."
        )
        return GatewayError(record.error_message, kind="bad_gateway", code="upstream_response_too_large")

    def client_response(
        self, upstream: httpx.Response, body: bytes, *, content_type: str | None = None
    ) -> HttpResponse:
        response = HttpResponse(
            body,
            status=upstream.status_code,
            content_type=content_type or upstream.headers.get("content-type", "application/json"),
        )
        self.copy_provider_headers(upstream, response)
        return response

    def copy_provider_headers(self, upstream: httpx.Response, response: HttpResponse) -> None:
        for name, value in upstream.headers.items():
            if passed_back(name):
                response[name] = value

    def upstream_error(self, upstream: httpx.Response, body: bytes, *, translate_to_chat: bool = False) -> HttpResponse:
        """A provider's 4xx/5xx reaches the client with the provider's status and body."""
        record = self.record
        parsed = _json_or_none(body)
        error = parsed.get("error") if isinstance(parsed, dict) else None
        record.provider_error_type = (
            error.get("type") if isinstance(error, dict) else None
        ) or f"http_{upstream.status_code}"
        record.error_type = "provider_error"
        if translate_to_chat:
            body = orjson.dumps(
                messages_error_to_chat(parsed if isinstance(parsed, dict) else None, upstream.status_code)
            )
            record.response_json = orjson.loads(body)
            record.response_body = body
            return self.client_response(upstream, body, content_type="application/json")
        record.response_body = body
        return self.client_response(upstream, body)

    def malformed_upstream(self, upstream: httpx.Response) -> GatewayError:
        self.record.provider_error_type = "malformed_response"
        return GatewayError(
            f"The provider answered with an unreadable response (HTTP {upstream.status_code}, "
            f"{upstream.headers.get('content-type', 'no content type')}).",
            kind="bad_gateway",
            code="bad_upstream_response",
        )

    async def forward_json(self, adapter, *, url: str, content: bytes, to_chat: bool = False) -> HttpResponse:
        upstream = await self.send(adapter, method="POST", url=url, content=content, stream=False)
        body = await self.read_upstream_body(upstream)
        if upstream.status_code >= 400:
            return self.upstream_error(upstream, body, translate_to_chat=to_chat)
        parsed = _json_or_none(body)
        if not isinstance(parsed, dict):
            raise self.malformed_upstream(upstream)
        if to_chat:
            # Priced from Anthropic's own counts: the chat shape has no place for cache writes.
            self.record.usage = parsed.get("usage")
            try:
                parsed = messages_response_to_chat(parsed, model=self.record.model)
            except (AttributeError, KeyError, TypeError):
                raise self.malformed_upstream(upstream) from None
            body = orjson.dumps(parsed)
        self.record.response_json = parsed
        return self.client_response(upstream, body, content_type="application/json")

    async def forward_stream(self, adapter, *, url: str, content: bytes, transform) -> HttpResponse:
        upstream = await self.send(adapter, method="POST", url=url, content=content, stream=True)
        if upstream.status_code >= 400:
            body = await self.read_upstream_body(upstream)
            return self.upstream_error(
                upstream, body, translate_to_chat=isinstance(transform, streaming.AnthropicToChatChunks)
            )
        encoding = upstream.headers.get("content-encoding")
        if "text/event-stream" not in upstream.headers.get("content-type", "") or not streaming.decodable(encoding):
            await upstream.aclose()
            raise self.malformed_upstream(upstream)
        response = StreamingHttpResponse(
            streaming.relay(
                upstream,
                record=self.record,
                transform=transform,
                error_format=self.error_format,
                limits=streaming.StreamLimits.from_settings(),
                encoding=encoding,
            ),
            content_type="text/event-stream",
        )
        response["cache-control"] = "no-cache"
        response["x-accel-buffering"] = "no"
        self.copy_provider_headers(upstream, response)
        return response


@lru_cache(maxsize=4096)
def _url(url: str) -> httpx.URL:
    # httpx parses URLs in Python; a gateway calls the same few endpoints over and over.
    return httpx.URL(url)


@lru_cache(maxsize=16)
def _timeout(total: float, connect: float) -> httpx.Timeout:
    return httpx.Timeout(total, connect=connect)


# Far deeper than any API body; orjson writes at most 255 levels, and the record nests the body further.
MAX_JSON_DEPTH = 128


def _nested_deeper_than(body: bytes, payload, limit: int) -> bool:
    # Counting brackets runs in C; only a body with that many is walked.
    if body.count(b"{") + body.count(b"[") <= limit:
        return False
    level = [(payload, 1)]
    while level:
        value, depth = level.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        level.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _json_or_none(body: bytes):
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


class OpenAIRouteView(ProxyView):
    """An OpenAI-format route, served by any OpenAI-compatible provider."""

    # Endpoints whose streams report usage only when asked (`stream_options.include_usage`).
    streams_usage_on_request = False

    async def post(self, request):
        attribution = await self.authenticate(request)
        body = self.read_body(request)
        payload = self.parse_payload(body)
        route = await self.route(request, payload["model"])
        adapter = await self.adapter(request, route, attribution)
        if adapter.dialect is Dialect.ANTHROPIC:
            return await self.forward_to_anthropic(adapter, payload, route)
        content, transform = self.openai_body(body, payload, route)
        url = adapter.url(self.endpoint, route.upstream_model)
        if transform is None:
            return await self.forward_json(adapter, url=url, content=content)
        return await self.forward_stream(adapter, url=url, content=content, transform=transform)

    def openai_body(self, body: bytes, payload: dict, route: Route):
        """The bytes to send upstream (the client's own, untouched, where possible) and the stream transform."""
        changes = {}
        if route.upstream_model != payload["model"]:
            changes["model"] = route.upstream_model
        transform = None
        if self.record.stream:
            transform = streaming.Passthrough()
            options = payload.get("stream_options")
            if self.streams_usage_on_request and not (isinstance(options, dict) and options.get("include_usage")):
                changes["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
                transform = streaming.HideUsageChunk()
        return (orjson.dumps(payload | changes) if changes else body), transform

    async def forward_to_anthropic(self, adapter, payload: dict, route: Route) -> HttpResponse:
        raise invalid_request(
            f"{self.request.path} is not available for Anthropic models.", code="unsupported_by_provider"
        )


class ChatCompletionsView(OpenAIRouteView):
    endpoint = "chat/completions"
    streams_usage_on_request = True

    async def forward_to_anthropic(self, adapter, payload: dict, route: Route) -> HttpResponse:
        try:
            translated = chat_request_to_messages(payload, upstream_model=route.upstream_model)
        except TranslationError as exc:
            raise invalid_request(str(exc), code="unsupported_parameter", param=exc.param) from None
        content = orjson.dumps(translated)
        url = adapter.url("messages", route.upstream_model)
        if not self.record.stream:
            return await self.forward_json(adapter, url=url, content=content, to_chat=True)
        options = payload.get("stream_options")
        transform = streaming.AnthropicToChatChunks(
            model=payload["model"], include_usage=isinstance(options, dict) and bool(options.get("include_usage"))
        )
        return await self.forward_stream(adapter, url=url, content=content, transform=transform)


class CompletionsView(OpenAIRouteView):
    endpoint = "completions"
    streams_usage_on_request = True


class EmbeddingsView(OpenAIRouteView):
    endpoint = "embeddings"


class ResponsesView(OpenAIRouteView):
    endpoint = "responses"


class MessagesView(ProxyView):
    """Anthropic's Messages API, passed through natively."""

    error_format = ErrorFormat.ANTHROPIC
    endpoint = "messages"

    async def post(self, request):
        attribution = await self.authenticate(request)
        body = self.read_body(request)
        payload = self.parse_payload(body)
        route = await self.route(request, payload["model"])
        if route.provider.dialect is not Dialect.ANTHROPIC:
            raise invalid_request(
                f"/v1/messages serves Anthropic models; {payload['model']!r} is routed to {route.provider.name}.",
                code="unsupported_by_provider",
            )
        adapter = await self.adapter(request, route, attribution)
        content = (
            orjson.dumps(payload | {"model": route.upstream_model})
            if route.upstream_model != payload["model"]
            else body
        )
        url = adapter.url(self.endpoint, route.upstream_model)
        if not self.record.stream:
            return await self.forward_json(adapter, url=url, content=content)
        transform = streaming.Passthrough(dialect="anthropic")
        return await self.forward_stream(adapter, url=url, content=content, transform=transform)


class ModelsView(ProxyView):
    """The model list of the provider chosen by `x-provider` (or the default provider)."""

    async def get(self, request):
        attribution = await self.authenticate(request)
        provider_name = (request.headers.get("x-provider") or settings.GATEWAY_DEFAULT_PROVIDER).lower()
        if provider_name not in PROVIDERS:
            raise invalid_request(f"Unknown provider {provider_name!r}.", code="unknown_provider")
        route = Route(PROVIDERS[provider_name], "")
        self.record.provider = provider_name
        adapter = await self.adapter(request, route, attribution)
        upstream = await self.send(adapter, method="GET", url=adapter.url("models", None), content=None, stream=False)
        body = await self.read_upstream_body(upstream)
        if upstream.status_code >= 400:
            return self.upstream_error(upstream, body)
        parsed = _json_or_none(body)
        if not isinstance(parsed, dict):
            raise self.malformed_upstream(upstream)
        self.record.response_json = parsed
        return json_response(parsed, status=upstream.status_code)


class UnknownPathView(ProxyView):
    """Any other path under /v1/: a 404 in the format of the route family the path belongs to."""

    @property
    def error_format(self) -> ErrorFormat:
        return ErrorFormat.ANTHROPIC if self.request.path.startswith("/v1/messages") else ErrorFormat.OPENAI

    def handler_for(self, request):
        return self.not_found

    async def not_found(self, request, *args, **kwargs):
        # A good key books the 404 to its org, where the caller can see it; without one it is a 404 all the same.
        with contextlib.suppress(GatewayError):
            await self.authenticate(request)
        raise GatewayError(f"Unknown path: {request.method} {request.path}.", kind="not_found", code="unknown_path")
