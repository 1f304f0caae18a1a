"""Hostile and odd requests: huge or slow bodies, bad header values, odd methods and paths.

Each gets a clear 4xx (or a 503 under overload) in the route's own format, an x-request-id and a
request record that never holds a rejected body, and none of them costs the gateway a whole read.
"""

from __future__ import annotations

import select
import socket
import threading
import time

import httpx
import orjson
import pytest

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
ROUTES = [CHAT, "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/models", MESSAGES]
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
MIB = 1024 * 1024


# --- A raw HTTP/1.1 client, for bodies that lie about their size or never end --------------------


class RawResponse:
    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status_code = status
        self.headers = headers
        self.body = body

    def json(self):
        return orjson.loads(self.body)


def _head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: gateway", "content-type: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_response(sock: socket.socket) -> RawResponse:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"the gateway closed the connection without a full response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return RawResponse(int(status_line.split()[1]), headers, _dechunk(body))
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return RawResponse(int(status_line.split()[1]), headers, body[:length])


def _dechunk(data: bytes) -> bytes:
    body = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body, data = body + data[:size], data[size + 2 :]
    return body


def _connect(caller) -> socket.socket:
    host, port = caller.gateway_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=15)
    return sock


def send_head_only(caller, path: str, headers: dict[str, str], body: bytes = b"") -> RawResponse:
    """Send the headers (and `body`, if any) and wait for the answer without sending the rest."""
    with _connect(caller) as sock:
        sock.sendall(_head(path, headers) + body)
        return _read_response(sock)


def send_chunked_until_answered(caller, path: str, headers: dict[str, str], *, total: int) -> tuple[RawResponse, int]:
    """Stream up to `total` bytes as a chunked body, stopping as soon as the gateway answers.

    Returns the answer and how many body bytes were sent before it came.
    """
    piece = b"x" * 65536
    frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    sent = 0
    with _connect(caller) as sock:
        sock.sendall(_head(path, headers | {"transfer-encoding": "chunked"}))
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        else:
            sock.sendall(b"0\r\n\r\n")
        return _read_response(sock), sent


def auth(path: str, key: str) -> dict[str, str]:
    return {"x-api-key": key} if path == MESSAGES else {"authorization": f"Bearer {key}"}


def assert_error_format(response, path: str, status: int, openai_code: str, anthropic_type: str):
    assert response.status_code == status, response.body if isinstance(response, RawResponse) else response.text
    assert response.headers["x-request-id"]
    body = response.json()
    if path.startswith(MESSAGES):
        assert body["type"] == "error"
        assert body["error"]["type"] == anthropic_type
        assert body["error"]["message"]
    else:
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["code"] == openai_code
        assert body["error"]["message"]


def metadata(published, response):
    return published.wait_for(response.headers["x-request-id"])["attributes"]


# --- 1. Body limits before work ------------------------------------------------------------------


@pytest.mark.parametrize("path", [CHAT, MESSAGES])
def test_keyless_request_declaring_a_huge_body_is_401_without_waiting_for_it(caller, published, path):
    response = send_head_only(caller, path, {"content-length": str(400 * MIB)})
    assert_error_format(response, path, 401, "missing_api_key", "authentication_error")
    recorded = metadata(published, response)
    assert recorded["metadata"]["status_code"] == 401
    assert recorded["request"] is None


@pytest.mark.parametrize("path", [CHAT, MESSAGES])
def test_declared_body_over_the_limit_is_413_before_it_is_read(caller, published, settings, path):
    settings.GATEWAY_MAX_BODY_BYTES = MIB
    response = send_head_only(caller, path, auth(path, caller.key) | {"content-length": str(400 * MIB)})
    assert_error_format(response, path, 413, "request_too_large", "request_too_large")
    recorded = metadata(published, response)
    assert recorded["metadata"]["status_code"] == 413
    assert recorded["metadata"]["error_type"] == "request_too_large"
    assert recorded["metadata"]["request_size"] == 400 * MIB
    assert recorded["org_id"] == "acme"


def test_keyless_chunked_upload_is_cut_off_at_the_limit(caller, published, settings):
    settings.GATEWAY_MAX_BODY_BYTES = 256 * 1024
    response, sent = send_chunked_until_answered(caller, CHAT, {}, total=256 * MIB)
    assert_error_format(response, CHAT, 401, "missing_api_key", "authentication_error")
    # The answer came long before the whole body was sent (socket buffers hold a few MiB at most).
    assert sent < 64 * MIB
    recorded = metadata(published, response)
    assert recorded["metadata"]["request_size"] < 2 * MIB
    assert recorded["request"] is None


