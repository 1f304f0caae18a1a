"""The proxy's endpoints: async REST framework views, one per provider route.

Every request, rejected ones included, produces exactly one request record,
handed to the telemetry pipeline when the response (or its stream) ends.
"""

from __future__ import annotations

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
from proxy.credentials import upstream_credentials
from proxy.errors import ErrorFormat, GatewayError, invalid_request, json_response
from proxy.providers.base import PASSTHROUGH_RESPONSE_HEADER_PREFIXES, adapter_for, shared_client, upstream_failure
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


class GatewayKeyAuthentication:
    """Authenticates the gateway key the SDK sends as its API key."""

    async def authenticate(self, request, view) -> auth.KeyGrant:
        plaintext = auth.presented_key(request, prefer_anthropic=view.error_format is ErrorFormat.ANTHROPIC)
        return await auth.authenticate_key(plaintext)


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
            handler = getattr(self, request.method.lower(), None)
            if handler is None or request.method.lower() not in self.http_method_names:
                raise GatewayError(
                    f"{request.method} is not allowed here.", kind="method_not_allowed", code="method_not_allowed"
                )
            response = await handler(request, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure is rendered and recorded by the one handler
            response = self.handle_exception(exc)
        response["x-request-id"] = record.id
        if not response.streaming:
            record.response_size = len(response.content)
            record.finish(response.status_code)
            pipeline.submit(record)
        return response

    def handle_exception(self, exc):
        response = api_settings.EXCEPTION_HANDLER(exc, {"view": self, "request": self.request})
        error = response.gateway_error
        record = self.record
        record.error_type = error.code
        record.response_body = response.content
        return response

    # --- Steps shared by the routes ---------------------------------------------

    async def authenticate(self, request) -> auth.Attribution:
        grant = await self.authentication_classes[0]().authenticate(request, self)
        record = self.record
        record.org_id = grant.org_slug
        attribution = await auth.attribute(request, grant)
        record.user_id = attribution.user_id
        record.experiment_id = attribution.experiment_id
        record.thread_id = attribution.thread_id
        if attribution.project is not None:
            record.project_id = attribution.project.slug
            record.project_name = attribution.project.name
        record.content_logging = attribution.content_logging
        return attribution

    def read_json_body(self, request) -> dict:
        declared = request.headers.get("content-length")
        limit = settings.GATEWAY_MAX_BODY_BYTES
        if declared and declared.isdigit() and int(declared) > limit:
            raise GatewayError(
                f"The request body is larger than {limit} bytes.", kind="request_too_large", code="request_too_large"
            )
        body = request.body
        self.record.request_body = body if len(body) <= limit else body[:limit]
        if len(body) > limit:
            raise GatewayError(
                f"The request body is larger than {limit} bytes.", kind="request_too_large", code="request_too_large"
            )
        return body

    def parse_payload(self, body: bytes) -> dict:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise invalid_request(f"The request body is not valid JSON: {exc}.", code="invalid_json") from None
        if not isinstance(payload, dict):
            raise invalid_request("The request body must be a JSON object.", code="invalid_json")
        self.record.request_json = payload
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise invalid_request("You must provide a model parameter.", code="missing_model", param="model")
        self.record.model = model
        self.record.stream = payload.get("stream") is True
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
        client = shared_client()
        headers = adapter.headers(self.request.headers, traceparent=self.upstream_traceparent)
        timeout = _timeout(settings.GATEWAY_UPSTREAM_TIMEOUT, settings.GATEWAY_UPSTREAM_CONNECT_TIMEOUT)
        upstream_request = client.build_request(method, _url(url), content=content, headers=headers, timeout=timeout)
        started = time.perf_counter()
        try:
            upstream = await client.send(upstream_request, stream=stream)
        except httpx.HTTPError as exc:
            self.record.provider_latency_ms = (time.perf_counter() - started) * 1000.0
            failure = upstream_failure(exc)
            self.record.provider_error_type = failure.code
            raise failure from None
        self.record.provider_latency_ms = (time.perf_counter() - started) * 1000.0
        self.record.provider_status_code = upstream.status_code
        self.record.provider_request_id = upstream.headers.get("x-request-id") or upstream.headers.get("request-id")
        return upstream

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
            if name.startswith(PASSTHROUGH_RESPONSE_HEADER_PREFIXES) or name == "request-id":
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
        body = upstream.content
        if upstream.status_code >= 400:
            return self.upstream_error(upstream, body, translate_to_chat=to_chat)
        parsed = _json_or_none(body)
        if not isinstance(parsed, dict):
            raise self.malformed_upstream(upstream)
        if to_chat:
            # Priced from Anthropic's own counts: the chat shape has no place for cache writes.
            self.record.usage = parsed.get("usage")
            parsed = messages_response_to_chat(parsed, model=self.record.model)
            body = orjson.dumps(parsed)
        self.record.response_json = parsed
        return self.client_response(upstream, body, content_type="application/json")

    async def forward_stream(self, adapter, *, url: str, content: bytes, transform) -> HttpResponse:
        upstream = await self.send(adapter, method="POST", url=url, content=content, stream=True)
        if upstream.status_code >= 400:
            body = await _read_and_close(upstream)
            return self.upstream_error(
                upstream, body, translate_to_chat=isinstance(transform, streaming.AnthropicToChatChunks)
            )
        if "text/event-stream" not in upstream.headers.get("content-type", ""):
            await upstream.aclose()
            raise self.malformed_upstream(upstream)
        response = StreamingHttpResponse(
            streaming.relay(upstream, record=self.record, transform=transform, error_format=self.error_format),
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


def _json_or_none(body: bytes):
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


async def _read_and_close(upstream: httpx.Response) -> bytes:
    try:
        return await upstream.aread()
    except httpx.HTTPError:
        return b""
    finally:
        await upstream.aclose()


class OpenAIRouteView(ProxyView):
    """An OpenAI-format route, served by any OpenAI-compatible provider."""

    # Endpoints whose streams report usage only when asked (`stream_options.include_usage`).
    streams_usage_on_request = False

    async def post(self, request):
        body = self.read_json_body(request)
        attribution = await self.authenticate(request)
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
        body = self.read_json_body(request)
        attribution = await self.authenticate(request)
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
        if upstream.status_code >= 400:
            return self.upstream_error(upstream, upstream.content)
        parsed = _json_or_none(upstream.content)
        if not isinstance(parsed, dict):
            raise self.malformed_upstream(upstream)
        self.record.response_json = parsed
        return json_response(parsed, status=upstream.status_code)
