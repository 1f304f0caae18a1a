"""The proxy's endpoints: async REST framework views, one per provider route.

Every request, rejected ones included, produces exactly one request record,
handed to the telemetry pipeline when the response (or its stream) ends.
"""

from __future__ import annotations

import contextlib

import orjson
from asgiref.sync import markcoroutinefunction
from django.conf import settings
from django.http import HttpResponse
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from budgets import begin_admission
from gateway_project import logs
from proxy import auth, catalog, router, tracing
from proxy.body import PREFIX_BYTES, TIMED_OUT, TOO_LARGE, UnreadBody
from proxy.credentials import target_credentials
from proxy.db import run_in_db_thread
from proxy.errors import ErrorFormat, GatewayError, invalid_request, json_response
from proxy.providers.adapters import adapter_for
from proxy.providers.base import Exchange, ProviderAdapter
from proxy.providers.registry import Dialect
from telemetry.handoff import pipeline
from telemetry.record import RequestRecord


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
    # The protocol the client speaks, where it may differ from the provider's (None: the provider's own).
    client_dialect: Dialect | None = None

    @classmethod
    def as_view(cls, **initkwargs):
        view = super().as_view(**initkwargs)
        markcoroutinefunction(view)
        return view

    async def dispatch(self, request, *args, **kwargs):
        self.args, self.kwargs, self.request = args, kwargs, request
        self.headers = {}
        self.admission = None
        self.pending_admission = None
        record = RequestRecord(path=request.path, method=request.method)
        # Tracing: the record's trace ids, its server span when sampled, the traceparent for upstream.
        self.upstream_traceparent = tracing.request_started(record, request)
        logs.bind_request(record)
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
            # The response keeps its error; the error's traceback would keep this frame, and with it the
            # whole request, in a reference cycle that only the garbage collector frees.
            exc.__traceback__ = None
        if self.pending_admission is not None:
            # Ended before reaching a provider: still read the admission, so that what Redis counted is settled.
            with contextlib.suppress(GatewayError):
                if (waiting := self.admitted()) is not None:
                    await waiting
        response["x-request-id"] = record.id
        if self.admission is not None:  # budgets: the rate-limit headers
            self.admission.add_headers(response, encoded=getattr(request, "sends_encoded_headers", False))
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
        record.rejected(error.code, response.content)
        if not record.request_body:
            # Refused before its body was looked at: the record keeps the size only.
            unread = getattr(self.request, "unread_body", None)
            record.body_unread(unread.size if unread is not None else len(self.request.body))
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
        self.record.authenticated(grant)
        attribution = await auth.attribute(request, grant)
        self.record.attribute(attribution)
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
        self.record.body_unread(unread.size, unread.prefix)
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

    async def admit(self, attribution: auth.Attribution, payload: dict, plan: router.RoutePlan) -> None:
        """Budgets and rate limits (the budgets app): started here, decided before the provider is called.

        The admission's Redis round trip runs while the provider call is prepared; `admitted`, called
        just before its first byte leaves, raises the 429 of a refused request. Like the price, the most
        output a request without max_tokens may bring is the first choice's (`route`).
        """
        first = plan.first_choice()
        self.pending_admission = await begin_admission(
            record=self.record,
            attribution=attribution,
            payload=payload,
            error_format=self.error_format,
            output_limit=first.max_output_tokens if first is not None else None,
        )

    def admitted(self):
        """Decide the admission begun by `admit`; an awaitable only when Redis has not answered yet.

        Called just before the first byte leaves for a provider (`Exchange.before_sending`). By then
        Redis has mostly answered, and a request that need not wait makes no coroutine for it.
        """
        pending, self.pending_admission = self.pending_admission, None
        if pending is None:
            return None
        admission = pending.ready()  # raises a refusal
        if admission is None:
            return self._wait_for_admission(pending)
        self.admission = admission
        return None

    async def _wait_for_admission(self, pending) -> None:
        self.admission = await pending.admitted()

    async def route(self, request, model: str, attribution: auth.Attribution) -> router.RoutePlan:
        """The model group that serves the request (a legacy route is a group of one deployment)."""
        plan = await router.plan_route(
            model=model, org_pk=attribution.grant.org_pk, provider_header=request.headers.get("x-provider")
        )
        # The first choice until an attempt says otherwise: budgets price the reservation with it. A group
        # with no enabled deployment has none; the router answers it (503 no_deployment_available).
        first = plan.first_choice()
        if first is not None:
            self.record.routed(first)
        return plan

    async def forward(self, request, plan: router.RoutePlan, attribution: auth.Attribution, payload: dict, body: bytes):
        """The provider's answer, after as many attempts and fallbacks as the plan allows."""
        exchange = Exchange(self.record, request.headers, request.META, self.upstream_traceparent, self.error_format)
        exchange.before_sending = self.admitted
        org_pk = attribution.grant.org_pk
        caller_key = request.headers.get("x-provider-api-key")

        async def open_adapter(target: router.Target) -> ProviderAdapter:
            return await self.target_adapter(target, exchange, org_pk=org_pk, caller_key=caller_key)

        call = router.Call(self.record, exchange, open_adapter, self.endpoint, payload, body)
        return await router.serve(plan, call)

    async def target_adapter(
        self, target: router.Target, exchange: Exchange, *, org_pk: int, caller_key: str | None
    ) -> ProviderAdapter:
        """The adapter for one attempt, with the deployment's own key and URL or else the org's."""
        api_key, base_url = await target_credentials(target, org_pk=org_pk, caller_key=caller_key)
        return adapter_for(
            target.provider,
            api_key=api_key,
            base_url=base_url,
            exchange=exchange,
            client_dialect=self.client_dialect,
            endpoint=self.endpoint,
        )


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