@pytest.mark.parametrize("path", [CHAT, MESSAGES])
def test_chunked_body_over_the_limit_is_413_and_the_record_keeps_a_prefix_only(caller, published, settings, path):
    settings.GATEWAY_MAX_BODY_BYTES = 256 * 1024
    response, sent = send_chunked_until_answered(caller, path, auth(path, caller.key), total=256 * MIB)
    assert_error_format(response, path, 413, "request_too_large", "request_too_large")
    assert sent < 64 * MIB
    recorded = metadata(published, response)
    size = recorded["metadata"]["request_size"]
    assert 256 * 1024 < size < 2 * MIB
    assert len(orjson.dumps(recorded["request"])) <= 2048


def test_rejected_bodies_are_never_kept_whole(caller, published, settings):
    settings.GATEWAY_MAX_BODY_BYTES = 1000
    big = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 5000}]}
    too_large = httpx.post(caller.openai_base_url + "/chat/completions", json=big, headers=auth(CHAT, caller.key))
    assert too_large.status_code == 413
    settings.GATEWAY_MAX_BODY_BYTES = 10 * MIB
    keyless = httpx.post(caller.openai_base_url + "/chat/completions", json=big)
    assert keyless.status_code == 401
    forbidden = httpx.post(
        caller.openai_base_url + "/chat/completions",
        json=big,
        headers=auth(CHAT, caller.key) | {"x-organisation-id": "globex"},
    )
    assert forbidden.status_code == 403
    for response in (too_large, keyless, forbidden):
        recorded = metadata(published, response)
        assert "x" * 600 not in orjson.dumps(recorded).decode()
        assert recorded["metadata"]["request_size"] == len(response.request.content)


def test_a_body_within_the_limit_still_works_when_chunked(caller, published):
    def pieces():
        data = orjson.dumps(BODY)
        yield data[:10]
        yield data[10:]

    response = httpx.post(
        caller.openai_base_url + "/chat/completions", content=pieces(), headers=auth(CHAT, caller.key), timeout=30
    )
    assert response.status_code == 200, response.text
    assert metadata(published, response)["request"]["model"] == "gpt-4o-mini"


# --- 2. Slow clients -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", [CHAT, MESSAGES])
def test_a_body_that_trickles_in_is_cut_off_with_408(caller, published, settings, path):
    settings.GATEWAY_BODY_READ_TIMEOUT = 0.5
    response = send_head_only(caller, path, auth(path, caller.key) | {"content-length": "1000"}, body=b'{"model": ')
    assert_error_format(response, path, 408, "request_timeout", "timeout_error")
    assert response.headers.get("connection") == "close"
    recorded = metadata(published, response)
    assert (recorded["metadata"]["status_code"], recorded["metadata"]["error_type"]) == (408, "request_timeout")
    assert recorded["metadata"]["request_size"] == len(b'{"model": ')


def test_requests_past_the_concurrency_limit_get_503_in_format(caller, published, settings, provider_server):
    settings.GATEWAY_MAX_CONCURRENT_REQUESTS = 2
    provider_server.clear()
    slow = {"model": "slow-3", "messages": [{"role": "user", "content": "x"}]}
    statuses = []

    def call_slowly():
        response = httpx.post(caller.openai_base_url + "/chat/completions", json=slow, headers=auth(CHAT, caller.key))
        statuses.append(response.status_code)

    threads = [threading.Thread(target=call_slowly) for _ in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len([r for r in provider_server.requests if (r.json or {}).get("model") == "slow-3"]) < 2:
        assert time.monotonic() < deadline, "the slow requests never reached the provider"
        time.sleep(0.02)

    for path in (CHAT, MESSAGES):
        response = httpx.post(caller.gateway_url + path, json=BODY, headers=auth(path, caller.key), timeout=30)
        assert_error_format(response, path, 503, "gateway_overloaded", "overloaded_error")
        assert metadata(published, response)["metadata"]["status_code"] == 503
    for thread in threads:
        thread.join()
    assert statuses == [200, 200]
    after = httpx.post(caller.openai_base_url + "/chat/completions", json=BODY, headers=auth(CHAT, caller.key))
    assert after.status_code == 200


# --- 3. Header values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "header", "value"),
    [
        (CHAT, "openai-beta", "vé".encode()),
        (CHAT, "x-provider-api-key", "sk-é".encode()),
        (CHAT, "x-provider-api-key", b"sk-\xe9"),
        (MESSAGES, "anthropic-version", "é".encode()),
        (MESSAGES, "anthropic-beta", b"tools-\xe9"),
        (CHAT, "openai-beta", b"assistants\tv2"),
        (CHAT, "anthropic-version", "é".encode()),
    ],
)
def test_non_ascii_forwarded_header_values_are_400(caller, published, path, header, value):
    body = BODY if path == CHAT else {"model": "claude-3-5-haiku-latest", "max_tokens": 5, "messages": []}
    response = httpx.post(caller.gateway_url + path, json=body, headers=auth(path, caller.key) | {header: value})
    assert_error_format(response, path, 400, "invalid_header", "invalid_request_error")
    assert header in response.text
    assert "sk-" not in response.text
    recorded = published.wait_for(response.headers["x-request-id"])
    assert recorded["attributes"]["metadata"]["error_type"] == "invalid_header"
    assert "sk-" not in orjson.dumps(recorded).decode()


