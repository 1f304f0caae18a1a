"""Talking to providers: one shared HTTP client and the base adapter, which owns the exchange.

The adapters for each wire protocol (proxy/providers/adapters.py) know where a provider's
endpoints are, how it authenticates and how its payloads and errors map to the client's;
the mapping between protocols itself lives in proxy/translation.py.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from http.cookiejar import CookieJar
from typing import TYPE_CHECKING
from urllib.parse import quote

import aiohttp
import httpx
import orjson
from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from httpx_aiohttp import AiohttpTransport

from proxy import streaming, tracing
from proxy.errors import ErrorFormat, GatewayError, invalid_request
from proxy.providers.registry import Dialect, ProviderSpec

if TYPE_CHECKING:
    from telemetry.record import RequestRecord

logger = logging.getLogger(__name__)

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


@dataclass(slots=True)
class Exchange:
    """The client's side of one call to a provider: its record, its headers, and the error format it reads."""

    record: RequestRecord
    client_headers: Mapping[str, str]
    meta: dict
    traceparent: str
    error_format: ErrorFormat
    # Called with the record once a relayed stream has ended, however it ended (the router's bookkeeping).
    on_stream_end: Callable[[RequestRecord], None] | None = None
    # Called just before a request first leaves for a provider: the budgets' admission, whose Redis
    # round trip runs while the request is prepared; it raises the request's refusal, and returns an
    # awaitable to wait on when Redis has not answered yet.
    before_sending: Callable[[], Awaitable[None] | None] | None = None


