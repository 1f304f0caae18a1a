"""A local server that speaks the OpenAI and Anthropic APIs, streaming included.

Providers are never reachable from the test-suite or the benchmarks, so both talk to this server over
real HTTP. Tests start it on a random port in a background thread::

    server = ProviderServer.start()
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test")   # Anthropic: base_url=server.url
    ...
    assert server.requests[-1].headers["authorization"] == "Bearer sk-test"
    server.stop()

Benchmarks run it in the foreground as their upstream: ``python -m tests.provider_server --port 8100``.

The request's ``model`` picks the behaviour, so a test only has to choose a model name:

    slow-<seconds>    wait that long before answering
    status-<code>     answer with that status (400-599) and the provider's own error body
    status-<code>-after-<seconds>  the same, with a Retry-After header of that many seconds
    fail-<n>-<code>[-after-<seconds>][-<tag>]  the first n requests for this exact model name fail as
                      status-<code>(-after-<seconds>) does; later ones answer normally (a tag keeps
                      each test's count its own)
    context-overflow  a 400 saying the prompt is longer than the model's context window, as each provider says it
    content-policy    a 400 refusing the prompt under the content policy (OpenAI's content_policy_violation)
    malformed         answer 200 with the HTML body ``<html>oops</html>``
    chunks-<n>        answer with n content pieces, streamed as n chunks
    slowstream-<ms>   wait that long before each content piece (without a stream: in total before answering)
    die-midstream     stream 3 content pieces, then close the connection (without a stream: close it at once)
    overloaded-midstream  stream 3 content pieces, then an error (Anthropic: an `event: error` of type
                      overloaded_error; OpenAI chat: a `data: {"error": ...}` chunk of type server_error), then end
    endless-<ms>      stream a content piece every <ms> milliseconds, forever
    stall-<seconds>   stream 3 content pieces, then go quiet for that long before the rest
    lateusage-<ms>    send the stream's usage chunk that long after the chunk with finish_reason
    bloat-<kib>       pad the answer's text with <kib> KiB of spaces, spread over its pieces
    cookie            answer normally with a Set-Cookie header
    orgheaders        answer normally with the deployment's openai-organization and openai-project
                      headers, a rate-limit header and a Set-Cookie, as api.openai.com does

A ``gzip-`` prefix on any of these sends the answer gzip-encoded (``gzip-bloat-20480``: a small body
on the wire, 20 MiB once decompressed); streams are compressed event by event.

Any other model answers at once with 20 pieces, ``"tok0 tok1 ... tok19 "``. Usage is rough but
consistent: prompt tokens are the request's text characters // 4 + 1, completion tokens the number of
content pieces. A recorded request's ``disconnected`` turns true when its client left before the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import functools
import hashlib
import itertools
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
    uvloop = None

DEFAULT_PIECES = 20
DIE_AFTER_PIECES = 3
TOOL_INPUT = {"location": "Paris"}
TOOL_ARGUMENTS = '{"location": "Paris"}'
TOOL_ARGUMENT_PIECES = ('{"location": ', '"Paris"}')
JSON_ANSWER_PIECES = ('{"answer": ', "42}")
MODEL_IDS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "text-embedding-3-small", "claude-3-5-haiku-latest")
EMBEDDING_DIMENSIONS = 8

OPENAI = "openai"
ANTHROPIC = "anthropic"


def _fields(names: str) -> frozenset[str]:
    return frozenset(names.split())


# Top-level fields each API documents; anything else is echoed back in x-echo-extra-fields so tests can
# check what the gateway passed through.
CHAT_FIELDS = _fields(
    "model messages stream stream_options n tools tool_choice parallel_tool_calls functions function_call "
    "response_format max_tokens max_completion_tokens temperature top_p stop presence_penalty "
    "frequency_penalty logit_bias logprobs top_logprobs user seed metadata store service_tier modalities "
    "audio prediction reasoning_effort web_search_options verbosity prompt_cache_key safety_identifier"
)
COMPLETION_FIELDS = _fields(
    "model prompt suffix max_tokens temperature top_p n stream stream_options logprobs echo stop "
    "presence_penalty frequency_penalty best_of logit_bias user seed"
)
EMBEDDING_FIELDS = _fields("model input encoding_format dimensions user")
RESPONSE_FIELDS = _fields(
    "model input instructions stream stream_options tools tool_choice parallel_tool_calls max_output_tokens "
    "max_tool_calls temperature top_p top_logprobs text reasoning previous_response_id conversation store "
    "metadata user truncation include background service_tier prompt prompt_cache_key safety_identifier"
)
MESSAGE_FIELDS = _fields(
    "model messages max_tokens system stream stop_sequences temperature top_p top_k tools tool_choice "
    "metadata thinking service_tier container mcp_servers"
)

SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
DONE = b"data: [DONE]\n\n"

OPENAI_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


@dataclass(slots=True)
class RecordedRequest:
    """One request as the server received it, before any behaviour switch ran."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    # Set when the client went away before the answer was complete.
    disconnected: bool = False
    received_at: float = dataclasses.field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class _Behaviour:
    delay: float = 0.0
    status: int | None = None
    malformed: bool = False
    pieces: int = DEFAULT_PIECES
    piece_delay: float = 0.0
    die: bool = False
    overloaded_midstream: bool = False
    endless: bool = False
    stall: float = 0.0
    usage_delay: float = 0.0
    pad: int = 0
    gzip: bool = False
    extra_headers: tuple[tuple[str, str], ...] = ()
    retry_after: float | None = None
    # Fail (with `status`) only the first this many requests for the model name; 0: every one.
    fail_first: int = 0
    refusal: str | None = None