def test_attribution_headers_are_decoded_as_utf8(caller, published):
    headers = {"x-user-id": "üser", "x-experiment-id": "expé-1", "x-thread-id": "fil-ç"}
    sent = auth(CHAT, caller.key) | {name: value.encode() for name, value in headers.items()}
    response = httpx.post(caller.openai_base_url + "/chat/completions", json=BODY, headers=sent)
    assert response.status_code == 200, response.text
    recorded = metadata(published, response)
    assert (recorded["user_id"], recorded["experiment_id"], recorded["thread_id"]) == ("üser", "expé-1", "fil-ç")


def test_a_foreign_org_named_in_utf8_is_refused_by_its_real_name(caller, published):
    sent = auth(CHAT, caller.key) | {"x-organisation-id": "ácme".encode()}
    response = httpx.post(caller.openai_base_url + "/chat/completions", json=BODY, headers=sent)
    assert response.status_code == 403
    assert "ácme" in response.json()["error"]["message"]


@pytest.mark.parametrize("value", [b"\xff\xfe", b"u\tser"])
def test_attribution_header_that_is_not_text_is_400(caller, published, value):
    sent = auth(CHAT, caller.key) | {"x-user-id": value}
    response = httpx.post(caller.openai_base_url + "/chat/completions", json=BODY, headers=sent)
    assert_error_format(response, CHAT, 400, "invalid_header", "invalid_request_error")
    assert metadata(published, response)["metadata"]["error_type"] == "invalid_header"


def test_both_org_header_spellings_must_agree(caller, published):
    both = {"x-organisation-id": "acme", "x-organization-id": "globex"}
    sent = auth(CHAT, caller.key) | both
    response = httpx.post(caller.openai_base_url + "/chat/completions", json=BODY, headers=sent)
    assert_error_format(response, CHAT, 400, "conflicting_headers", "invalid_request_error")
    assert metadata(published, response)["metadata"]["error_type"] == "conflicting_headers"
    agreeing = {"x-organisation-id": "acme", "x-organization-id": "acme"}
    sent = auth(CHAT, caller.key) | agreeing
    assert httpx.post(caller.openai_base_url + "/chat/completions", json=BODY, headers=sent).status_code == 200


# --- 4. Methods and paths ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ROUTES)
def test_options_answers_a_cors_preflight_on_every_route(caller, published, path):
    response = httpx.options(
        caller.gateway_url + path,
        headers={
            "origin": "https://app.example",
            "access-control-request-method": "GET" if path == "/v1/models" else "POST",
            "access-control-request-headers": "authorization, content-type, x-stainless-os",
        },
    )
    assert response.status_code in (200, 204), response.text
    allowed = {method.strip() for method in response.headers["allow"].split(",")}
    assert "OPTIONS" in allowed
    assert ("GET" if path == "/v1/models" else "POST") in allowed
    assert response.headers["access-control-allow-origin"] == "*"
    assert set(response.headers["access-control-allow-methods"].replace(" ", "").split(",")) == allowed
    requested = {"authorization", "content-type", "x-stainless-os"}
    assert requested <= {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert int(response.headers["access-control-max-age"]) > 0
    assert response.headers["x-request-id"]


def test_responses_to_browsers_carry_cors_headers(caller):
    sent = auth(CHAT, caller.key) | {"origin": "https://app.example"}
    response = httpx.post(caller.openai_base_url + "/chat/completions", json=BODY, headers=sent)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    exposed = response.headers["access-control-expose-headers"].lower()
    assert exposed == "*" or "x-request-id" in exposed


def test_wrong_method_names_the_allowed_ones(caller):
    response = httpx.delete(caller.gateway_url + CHAT, headers=auth(CHAT, caller.key))
    assert_error_format(response, CHAT, 405, "method_not_allowed", "invalid_request_error")
    assert {m.strip() for m in response.headers["allow"].split(",")} == {"POST", "OPTIONS"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/nope"),
        ("GET", "/v1/nope"),
        ("POST", "/v1/chat/completions/"),
        ("POST", "/v1/"),
        ("GET", "/v1/models/"),
        ("PUT", "/v1/model/gpt-4o"),
        ("POST", "/v1/messages/"),
        ("POST", "/v1/messages/count_tokens"),
        ("GET", "/v1/messages/batches/abc"),
    ],
)
def test_unknown_paths_are_404_in_the_route_family_format(caller, published, method, path):
    response = httpx.request(method, caller.gateway_url + path, json=BODY, headers=auth(CHAT, caller.key))
    assert_error_format(response, path, 404, "unknown_path", "not_found_error")
    assert path in response.json()["error"]["message"]
    recorded = metadata(published, response)
    assert (recorded["metadata"]["status_code"], recorded["metadata"]["error_type"]) == (404, "unknown_path")
    assert recorded["metadata"]["path"] == path
    assert recorded["org_id"] == "acme"


