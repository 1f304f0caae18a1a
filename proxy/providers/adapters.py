"""One small adapter per wire protocol, and the map from a provider's dialect to its adapter.

Each adapter maps payloads and errors only; the exchange is ProviderAdapter's (proxy/providers/base.py).
"""

from __future__ import annotations

import httpx
import orjson
from django.conf import settings

from proxy import streaming
from proxy.errors import GatewayError, invalid_request
from proxy.messages_to_chat import (
    UnreadableResponse,
    chat_error_to_messages,
    chat_response_to_messages,
    messages_request_to_chat,
    stop_sequences,
    wants_thinking,
)
from proxy.providers.base import Exchange, ProviderAdapter, deployment_path_segment
from proxy.providers.registry import Dialect, ProviderSpec
from proxy.translation import (
    TranslationError,
    chat_request_to_messages,
    messages_error_to_chat,
    messages_response_to_chat,
)

ANTHROPIC_DEFAULT_VERSION = "2023-06-01"
# Endpoints whose streams report usage only when asked (`stream_options.include_usage`).
STREAMS_USAGE_ON_REQUEST = frozenset({"chat/completions", "completions"})


class OpenAIAdapter(ProviderAdapter):
    dialect = Dialect.OPENAI
    forwarded_request_headers = ("openai-beta",)

    def prepare(self, endpoint: str, payload: dict, body: bytes):
        record = self.exchange.record
        changes = {}
        if record.upstream_model != payload["model"]:
            changes["model"] = record.upstream_model
        transform = None
        if record.stream:
            transform = streaming.Passthrough()
            options = payload.get("stream_options")
            if endpoint in STREAMS_USAGE_ON_REQUEST and not (
                isinstance(options, dict) and options.get("include_usage")
            ):
                # Asked for, so the request is billed by the provider's count; hidden from a client that did not ask.
                changes["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
                transform = streaming.HideUsageChunk()
        content = orjson.dumps(payload | changes) if changes else body
        return self.url(endpoint, record.upstream_model), content, transform

    def auth_headers(self):
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}


class AzureOpenAIAdapter(OpenAIAdapter):
    """Azure serves each model as a deployment, keyed by `api-key`."""

    def url(self, endpoint: str, upstream_model: str | None) -> str:
        version = settings.AZURE_API_VERSION
        if endpoint == "models" or upstream_model is None:
            return f"{self.base_url}/openai/{endpoint}?api-version={version}"
        deployment = deployment_path_segment(upstream_model)
        return f"{self.base_url}/openai/deployments/{deployment}/{endpoint}?api-version={version}"

    def auth_headers(self):
        return {"api-key": self.api_key} if self.api_key else {}


class AnthropicAdapter(ProviderAdapter):
    dialect = Dialect.ANTHROPIC
    stream_dialect = "anthropic"
    forwarded_request_headers = ("anthropic-beta",)

    def url(self, endpoint: str, upstream_model: str | None) -> str:
        return f"{self.base_url}/v1/{endpoint}"

    def headers(self, client_headers, *, traceparent: str) -> dict[str, str]:
        headers = super().headers(client_headers, traceparent=traceparent)
        headers["anthropic-version"] = client_headers.get("anthropic-version") or ANTHROPIC_DEFAULT_VERSION
        return headers

    def auth_headers(self):
        return {"x-api-key": self.api_key} if self.api_key else {}


class ChatToMessagesAdapter(AnthropicAdapter):
    """Chat completions served by Anthropic's Messages API: requests, answers, errors and streams translated."""

    stream_dialect = "openai"

    def prepare(self, endpoint: str, payload: dict, body: bytes):
        record = self.exchange.record
        try:
            translated = chat_request_to_messages(payload, upstream_model=record.upstream_model)
        except TranslationError as exc:
            raise invalid_request(str(exc), code="unsupported_parameter", param=exc.param) from None
        transform = None
        if record.stream:
            options = payload.get("stream_options")
            transform = streaming.AnthropicToChatChunks(
                model=payload["model"], include_usage=isinstance(options, dict) and bool(options.get("include_usage"))
            )
        return self.url("messages", record.upstream_model), orjson.dumps(translated), transform

    def translated_response(self, parsed: dict, upstream: httpx.Response) -> dict:
        record = self.exchange.record
        # Priced from Anthropic's own counts: the chat shape has no place for cache writes.
        record.usage = parsed.get("usage")
        try:
            return messages_response_to_chat(parsed, model=record.model)
        except (AttributeError, KeyError, TypeError):
            raise self.malformed(upstream) from None

    def translated_error(self, parsed: dict | None, status: int) -> dict:
        return messages_error_to_chat(parsed, status)