NORMAL = _Behaviour()
# What api.openai.com adds to every answer; the first two name the deployment's own OpenAI account.
OPENAI_ACCOUNT_HEADERS = (
    ("openai-organization", "org-deployment-account"),
    ("openai-project", "proj_deployment_account"),
    ("openai-processing-ms", "12"),
    ("openai-version", "2020-10-01"),
    ("x-ratelimit-remaining-requests", "9999"),
)


_STATUS_AFTER = re.compile(r"status-(\d{3})-after-(\d+(?:\.\d+)?)")
_FAIL_FIRST = re.compile(r"fail-(\d+)-(\d{3})(?:-after-(\d+(?:\.\d+)?))?(?:-[\w.-]+)?")


@functools.lru_cache(maxsize=1024)
def _behaviour(model: str) -> _Behaviour:
    """The behaviour a model name asks for; names that match no switch answer normally.

    A `claude-` prefix is ignored, so a switch also reaches the Anthropic route (`claude-slow-3`).
    """
    model = model.removeprefix("claude-")
    if model.startswith("gzip-"):
        return dataclasses.replace(_behaviour(model.removeprefix("gzip-")), gzip=True)
    if model == "cookie":
        return _Behaviour(extra_headers=(("set-cookie", "upstream_session=s3cr3t; Path=/"),))
    if model == "orgheaders":
        return _Behaviour(extra_headers=(*OPENAI_ACCOUNT_HEADERS, ("set-cookie", "__cf_bm=abc123; Path=/")))
    if model == "malformed":
        return _Behaviour(malformed=True)
    if model == "die-midstream":
        return _Behaviour(die=True)
    if model == "overloaded-midstream":
        return _Behaviour(overloaded_midstream=True)
    if model in ("context-overflow", "content-policy"):
        return _Behaviour(refusal=model)
    if (match := _STATUS_AFTER.fullmatch(model)) and 400 <= int(match[1]) <= 599:
        return _Behaviour(status=int(match[1]), retry_after=float(match[2]))
    if (match := _FAIL_FIRST.fullmatch(model)) and 400 <= int(match[2]) <= 599:
        return _Behaviour(
            status=int(match[2]), retry_after=float(match[3]) if match[3] else None, fail_first=int(match[1])
        )
    switch, _, argument = model.partition("-")
    try:
        if switch == "slow":
            return _Behaviour(delay=float(argument))
        if switch == "status" and 400 <= int(argument) <= 599:
            return _Behaviour(status=int(argument))
        if switch == "chunks":
            return _Behaviour(pieces=max(int(argument), 0))
        if switch == "slowstream":
            return _Behaviour(piece_delay=float(argument) / 1000)
        if switch == "endless":
            return _Behaviour(endless=True, piece_delay=max(float(argument), 1.0) / 1000)
        if switch == "stall":
            return _Behaviour(stall=float(argument))
        if switch == "lateusage":
            return _Behaviour(usage_delay=float(argument) / 1000)
        if switch == "bloat":
            return _Behaviour(pad=int(argument) * 1024 // DEFAULT_PIECES)
    except ValueError:
        pass
    return NORMAL


@functools.lru_cache(maxsize=256)
def _text_pieces(count: int, pad: int = 0) -> tuple[str, ...]:
    return tuple(f"tok{i} " + " " * pad for i in range(count))


def _pieces(behaviour: _Behaviour) -> tuple[str, ...]:
    return _text_pieces(behaviour.pieces, behaviour.pad)


def _hex() -> str:
    return os.urandom(12).hex()


def _text_chars(value: Any) -> int:
    """Characters of text in a message list, content block list, prompt or input, however nested."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_chars(item) for item in value)
    if isinstance(value, dict):
        return _text_chars(value.get("text")) + _text_chars(value.get("content"))
    return 0


def _tokens(chars: int) -> int:
    return chars // 4 + 1


def _gzipped(body: bytes) -> bytes:
    return zlib.compress(body, 9, wbits=16 + zlib.MAX_WBITS)


def _json_response(payload: Any, headers: dict[str, str], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json", headers=headers)


def _error_response(dialect: str, status: int, message: str, headers: dict[str, str]) -> web.Response:
    if dialect == ANTHROPIC:
        error_type = ANTHROPIC_ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return _json_response({"type": "error", "error": {"type": error_type, "message": message}}, headers, status)
    error_type, code = OPENAI_ERRORS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return _json_response(body, headers, status)


def _status_message(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Overloaded" if status == 529 else "Error"
    return f"{status} {phrase} (model asked for it)"


class _Invalid(Exception):
    """The request breaks the provider's validation rules; answered with a 400."""


class _HungUp(Exception):
    """The server closed the connection on purpose (die-midstream)."""


@dataclass(slots=True)
class _Call:
    """One request being answered: its parsed body, the behaviour its model asked for, and the reply."""

    request: web.Request
    record: RecordedRequest
    body: dict[str, Any]
    model: str
    behaviour: _Behaviour
    headers: dict[str, str]
    response: web.StreamResponse | None = None
    compressor: Any = None

    def json(self, payload: Any) -> web.Response:
        if not self.behaviour.gzip:
            return _json_response(payload, self.headers)
        body = _gzipped(orjson.dumps(payload))
        headers = {**self.headers, "Content-Encoding": "gzip"}
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def open_stream(self) -> None:
        headers = {**SSE_HEADERS, **self.headers}
        if self.behaviour.gzip:
            headers["Content-Encoding"] = "gzip"
            self.compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        self.response = web.StreamResponse(headers=headers)
        await self.response.prepare(self.request)

    async def send(self, data: bytes) -> None:
        assert self.response is not None
        if self.compressor is not None:
            # A sync flush per event, so each one reaches the client as soon as it is written.
            data = self.compressor.compress(data) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
        await self.response.write(data)

    async def send_pieces(self, pieces: Sequence[str], render: Callable[[str], Iterable[bytes]]) -> None:
        """Stream the content pieces, honouring slowstream, endless, stall and die-midstream."""
        delay, die, stall = self.behaviour.piece_delay, self.behaviour.die, self.behaviour.stall
        sequence: Iterable[str] = itertools.cycle(pieces) if self.behaviour.endless else pieces
        for sent, piece in enumerate(sequence, start=1):
            if delay:
                await asyncio.sleep(delay)
            for data in render(piece):
                await self.send(data)
            if die and sent == DIE_AFTER_PIECES:
                self.hang_up()
            if stall and sent == DIE_AFTER_PIECES:
                await asyncio.sleep(stall)
        if die:
            self.hang_up()

    async def send_usage(self, data: bytes) -> None:
        if self.behaviour.usage_delay:
            await asyncio.sleep(self.behaviour.usage_delay)
        await self.send(data)

    def hang_up(self) -> None:
        # Closing the transport mid-body leaves the client with an unfinished chunked message,
        # exactly what a provider dropping the connection looks like.
        if self.request.transport is not None:
            self.request.transport.close()
        raise _HungUp


_Answer = Callable[[_Call], Awaitable[web.StreamResponse]]
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _endpoint(dialect: str, known_fields: frozenset[str]) -> Callable[[_Answer], _Handler]:
    """Wrap an answer with what every POST endpoint does first: record, parse, and apply the model's switch."""
    request_id_header = "request-id" if dialect == ANTHROPIC else "x-request-id"

    def decorate(answer: _Answer) -> _Handler:
        @functools.wraps(answer)
        async def handle(request: web.Request) -> web.StreamResponse:
            record = await request.app[SERVER_KEY]._record(request)
            headers = {request_id_header: "req_" + _hex()}
            body = record.json
            if not isinstance(body, dict):
                headers["x-echo-extra-fields"] = ""
                return _error_response(dialect, 400, "The request body is not a valid JSON object.", headers)
            headers["x-echo-extra-fields"] = ",".join(sorted(body.keys() - known_fields))
            model = body.get("model")
            model = model if isinstance(model, str) else ""
            behaviour = _behaviour(model)
            headers.update(behaviour.extra_headers)
            call = _Call(request, record, body, model, behaviour, headers)
            try:
                return await _apply_behaviour(call, dialect, answer)
            except _Invalid as exc:
                return _error_response(dialect, 400, str(exc), headers)
            except _HungUp:
                return call.response or web.Response()
            except ConnectionResetError:
                record.disconnected = True
                return call.response or web.Response()
            except asyncio.CancelledError:
                record.disconnected = True
                raise

        return handle

    return decorate


async def _apply_behaviour(call: _Call, dialect: str, answer: _Answer) -> web.StreamResponse:
    behaviour = call.behaviour
    if behaviour is NORMAL:
        return await answer(call)
    if behaviour.delay:
        await asyncio.sleep(behaviour.delay)
    if behaviour.refusal is not None:
        return _refusal_response(dialect, behaviour.refusal, call.headers)
    if behaviour.status is not None and call.request.app[SERVER_KEY].fails_now(call.model, behaviour.fail_first):
        headers = call.headers
        if behaviour.retry_after is not None:
            headers = {**headers, "retry-after": f"{behaviour.retry_after:g}"}
        return _error_response(dialect, behaviour.status, _status_message(behaviour.status), headers)
    if behaviour.malformed:
        return web.Response(body=b"<html>oops</html>", content_type="text/html", headers=call.headers)
    if behaviour.die and not call.body.get("stream"):
        call.hang_up()
    if behaviour.piece_delay and not call.body.get("stream"):
        await asyncio.sleep(behaviour.piece_delay * behaviour.pieces)
    return await answer(call)


def _refusal_response(dialect: str, refusal: str, headers: dict[str, str]) -> web.Response:
    """A 400 for a prompt too long for the model, or refused under the content policy, in the provider's words."""
    if refusal == "context-overflow":
        if dialect == ANTHROPIC:
            return _error_response(dialect, 400, "prompt is too long: 210000 tokens > 200000 maximum", headers)
        message = "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000."
        body = {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        }
        return _json_response(body, headers, 400)
    message = "Your request was rejected as a result of our safety system."
    if dialect == ANTHROPIC:
        return _error_response(dialect, 400, message, headers)
    body = {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": None,
            "code": "content_policy_violation",
        }
    }
    return _json_response(body, headers, 400)


