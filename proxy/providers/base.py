"""Talking to providers: one shared HTTP client, one small adapter per wire protocol.

An adapter knows where a provider's endpoints are and how it authenticates;
mapping payloads between protocols lives in proxy/translation.py.
"""

from __future__ import annotations

import asyncio

import aiohttp
import httpx
from django.conf import settings
from httpx_aiohttp import AiohttpTransport

from proxy.errors import GatewayError
from proxy.providers.registry import Dialect, ProviderSpec

ANTHROPIC_DEFAULT_VERSION = "2023-06-01"

# Response headers worth passing back: SDKs read them for retries and rate limits.
PASSTHROUGH_RESPONSE_HEADER_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-", "retry-after", "openai-")

_client: httpx.AsyncClient | None = None
_client_loop: asyncio.AbstractEventLoop | None = None


def shared_client() -> httpx.AsyncClient:
    """The process's upstream client, on the aiohttp transport (far faster than httpx's own pool).

    One per event loop: a server process has exactly one; test runs may start several.
    """
    global _client, _client_loop
    loop = asyncio.get_running_loop()
    if _client is None or _client_loop is not loop:
        limits = httpx.Limits(
            max_connections=settings.GATEWAY_UPSTREAM_MAX_CONNECTIONS,
            max_keepalive_connections=settings.GATEWAY_UPSTREAM_MAX_CONNECTIONS,
        )
        _client = httpx.AsyncClient(
            transport=AiohttpTransport(limits=limits),
            timeout=httpx.Timeout(settings.GATEWAY_UPSTREAM_TIMEOUT, connect=settings.GATEWAY_UPSTREAM_CONNECT_TIMEOUT),
        )
        _client_loop = loop
    return _client


async def close_shared_client() -> None:
    global _client
    if _client is not None:
        await _client.aclose()
        _client = None


def upstream_failure(exc: Exception) -> GatewayError:
    """Map a transport failure to 504 (the provider was too slow) or 502 (it could not be reached or spoke badly)."""
    causes = []
    current: BaseException | None = exc
    while current is not None and len(causes) < 8:
        causes.append(current)
        current = current.__cause__ or current.__context__
    if any(isinstance(c, aiohttp.ServerTimeoutError | asyncio.TimeoutError | TimeoutError) for c in causes):
        return GatewayError("The provider did not answer in time.", kind="gateway_timeout", code="upstream_timeout")
    if any(isinstance(c, aiohttp.ClientConnectorError | ConnectionRefusedError) for c in causes):
        return GatewayError("The provider could not be reached.", kind="bad_gateway", code="upstream_unreachable")
    if isinstance(exc, httpx.TimeoutException) and not any(isinstance(c, aiohttp.ClientError) for c in causes[1:]):
        return GatewayError("The provider did not answer in time.", kind="gateway_timeout", code="upstream_timeout")
    return GatewayError("The connection to the provider failed.", kind="bad_gateway", code="upstream_connection_error")


class ProviderAdapter:
    dialect: Dialect = Dialect.OPENAI
    forwarded_request_headers: tuple[str, ...] = ()

    def __init__(self, spec: ProviderSpec, *, api_key: str, base_url: str):
        self.spec = spec
        self.api_key = api_key
        self.base_url = base_url

    def url(self, endpoint: str, upstream_model: str | None) -> str:
        return f"{self.base_url}/{endpoint}"

    def auth_headers(self) -> dict[str, str]:
        raise NotImplementedError

    def headers(self, client_headers, *, traceparent: str) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "*/*", "traceparent": traceparent}
        for name in self.forwarded_request_headers:
            value = client_headers.get(name)
            if value:
                headers[name] = value
        headers.update(self.auth_headers())
        return headers


class OpenAIAdapter(ProviderAdapter):
    dialect = Dialect.OPENAI
    forwarded_request_headers = ("openai-beta",)

    def auth_headers(self):
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}


class AzureOpenAIAdapter(OpenAIAdapter):
    """Azure serves each model as a deployment, keyed by `api-key`."""

    def url(self, endpoint: str, upstream_model: str | None) -> str:
        version = settings.AZURE_API_VERSION
        if endpoint == "models" or upstream_model is None:
            return f"{self.base_url}/openai/{endpoint}?api-version={version}"
        return f"{self.base_url}/openai/deployments/{upstream_model}/{endpoint}?api-version={version}"

    def auth_headers(self):
        return {"api-key": self.api_key} if self.api_key else {}


class AnthropicAdapter(ProviderAdapter):
    dialect = Dialect.ANTHROPIC
    forwarded_request_headers = ("anthropic-beta",)

    def url(self, endpoint: str, upstream_model: str | None) -> str:
        return f"{self.base_url}/v1/{endpoint}"

    def headers(self, client_headers, *, traceparent: str) -> dict[str, str]:
        headers = super().headers(client_headers, traceparent=traceparent)
        headers["anthropic-version"] = client_headers.get("anthropic-version") or ANTHROPIC_DEFAULT_VERSION
        return headers

    def auth_headers(self):
        return {"x-api-key": self.api_key} if self.api_key else {}


ADAPTERS: dict[Dialect, type[ProviderAdapter]] = {
    Dialect.OPENAI: OpenAIAdapter,
    Dialect.AZURE: AzureOpenAIAdapter,
    Dialect.ANTHROPIC: AnthropicAdapter,
}


def adapter_for(spec: ProviderSpec, *, api_key: str, base_url: str) -> ProviderAdapter:
    if not base_url:
        raise GatewayError(
            f"No base URL is configured for provider {spec.name!r}: set {spec.env_prefix}_BASE_URL.",
            kind="invalid_request",
            code="provider_not_configured",
        )
    return ADAPTERS[spec.dialect](spec, api_key=api_key, base_url=base_url)