class MessagesToChatAdapter(OpenAIAdapter):
    """Anthropic Messages served by an OpenAI-compatible provider: requests, answers, errors and streams translated."""

    stream_dialect = "anthropic"
    # Providers whose output limit is `max_completion_tokens` (their reasoning models refuse `max_tokens`).
    max_completion_tokens_providers = frozenset({"openai", "azure"})

    def prepare(self, endpoint: str, payload: dict, body: bytes):
        record = self.exchange.record
        field = "max_completion_tokens" if self.spec.name in self.max_completion_tokens_providers else "max_tokens"
        try:
            translated = messages_request_to_chat(payload, upstream_model=record.upstream_model, max_tokens_field=field)
        except TranslationError as exc:
            # Anthropic's errors carry no param field; its own messages start with the field's path.
            message = f"{exc.param}: {exc.message}" if exc.param else exc.message
            raise invalid_request(message, code="unsupported_parameter", param=exc.param) from None
        transform = None
        if record.stream:
            transform = streaming.ChatChunksToAnthropic(
                model=payload["model"], stop=stop_sequences(payload), thinking=wants_thinking(payload)
            )
        return self.url("chat/completions", record.upstream_model), orjson.dumps(translated), transform

    def translated_response(self, parsed: dict, upstream: httpx.Response) -> dict:
        record = self.exchange.record
        # Priced from the provider's own counts (reasoning and audio tokens have no Anthropic field).
        record.usage = parsed.get("usage") if isinstance(parsed.get("usage"), dict) else None
        try:
            request = record.request_json
            return chat_response_to_messages(
                parsed, model=record.model, stop=stop_sequences(request), thinking=wants_thinking(request)
            )
        except UnreadableResponse:
            raise self.malformed(upstream) from None

    def translated_error(self, parsed: dict | None, status: int) -> dict:
        return chat_error_to_messages(parsed, status)


class AzureMessagesToChatAdapter(MessagesToChatAdapter, AzureOpenAIAdapter):
    """Anthropic Messages served by an Azure OpenAI deployment."""


ADAPTERS: dict[Dialect, type[ProviderAdapter]] = {
    Dialect.OPENAI: OpenAIAdapter,
    Dialect.AZURE: AzureOpenAIAdapter,
    Dialect.ANTHROPIC: AnthropicAdapter,
}
# Where the client speaks another protocol than the provider: (client's dialect, endpoint, provider's dialect).
TRANSLATING_ADAPTERS: dict[tuple[Dialect, str, Dialect], type[ProviderAdapter]] = {
    (Dialect.OPENAI, "chat/completions", Dialect.ANTHROPIC): ChatToMessagesAdapter,
    (Dialect.ANTHROPIC, "messages", Dialect.OPENAI): MessagesToChatAdapter,
    (Dialect.ANTHROPIC, "messages", Dialect.AZURE): AzureMessagesToChatAdapter,
}

# Azure speaks OpenAI's protocol, with URLs and keys of its own.
_PROTOCOL = {Dialect.AZURE: Dialect.OPENAI}


def adapter_for(
    spec: ProviderSpec,
    *,
    api_key: str,
    base_url: str,
    exchange: Exchange,
    client_dialect: Dialect | None = None,
    endpoint: str = "",
) -> ProviderAdapter:
    """The adapter for a call to `spec` from a client speaking `client_dialect` (None: the provider's own)."""
    if not base_url:
        raise GatewayError(
            f"No base URL is configured for provider {spec.name!r}: set {spec.env_prefix}_BASE_URL.",
            kind="invalid_request",
            code="provider_not_configured",
        )
    adapter_class = ADAPTERS[spec.dialect]
    if client_dialect is not None and client_dialect is not _PROTOCOL.get(spec.dialect, spec.dialect):
        translating = TRANSLATING_ADAPTERS.get((client_dialect, endpoint, spec.dialect))
        if translating is None:
            raise invalid_request(
                f"{exchange.record.path} is not available for {spec.label} models.", code="unsupported_by_provider"
            )
        adapter_class = translating
    return adapter_class(spec, api_key=api_key, base_url=base_url, exchange=exchange)