def _require(body: dict[str, Any], *names: str, dialect: str = OPENAI) -> None:
    for name in names:
        if body.get(name) is None:
            raise _Invalid(
                f"{name}: Field required" if dialect == ANTHROPIC else f"Missing required parameter: '{name}'."
            )


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


# OpenAI's own bound on choices: a fuzzed body's n of 2**62 must be refused here, not built in memory.
MAX_CHOICES = 128


def _choice_count(body: dict[str, Any]) -> int:
    n = body.get("n")
    if not isinstance(n, int) or n <= 0:
        return 1
    if n > MAX_CHOICES:
        raise _Invalid(f"'n' must be at most {MAX_CHOICES}, got {n}.")
    return n


def _answer_pieces(call: _Call, json_mode: bool) -> tuple[str, ...]:
    return JSON_ANSWER_PIECES if json_mode else _pieces(call.behaviour)


def _is_json_format(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") in ("json_object", "json_schema")


# OpenAI: chat completions


def _tool_name(tools: Any) -> str | None:
    """The first tool's name, in either the OpenAI (nested "function") or the Anthropic (flat) shape."""
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        return None
    tool = tools[0]
    function = tool.get("function")
    name = function.get("name") if isinstance(function, dict) else tool.get("name")
    return name if isinstance(name, str) else "tool"


def _last_role(messages: Any) -> str | None:
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        return messages[-1].get("role")
    return None


@_endpoint(OPENAI, CHAT_FIELDS)
async def chat_completions(call: _Call) -> web.StreamResponse:
    body = call.body
    _require(body, "model", "messages")
    messages = body["messages"]
    prompt_tokens = _tokens(_text_chars(messages))
    n = _choice_count(body)
    tool = None
    if body.get("tool_choice") != "none" and _last_role(messages) == "user":
        tool = _tool_name(body.get("tools"))
    pieces = _answer_pieces(call, _is_json_format(body.get("response_format")))
    completion_tokens = (_tokens(len(TOOL_ARGUMENTS)) if tool else len(pieces)) * n
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    completion_id = "chatcmpl-" + _hex()
    if body.get("stream"):
        return await _stream_chat(call, completion_id, n, tool, pieces, usage)

    choices = []
    for index in range(n):
        if tool:
            call_id = "call_" + _hex()
            function = {"name": tool, "arguments": TOOL_ARGUMENTS}
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": call_id, "type": "function", "function": function}],
            }
            finish_reason = "tool_calls"
        else:
            message = {"role": "assistant", "content": "".join(pieces)}
            finish_reason = "stop"
        choices.append({"index": index, "message": message, "finish_reason": finish_reason, "logprobs": None})
    return call.json(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "choices": choices,
            "usage": usage,
            "system_fingerprint": "fp_local",
        }
    )


