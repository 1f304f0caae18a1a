"""Talking to providers: one shared HTTP client, one small adapter per wire protocol.

An adapter knows where a provider's endpoints are and how it authenticates;
mapping payloads between protocols lives in proxy/translation.py.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from functools import lru_cache
from http.cookiejar import CookieJar
from urllib.parse import quote

import aiohttp
import httpx
from django.conf import settings
from httpx_aiohttp import AiohttpTransport

from proxy.errors import GatewayError, invalid_request
from proxy.providers.registry import Dialect, ProviderSpec

ANTHROPIC_DEFAULT_VERSION = "2023-06-01"

# Response headers worth passing back: SDKs read them for retries and rate limits.
PASSTHROUGH_RESPONSE_HEADER_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-", "retry-after", "openai-")
# ...except the deployment's own OpenAI account, and cookies, which belong to the gateway's connection.
WITHHELD_RESPONSE_HEADERS = frozenset({"openai-organization", "openai-project", "set-cookie", "set-cookie2"})
# Only encodings whose expansion per read is bounded (deflate: about 1000-fold), so the size cap holds.
ACCEPTED_ENCODINGS = "gzip, deflate"
_DEPLOYMENT_NAME = re.compile(r"[A-Za-z0-9._-]+")
_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "::1", "0.0.0.0", "::"})


@lru_cache(maxsize=1024)
def passed_back(header: str) -> bool:
    """Whether a provider's response header (lower-case) reaches the caller."""
    if header in WITHHELD_RESPONSE_HEADERS:
        return False
    return header.startswith(PASSTHROUGH_RESPONSE_HEADER_PREFIXES) or header == "request-id"


class _NoCookies(CookieJar):
    """The client is shared by every caller, so a cookie one provider answer sets must never be sent again."""

    def set_cookie(self, cookie) -> None:
        pass

    def extract_cookies(self, response, request) -> None:
        pass


class _CookielessAiohttpTransport(AiohttpTransport):
    def get_client(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.limits.max_connections or 0,
            keepalive_timeout=self.limits.keepalive_expiry,
            ssl=self.ssl_context,
        )
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())


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
            transport=_CookielessAiohttpTransport(limits=limits),
            timeout=httpx.Timeout(settings.GATEWAY_UPSTREAM_TIMEOUT, connect=settings.GATEWAY_UPSTREAM_CONNECT_TIMEOUT),
            cookies=_NoCookies(),
            headers={"accept-encoding": ACCEPTED_ENCODINGS},
        )
        _client_loop = loop
    return _client


async def close_shared_client() -> None:
    global _client
    if _client is not None:
        await _client.aclose()
        _client = None


def upstream_failure(exc: Exception, *, provider: str = "", base_url: str = "") -> GatewayError:
    """Map a transport failure to 504 (the provider was too slow) or 502 (it could not be reached or spoke badly).

    The message names the provider, its host and the reason, because a misconfigured base URL or key is
    what a newcomer hits first, and "could not be reached" alone sends them searching.
    """
    where = f"{provider or 'the provider'} at {display_host(base_url)}" if base_url else (provider or "the provider")
    causes = []
    current: BaseException | None = exc
    while current is not None and len(causes) < 8:
        causes.append(current)
        current = current.__cause__ or current.__context__

    def unreachable(reason: str) -> GatewayError:
        return GatewayError(f"Could not reach {where}: {reason}.", kind="bad_gateway", code="upstream_unreachable")

    for cause in causes:
        if isinstance(cause, aiohttp.ConnectionTimeoutError):
            connect = settings.GATEWAY_UPSTREAM_CONNECT_TIMEOUT
            return unreachable(f"the connection timed out after {connect:g} s (GATEWAY_UPSTREAM_CONNECT_TIMEOUT)")
        if isinstance(cause, aiohttp.ServerTimeoutError | asyncio.TimeoutError | TimeoutError):
            return _timed_out(where)
        if isinstance(cause, aiohttp.ClientConnectorDNSError):
            return unreachable(f"DNS lookup failed for {httpx.URL(base_url).host or 'its host'}")
        if isinstance(cause, aiohttp.ClientSSLError | ssl.SSLError):
            return unreachable(f"TLS handshake failed ({_first_line(cause)})")
        if isinstance(cause, ConnectionRefusedError):
            return unreachable("connection refused")
        if isinstance(cause, aiohttp.ClientConnectorError):
            os_error = cause.os_error
            if isinstance(os_error, ConnectionRefusedError):
                return unreachable("connection refused")
            return unreachable(_first_line(os_error) or "the connection failed")
    if isinstance(exc, httpx.TimeoutException) and not any(isinstance(c, aiohttp.ClientError) for c in causes[1:]):
        return _timed_out(where)
    detail = _first_line(causes[-1])
    return GatewayError(
        f"The connection to {where} failed{': ' + detail if detail else ''}.",
        kind="bad_gateway",
        code="upstream_connection_error",
    )


def _timed_out(where: str) -> GatewayError:
    limit = settings.GATEWAY_UPSTREAM_TIMEOUT
    return GatewayError(
        f"{where[:1].upper()}{where[1:]} did not answer within {limit:g} s (GATEWAY_UPSTREAM_TIMEOUT).",
        kind="gateway_timeout",
        code="upstream_timeout",
    )


def _first_line(exc: BaseException | None) -> str:
    text = str(exc or "").strip()
    return text.splitlines()[0][:200] if text else ""


@lru_cache(maxsize=256)
def _host_and_port(base_url: str) -> tuple[str, int]:
    url = httpx.URL(base_url)
    return url.host.lower(), url.port or (443 if url.scheme == "https" else 80)


def display_host(base_url: str) -> str:
    """host:port of a base URL, never its path or any credentials in it."""
    host, port = _host_and_port(base_url)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_loopback(host: str) -> bool:
    return host in _LOOPBACK_NAMES or host.startswith("127.")


@lru_cache(maxsize=1024)
def points_at_gateway(base_url: str, *, server: tuple[str, int] | None, host_header: str | None) -> bool:
    """Whether a provider's base URL is this gateway's own address: the request would loop back here."""
    host, port = _host_and_port(base_url)
    if server is not None and port == server[1]:
        server_host = server[0].lower()
        if host == server_host or (_is_loopback(host) and _is_loopback(server_host)):
            return True
    if host_header:
        named_host, _, named_port = host_header.lower().rpartition(":")
        if named_port.isdigit() and (named_host.strip("[]"), int(named_port)) == (host, port):
            return True
    return False


def deployment_path_segment(model: str) -> str:
    """A model name that goes into a URL path (Azure deployments): a plain name, never a path or a query."""
    if not _DEPLOYMENT_NAME.fullmatch(model) or not model.strip("."):
        raise invalid_request(
            f"The model {model[:100]!r} is not a valid deployment name: use letters, digits, '.', '_' and '-'.",
            code="invalid_model",
            param="model",
        )
    return quote(model, safe="")


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
        deployment = deployment_path_segment(upstream_model)
        return f"{self.base_url}/openai/deployments/{deployment}/{endpoint}?api-version={version}"

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