def test_unknown_path_without_a_key_is_still_a_404(caller, published):
    response = httpx.get(caller.gateway_url + "/v1/nope")
    assert_error_format(response, "/v1/nope", 404, "unknown_path", "not_found_error")
    assert metadata(published, response)["org_id"] is None


# --- 5. Malformed typed fields -------------------------------------------------------------------

CLAUDE_CHAT = {"model": "claude-3-5-haiku-latest", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"response_format": {"type": "json_schema", "json_schema": "{}"}}, "response_format.json_schema"),
        ({"response_format": {"type": "json_schema", "json_schema": ["s"]}}, "response_format.json_schema"),
        ({"messages": {"role": "user", "content": "hi"}}, "messages"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages[0].content[0].text"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]}, "tools[0]"),
        ({"max_tokens": "100"}, "max_tokens"),
        ({"stop": 5}, "stop"),
        ({"temperature": "warm"}, "temperature"),
    ],
)
def test_mistyped_fields_of_a_translated_request_are_400_with_param(caller, published, monkeypatch, fields, param):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-deployment")
    response = httpx.post(
        caller.openai_base_url + "/chat/completions", json=CLAUDE_CHAT | fields, headers=auth(CHAT, caller.key)
    )
    assert_error_format(response, CHAT, 400, "unsupported_parameter", "invalid_request_error")
    assert response.json()["error"]["param"] == param
    assert metadata(published, response)["metadata"]["status_code"] == 400


@pytest.mark.parametrize("path", [CHAT, MESSAGES, "/v1/completions", "/v1/responses"])
def test_stream_that_is_not_a_boolean_is_400(caller, published, path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-deployment")
    body = BODY if path != MESSAGES else {"model": "claude-3-5-haiku-latest", "max_tokens": 5, "messages": []}
    response = httpx.post(caller.gateway_url + path, json=body | {"stream": "yes"}, headers=auth(path, caller.key))
    assert_error_format(response, path, 400, "invalid_type", "invalid_request_error")
    if path != MESSAGES:
        assert response.json()["error"]["param"] == "stream"


def _nested_body(depth: int) -> bytes:
    # {"model": ..., "messages": [{"role": "user", "content": [[[...]]]}]}, `depth` levels in all.
    inner = b"[" * (depth - 4) + b"]" * (depth - 4)
    return b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":' + inner + b"}]}"


@pytest.mark.parametrize("path", [CHAT, MESSAGES])
def test_a_body_nested_past_the_depth_limit_is_400_and_its_record_is_kept(caller, published, path):
    body = _nested_body(600)
    assert orjson.loads(body)  # valid JSON that orjson reads, but cannot write back

    response = httpx.post(
        caller.gateway_url + path, content=body, headers=auth(path, caller.key) | {"content-type": "application/json"}
    )

    assert_error_format(response, path, 400, "invalid_json", "invalid_request_error")
    assert "nested" in response.text
    document = published.wait_for(response.headers["x-request-id"])
    orjson.dumps(document)  # the record is one every store can take
    assert document["attributes"]["metadata"]["status_code"] == 400


def test_a_body_nested_within_the_limit_is_forwarded(caller, published):
    response = httpx.post(
        caller.gateway_url + CHAT,
        content=_nested_body(100),
        headers=auth(CHAT, caller.key) | {"content-type": "application/json"},
    )
    assert response.status_code == 200