async def _stream_chat(
    call: _Call, completion_id: str, n: int, tool: str | None, pieces: Sequence[str], usage: dict[str, int]
) -> web.StreamResponse:
    include_usage = _include_usage(call.body)
    base = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": call.model,
        "system_fingerprint": "fp_local",
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> list[bytes]:
        """One chunk per choice, as OpenAI sends them when n > 1."""
        out = []
        for index in range(n):
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            payload = {**base, "choices": [choice], "usage": None} if include_usage else {**base, "choices": [choice]}
            out.append(b"data: " + orjson.dumps(payload) + b"\n\n")
        return out

    await call.open_stream()
    if tool:
        for data in chunk({"role": "assistant", "content": None}):
            await call.send(data)
        opening = {"index": 0, "id": "call_" + _hex(), "type": "function", "function": {"name": tool, "arguments": ""}}
        for data in chunk({"tool_calls": [opening]}):
            await call.send(data)
        await call.send_pieces(
            TOOL_ARGUMENT_PIECES, lambda piece: chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        )
        finish_reason = "tool_calls"
    elif call.behaviour.overloaded_midstream:
        for piece in ("", *pieces[:DIE_AFTER_PIECES]):
            for data in chunk({"content": piece}):
                await call.send(data)
        error = {"message": "The server is overloaded", "type": "server_error", "param": None, "code": None}
        await call.send(b"data: " + orjson.dumps({"error": error}) + b"\n\n")
        return call.response  # type: ignore[return-value]
    else:
        for data in chunk({"role": "assistant", "content": "", "refusal": None}):
            await call.send(data)
        await call.send_pieces(pieces, lambda piece: chunk({"content": piece}))
        finish_reason = "stop"
    for data in chunk({}, finish_reason):
        await call.send(data)
    if include_usage:
        await call.send_usage(b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n")
    await call.send(DONE)
    return call.response  # type: ignore[return-value]


# OpenAI: legacy completions


@_endpoint(OPENAI, COMPLETION_FIELDS)
async def completions(call: _Call) -> web.StreamResponse:
    body = call.body
    _require(body, "model")
    n = _choice_count(body)
    pieces = _pieces(call.behaviour)
    prompt_tokens = _tokens(_text_chars(body.get("prompt")))
    completion_tokens = len(pieces) * n
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    base = {"id": "cmpl-" + _hex(), "object": "text_completion", "created": int(time.time()), "model": call.model}
    if not body.get("stream"):
        text = "".join(pieces)
        choices = [{"text": text, "index": i, "logprobs": None, "finish_reason": "stop"} for i in range(n)]
        return call.json({**base, "choices": choices, "usage": usage})

    include_usage = _include_usage(body)

    def chunk(text: str, finish_reason: str | None = None) -> list[bytes]:
        out = []
        for index in range(n):
            choice = {"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}
            payload = {**base, "choices": [choice], "usage": None} if include_usage else {**base, "choices": [choice]}
            out.append(b"data: " + orjson.dumps(payload) + b"\n\n")
        return out

    await call.open_stream()
    await call.send_pieces(pieces, chunk)
    for data in chunk("", "stop"):
        await call.send(data)
    if include_usage:
        await call.send_usage(b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n")
    await call.send(DONE)
    return call.response  # type: ignore[return-value]


# OpenAI: embeddings


def _embedding(text: str, dimensions: int) -> list[float]:
    """A stable vector per input, so equal inputs embed equally."""
    digest = hashlib.shake_128(text.encode()).digest(dimensions)
    return [round(byte / 127.5 - 1, 6) for byte in digest]


@_endpoint(OPENAI, EMBEDDING_FIELDS)
async def embeddings(call: _Call) -> web.StreamResponse:
    body = call.body
    _require(body, "model", "input")
    raw = body["input"]
    if isinstance(raw, str) or (isinstance(raw, list) and raw and all(isinstance(item, int) for item in raw)):
        inputs = [raw]
    elif isinstance(raw, list) and raw:
        inputs = raw
    else:
        raise _Invalid("'input' must be a non-empty string or array.")
    dimensions = body.get("dimensions")
    dimensions = dimensions if isinstance(dimensions, int) and 0 < dimensions <= 4096 else EMBEDDING_DIMENSIONS
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    prompt_tokens = 0
    for index, item in enumerate(inputs):
        text = item if isinstance(item, str) else str(item)
        prompt_tokens += len(item) if isinstance(item, list) else _tokens(len(text))
        vector: Any = _embedding(text, dimensions)
        if as_base64:
            vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return call.json({"object": "list", "data": data, "model": call.model, "usage": usage})


# OpenAI: Responses API


@_endpoint(OPENAI, RESPONSE_FIELDS)
async def responses(call: _Call) -> web.StreamResponse:
    body = call.body
    _require(body, "model")
    text_options = body.get("text")
    json_mode = isinstance(text_options, dict) and _is_json_format(text_options.get("format"))
    pieces = _answer_pieces(call, json_mode)
    input_tokens = _tokens(_text_chars(body.get("input")) + _text_chars(body.get("instructions")))
    usage = {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": len(pieces),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + len(pieces),
    }
    text = "".join(pieces)
    part = {"type": "output_text", "text": text, "annotations": []}
    item = {"type": "message", "id": "msg_" + _hex(), "status": "completed", "role": "assistant", "content": [part]}
    response = {
        "id": "resp_" + _hex(),
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": call.model,
        "output": [item],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": text_options if isinstance(text_options, dict) else {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": usage,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }
    if not body.get("stream"):
        return call.json(response)

    sequence = itertools.count()

    def event(kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": next(sequence), **fields}
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    in_progress = {**response, "status": "in_progress", "output": [], "usage": None}
    where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
    await call.open_stream()
    await call.send(event("response.created", response=in_progress))
    await call.send(event("response.in_progress", response=in_progress))
    await call.send(
        event("response.output_item.added", output_index=0, item={**item, "status": "in_progress", "content": []})
    )
    await call.send(event("response.content_part.added", **where, part={**part, "text": ""}))
    await call.send_pieces(
        pieces, lambda piece: (event("response.output_text.delta", **where, delta=piece, logprobs=[]),)
    )
    await call.send(event("response.output_text.done", **where, text=text, logprobs=[]))
    await call.send(event("response.content_part.done", **where, part=part))
    await call.send(event("response.output_item.done", output_index=0, item=item))
    await call.send(event("response.completed", response=response))
    return call.response  # type: ignore[return-value]


# OpenAI and Anthropic: model list (same path; Anthropic clients send anthropic-version)


def _model_lists() -> tuple[bytes, bytes]:
    created = 1_700_000_000
    openai_list = {
        "object": "list",
        "data": [{"id": model, "object": "model", "created": created, "owned_by": "local"} for model in MODEL_IDS],
    }
    claude = [model for model in MODEL_IDS if model.startswith("claude")]
    anthropic_list = {
        "data": [
            {"type": "model", "id": model, "display_name": model, "created_at": "2024-10-22T00:00:00Z"}
            for model in claude
        ],
        "has_more": False,
        "first_id": claude[0],
        "last_id": claude[-1],
    }
    return orjson.dumps(openai_list), orjson.dumps(anthropic_list)


OPENAI_MODELS, ANTHROPIC_MODELS = _model_lists()


async def models(request: web.Request) -> web.StreamResponse:
    record = await request.app[SERVER_KEY]._record(request)
    if "anthropic-version" in record.headers:
        return web.Response(
            body=ANTHROPIC_MODELS, content_type="application/json", headers={"request-id": "req_" + _hex()}
        )
    return web.Response(body=OPENAI_MODELS, content_type="application/json", headers={"x-request-id": "req_" + _hex()})


# Anthropic: Messages API


def _wants_anthropic_tool(body: dict[str, Any]) -> str | None:
    """A tool to call when tools are offered and the user spoke last (not with tool results)."""
    messages = body.get("messages")
    if _last_role(messages) != "user":
        return None
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "none":
        return None
    content = messages[-1].get("content")
    if isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content):
        return None
    return _tool_name(body.get("tools"))


@_endpoint(ANTHROPIC, MESSAGE_FIELDS)
async def messages(call: _Call) -> web.StreamResponse:
    body = call.body
    _require(body, "model", "messages", "max_tokens", dialect=ANTHROPIC)
    input_tokens = _tokens(_text_chars(body["messages"]) + _text_chars(body.get("system")))
    tool = _wants_anthropic_tool(body)
    pieces = _pieces(call.behaviour)
    output_tokens = _tokens(len(TOOL_ARGUMENTS)) if tool else len(pieces)
    message_id = "msg_" + _hex()
    if body.get("stream"):
        return await _stream_message(call, message_id, tool, pieces, input_tokens, output_tokens)

    if tool:
        tool_use = {"type": "tool_use", "id": "toolu_" + _hex(), "name": tool, "input": TOOL_INPUT}
        content: list[dict[str, Any]] = [{"type": "text", "text": f"I'll use {tool}."}, tool_use]
        stop_reason = "tool_use"
    else:
        content = [{"type": "text", "text": "".join(pieces)}]
        stop_reason = "end_turn"
    return call.json(
        {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }
    )


def _anthropic_event(kind: str, **fields: Any) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **fields}) + b"\n\n"


async def _stream_message(
    call: _Call, message_id: str, tool: str | None, pieces: Sequence[str], input_tokens: int, output_tokens: int
) -> web.StreamResponse:
    event = _anthropic_event
    start = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }
    await call.open_stream()
    await call.send(event("message_start", message=start))
    await call.send(event("content_block_start", index=0, content_block={"type": "text", "text": ""}))
    await call.send(event("ping"))
    if tool:
        text_delta = {"type": "text_delta", "text": f"I'll use {tool}."}
        await call.send(event("content_block_delta", index=0, delta=text_delta))
        await call.send(event("content_block_stop", index=0))
        tool_use = {"type": "tool_use", "id": "toolu_" + _hex(), "name": tool, "input": {}}
        await call.send(event("content_block_start", index=1, content_block=tool_use))
        await call.send_pieces(
            TOOL_ARGUMENT_PIECES,
            lambda piece: (
                event("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": piece}),
            ),
        )
        await call.send(event("content_block_stop", index=1))
        stop_reason = "tool_use"
    elif call.behaviour.overloaded_midstream:
        for piece in pieces[:DIE_AFTER_PIECES]:
            await call.send(event("content_block_delta", index=0, delta={"type": "text_delta", "text": piece}))
        await call.send(event("error", error={"type": "overloaded_error", "message": "Overloaded"}))
        return call.response  # type: ignore[return-value]
    else:
        await call.send_pieces(
            pieces, lambda piece: (event("content_block_delta", index=0, delta={"type": "text_delta", "text": piece}),)
        )
        await call.send(event("content_block_stop", index=0))
        stop_reason = "end_turn"
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    await call.send(event("message_delta", delta=delta, usage={"output_tokens": output_tokens}))
    await call.send(event("message_stop"))
    return call.response  # type: ignore[return-value]