class OpenAIRouteView(ProxyView):
    """An OpenAI-format route, served by any OpenAI-compatible provider (chat completions by Anthropic too)."""

    client_dialect = Dialect.OPENAI

    async def post(self, request):
        attribution = await self.authenticate(request)
        body = self.read_body(request)
        payload = self.parse_payload(body)
        plan = await self.route(request, payload["model"], attribution)
        await self.admit(attribution, payload, plan)
        return await self.forward(request, plan, attribution, payload, body)


class ChatCompletionsView(OpenAIRouteView):
    endpoint = "chat/completions"


class CompletionsView(OpenAIRouteView):
    endpoint = "completions"


class EmbeddingsView(OpenAIRouteView):
    endpoint = "embeddings"


class ResponsesView(OpenAIRouteView):
    endpoint = "responses"


class MessagesView(ProxyView):
    """Anthropic's Messages API: passed through to Anthropic, translated for OpenAI-compatible providers."""

    error_format = ErrorFormat.ANTHROPIC
    endpoint = "messages"
    client_dialect = Dialect.ANTHROPIC

    async def post(self, request):
        attribution = await self.authenticate(request)
        body = self.read_body(request)
        payload = self.parse_payload(body)
        plan = await self.route(request, payload["model"], attribution)
        await self.admit(attribution, payload, plan)
        return await self.forward(request, plan, attribution, payload, body)


class CatalogView(ProxyView):
    """The gateway's own model catalog, in Anthropic's shape for the Anthropic SDK (it sends `anthropic-version`)."""

    http_method_names = ["get", "options"]

    @property
    def error_format(self) -> ErrorFormat:
        return ErrorFormat.ANTHROPIC if "HTTP_ANTHROPIC_VERSION" in self.request.META else ErrorFormat.OPENAI

    async def catalog(self, request) -> list[catalog.CatalogModel]:
        attribution = await self.authenticate(request)
        return await run_in_db_thread(catalog.model_catalog, org_pk=attribution.grant.org_pk)

    def answer(self, body: dict) -> HttpResponse:
        self.record.answered(json=body)
        return json_response(body, status=200)


class ModelsView(CatalogView):
    """The model groups and routes this key may use, whatever the providers offer."""

    async def get(self, request):
        models = await self.catalog(request)
        if self.error_format is ErrorFormat.OPENAI:
            return self.answer(catalog.openai_list(models))
        return self.answer(
            catalog.anthropic_page(
                models,
                limit=_anthropic_limit(request.GET.get("limit")),
                after_id=request.GET.get("after_id"),
                before_id=request.GET.get("before_id"),
            )
        )


class ModelView(CatalogView):
    """One model of the catalog; a 404 for a model this key may not use."""

    async def get(self, request, model_id: str):
        self.record.model = model_id
        models = await self.catalog(request)
        model = next((model for model in models if model.id == model_id), None)
        if model is None:
            raise GatewayError(
                f"The model {model_id!r} does not exist or you do not have access to it.",
                kind="not_found",
                code="model_not_found",
                param="model",
            )
        return self.answer(model.openai() if self.error_format is ErrorFormat.OPENAI else model.anthropic())


def _anthropic_limit(value: str | None) -> int:
    if value is None:
        return catalog.ANTHROPIC_DEFAULT_LIMIT
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= catalog.ANTHROPIC_MAX_LIMIT:
        raise invalid_request(
            f"limit must be an integer from 1 to {catalog.ANTHROPIC_MAX_LIMIT}.", code="invalid_value", param="limit"
        )
    return int(value)


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