class ProviderAdapter:
    """One provider call: this class owns the exchange, subclasses map one wire protocol's payloads and errors.

    The exchange is the shared client, its timeouts, the response byte cap, transport failures mapped to
    502/504, and the refusal to call the gateway itself. Subclasses override the mapping hooks only.
    """

    dialect: Dialect = Dialect.OPENAI
    # How the record reads the stream relayed to the client.
    stream_dialect = "openai"
    forwarded_request_headers: tuple[str, ...] = ()

    def __init__(self, spec: ProviderSpec, *, api_key: str, base_url: str, exchange: Exchange | None = None):
        self.spec = spec
        self.api_key = api_key
        self.base_url = base_url
        self.exchange = exchange
        self.started = 0.0

    # --- Mapping: what each protocol overrides ---------------------------------

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

    def prepare(self, endpoint: str, payload: dict, body: bytes):
        """The URL, the bytes to send (the client's own, untouched, where possible) and the stream transform.

        The transform is None for a request that is not streamed.
        """
        record = self.exchange.record
        upstream_model = record.upstream_model
        content = orjson.dumps(payload | {"model": upstream_model}) if upstream_model != payload["model"] else body
        transform = streaming.Passthrough(dialect=self.stream_dialect) if record.stream else None
        return self.url(endpoint, upstream_model), content, transform

    def translated_response(self, parsed: dict, upstream: httpx.Response) -> dict | None:
        """The client's answer where it differs from the provider's; None sends the provider's bytes."""
        return None

    def translated_error(self, parsed: dict | None, status: int) -> dict | None:
        """The client's error body where it differs from the provider's; None sends the provider's bytes."""
        return None

    # --- The exchange ------------------------------------------------------------

    async def forward(self, endpoint: str, payload: dict, body: bytes) -> HttpResponse:
        url, content, transform = self.prepare(endpoint, payload, body)
        if transform is None:
            return await self.call_json(url, content)
        return await self.call_stream(url, content, transform)

    async def call_json(self, url: str, content: bytes) -> HttpResponse:
        upstream = await self.send("POST", url, content, stream=False)
        body = await self.read(upstream)
        if upstream.status_code >= 400:
            return self.error_response(upstream, body)
        parsed = _json_or_none(body)
        if not isinstance(parsed, dict):
            raise self.malformed(upstream)
        translated = self.translated_response(parsed, upstream)
        if translated is not None:
            parsed = translated
            body = orjson.dumps(translated)
        self.exchange.record.answered(json=parsed)
        return self.client_response(upstream, body, content_type="application/json")

    async def call_stream(self, url: str, content: bytes, transform) -> HttpResponse:
        upstream = await self.send("POST", url, content, stream=True)
        if upstream.status_code >= 400:
            return self.error_response(upstream, await self.read(upstream))
        encoding = upstream.headers.get("content-encoding")
        if "text/event-stream" not in upstream.headers.get("content-type", "") or not streaming.decodable(encoding):
            await streaming.close_upstream(upstream)
            raise self.malformed(upstream)
        response = StreamingHttpResponse(
            streaming.relay(
                upstream,
                record=self.exchange.record,
                transform=transform,
                error_format=self.exchange.error_format,
                limits=streaming.StreamLimits.from_settings(),
                encoding=encoding,
                on_finish=self.exchange.on_stream_end,
            ),
            content_type="text/event-stream",
        )
        response["cache-control"] = "no-cache"
        response["x-accel-buffering"] = "no"
        self.copy_headers(upstream, response)
        return response

    async def send(self, method: str, url: str, content: bytes | None, *, stream: bool) -> httpx.Response:
        """The provider's response with its headers read; its body is read by `read` or by the relay."""
        self.refuse_to_call_gateway()
        exchange = self.exchange
        client = shared_client()
        headers = self.headers(exchange.client_headers, traceparent=exchange.traceparent)
        if stream:
            # Compressing a stream only delays its events; an upstream that still does is decoded by the relay.
            headers["accept-encoding"] = "identity"
        timeout = _timeout(settings.GATEWAY_UPSTREAM_TIMEOUT, settings.GATEWAY_UPSTREAM_CONNECT_TIMEOUT)
        upstream_request = client.build_request(method, _url(url), content=content, headers=headers, timeout=timeout)
        if exchange.before_sending is not None and (waiting := exchange.before_sending()) is not None:
            await waiting
        # Tracing: each attempt is a client span, and the traceparent sent upstream names it.
        traceparent = tracing.attempt_started(exchange.record, provider=self.spec.name, method=method)
        if traceparent is not None:
            upstream_request.headers["traceparent"] = traceparent
        self.started = started = time.perf_counter()
        try:
            # Always as a stream: a body is read under GATEWAY_MAX_RESPONSE_BYTES, never whole by httpx.
            upstream = await client.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            raise self.transport_failure(exc, latency_ms=(time.perf_counter() - started) * 1000.0) from None
        response_headers = upstream.headers
        tracing.attempt_answered(exchange.record, upstream.status_code)
        exchange.record.upstream_answered(
            upstream.status_code,
            response_headers.get("x-request-id") or response_headers.get("request-id"),
            (time.perf_counter() - started) * 1000.0,
        )
        return upstream

    async def read(self, upstream: httpx.Response) -> bytes:
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
            await streaming.close_upstream(upstream)
            tracing.attempt_ended(self.exchange.record)
        self.exchange.record.upstream_read((time.perf_counter() - self.started) * 1000.0)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def refuse_to_call_gateway(self) -> None:
        """A base URL that is the gateway's own address would loop (a shell's OPENAI_BASE_URL, meant for an SDK)."""
        meta = self.exchange.meta
        server_port = meta.get("SERVER_PORT")
        server = (meta.get("SERVER_NAME", ""), int(server_port)) if server_port and server_port.isdigit() else None
        if not points_at_gateway(self.base_url, server=server, host_header=meta.get("HTTP_HOST")):
            return
        spec = self.spec
        message = (
            f"The base URL of provider {spec.name!r} ({display_host(self.base_url)}) is this gateway's own "
            f"address, so the request would come straight back here. Point {spec.env_prefix}_BASE_URL (or the "
            f"org's {spec.label} credential) at the provider itself; a shell that exported {spec.env_prefix}_BASE_URL "
            "for an SDK is the usual cause."
        )
        record = self.exchange.record
        record.upstream_failed("upstream_is_gateway", message)
        logger.warning("Refused to forward request %s to the gateway itself: %s", record.id, message)
        raise GatewayError(message, kind="bad_gateway", code="upstream_is_gateway")

    def transport_failure(self, exc: httpx.HTTPError, *, latency_ms: float | None = None) -> GatewayError:
        failure = upstream_failure(exc, provider=self.spec.name, base_url=self.base_url)
        record = self.exchange.record
        record.upstream_failed(failure.code, failure.message, latency_ms)
        tracing.attempt_ended(record, failure.code)
        logger.warning("Request %s: %s", record.id, failure.message)
        return failure

    def response_too_large(self, limit: int) -> GatewayError:
        message = (
            f"The provider's response is larger than the gateway's limit of {limit} bytes "
            "(GATEWAY_MAX_RESPONSE_BYTES, counted after decompression)."
        )
        self.exchange.record.upstream_failed("response_too_large", message)
        return GatewayError(message, kind="bad_gateway", code="upstream_response_too_large")

    def malformed(self, upstream: httpx.Response) -> GatewayError:
        self.exchange.record.upstream_failed("malformed_response")
        return GatewayError(
            f"The provider answered with an unreadable response (HTTP {upstream.status_code}, "
            f"{upstream.headers.get('content-type', 'no content type')}).",
            kind="bad_gateway",
            code="bad_upstream_response",
        )

    def error_response(self, upstream: httpx.Response, body: bytes) -> HttpResponse:
        """A provider's 4xx/5xx reaches the client with the provider's status, in the client's format."""
        record = self.exchange.record
        parsed = _json_or_none(body)
        if not isinstance(parsed, dict):
            parsed = None
        error = parsed.get("error") if parsed is not None else None
        record.upstream_refused(
            (error.get("type") if isinstance(error, dict) else None) or f"http_{upstream.status_code}"
        )
        translated = self.translated_error(parsed, upstream.status_code)
        if translated is None:
            record.answered(body=body)
            return self.client_response(upstream, body)
        body = orjson.dumps(translated)
        record.answered(json=translated, body=body)
        return self.client_response(upstream, body, content_type="application/json")

    def client_response(self, upstream: httpx.Response, body: bytes, *, content_type: str | None = None):
        response = HttpResponse(
            body,
            status=upstream.status_code,
            content_type=content_type or upstream.headers.get("content-type", "application/json"),
        )
        self.copy_headers(upstream, response)
        return response

    def copy_headers(self, upstream: httpx.Response, response: HttpResponse) -> None:
        for name, value in upstream.headers.items():
            if passed_back(name):
                response[name] = value


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