# The server


class ProviderServer:
    """A real HTTP server speaking the OpenAI (``url + "/v1"``) and Anthropic (``url``) APIs."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, record: bool = True) -> None:
        self.host = host
        self.port = port
        self.url = ""
        self.requests: list[RecordedRequest] = []
        self._record_requests = record
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def start(cls, host: str = "127.0.0.1", port: int = 0, *, record: bool = True) -> ProviderServer:
        """Serve from a daemon thread with its own event loop; return once listening."""
        server = cls(host, port, record=record)
        ready = threading.Event()
        failure: list[BaseException] = []
        server._thread = threading.Thread(
            target=server._serve_in_thread, args=(ready, failure), name="provider-server", daemon=True
        )
        server._thread.start()
        if not ready.wait(timeout=30):
            raise RuntimeError("provider server did not start listening within 30 seconds")
        if failure or not server.url:
            raise RuntimeError(f"provider server could not listen on {host}:{port}") from (failure or [None])[0]
        return server

    def clear(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self.requests.clear()

    def fails_now(self, model: str, fail_first: int) -> bool:
        """Whether a scripted failure applies to this request: always, or to the first `fail_first` for the name."""
        if not fail_first:
            return True
        with self._lock:
            seen = self._seen[model] = self._seen.get(model, 0) + 1
        return seen <= fail_first

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> ProviderServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app[SERVER_KEY] = self
        app.router.add_post("/v1/chat/completions", chat_completions)
        app.router.add_post("/v1/completions", completions)
        app.router.add_post("/v1/embeddings", embeddings)
        app.router.add_post("/v1/responses", responses)
        app.router.add_get("/v1/models", models)
        app.router.add_post("/v1/messages", messages)
        # Azure OpenAI serves each model as a deployment under /openai/deployments/<name>/.
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", chat_completions)
        app.router.add_post("/openai/deployments/{deployment}/embeddings", embeddings)
        return app

    async def listen(self) -> None:
        # handler_cancellation stops a slow answer as soon as its client gives up, as providers do.
        self._runner = web.AppRunner(self.build_app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.url = f"http://{self.host}:{self.port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _record(self, request: web.Request) -> RecordedRequest:
        body = await request.read()
        try:
            parsed = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        headers = {name.lower(): value for name, value in request.headers.items()}
        record = RecordedRequest(request.method, request.path, headers, body, parsed)
        if self._record_requests:
            with self._lock:
                self.requests.append(record)
        return record

    def _serve_in_thread(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = self._loop = _new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.listen())
        except OSError as exc:  # the port is taken or not ours to use
            failure.append(exc)
            loop.close()
            return
        finally:
            ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self.close())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


SERVER_KEY = web.AppKey("provider_server", ProviderServer)


def _new_event_loop() -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()


# Foreground mode and self-check


async def _serve_forever(server: ProviderServer) -> None:
    await server.listen()
    print(f"listening on {server.url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


def _self_check() -> None:
    """Round-trip every endpoint once, plain and streaming; raise RuntimeError on the first surprise."""
    import urllib.error
    import urllib.request

    def call(path: str, payload: dict[str, Any] | None = None) -> tuple[int, dict[str, str], bytes]:
        data = None if payload is None else orjson.dumps(payload)
        request = urllib.request.Request(server.url + path, data=data, headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return reply.status, dict(reply.headers), reply.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def expect(ok: bool, what: str) -> None:
        if not ok:
            raise RuntimeError(f"self-check failed: {what}")

    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
    message = {"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    with ProviderServer.start() as server:
        status, headers, body = call("/v1/chat/completions", {**chat, "extra_b": 1, "extra_a": 2})
        expect(status == 200 and headers["x-echo-extra-fields"] == "extra_a,extra_b", "chat echoes extra fields")
        text = orjson.loads(body)["choices"][0]["message"]["content"]
        expect(text == "".join(_text_pieces(DEFAULT_PIECES)), "chat answers 20 pieces")
        stream = {**chat, "model": "chunks-5", "stream": True, "stream_options": {"include_usage": True}}
        body = call("/v1/chat/completions", stream)[2]
        expect(body.count(b"data: ") == 1 + 5 + 1 + 1 + 1 and body.endswith(DONE), "chat streams role, 5, stop, usage")
        body = call("/v1/completions", {"model": "m", "prompt": "hi"})[2]
        expect(orjson.loads(body)["choices"][0]["text"] == text, "completions answer")
        body = call("/v1/embeddings", {"model": "m", "input": ["a", "b"]})[2]
        expect(len(orjson.loads(body)["data"]) == 2, "one embedding per input")
        body = call("/v1/responses", {"model": "m", "input": "hi"})[2]
        expect(orjson.loads(body)["status"] == "completed", "responses answer")
        body = call("/v1/responses", {"model": "m", "input": "hi", "stream": True})[2]
        expect(b"event: response.completed" in body, "responses stream completes")
        body = call("/v1/messages", message)[2]
        expect(orjson.loads(body)["stop_reason"] == "end_turn", "messages answer")
        body = call("/v1/messages", {**message, "stream": True})[2]
        expect(body.endswith(b'{"type":"message_stop"}\n\n'), "messages stream stops")
        expect(call("/v1/messages", {"model": "claude", "messages": []})[0] == 400, "messages require max_tokens")
        expect(call("/v1/messages", {**message, "model": "status-529"})[0] == 529, "status switch")
        expect(call("/v1/chat/completions", {**chat, "model": "malformed"})[2] == b"<html>oops</html>", "malformed")
        expect(orjson.loads(call("/v1/models")[2])["object"] == "list", "model list")
        expect(len(server.requests) == 12, "every request recorded")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A local server that speaks the OpenAI and Anthropic APIs.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--self-check", action="store_true", help="round-trip every endpoint once and exit")
    args = parser.parse_args(argv)
    if args.self_check:
        _self_check()
        print("self-check ok", flush=True)
        return
    # In the foreground the server is a benchmark's upstream: recording every request would only grow.
    server = ProviderServer(args.host, args.port, record=False)
    with asyncio.Runner(loop_factory=_new_event_loop) as runner, contextlib.suppress(KeyboardInterrupt):
        runner.run(_serve_forever(server))


if __name__ == "__main__":
    main()
