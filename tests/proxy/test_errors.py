"""Bad input and failing providers: a clear error in the route's own format, and a record of the request."""

import socket

import httpx
import pytest

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"


def post(caller, path, *, content=None, json=None, headers=None, key="default"):
    sent = {"content-type": "application/json"}
    if key == "default":
        key = caller.key
    if key is not None:
        sent["x-api-key" if path == MESSAGES else "authorization"] = key if path == MESSAGES else f"Bearer {key}"
    sent.update(headers or {})
    return httpx.post(caller.gateway_url + path, content=content, json=json, headers=sent, timeout=30)


def assert_openai_error(response, status, code):
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert set(error) == {"message", "type", "param", "code"}


def assert_anthropic_error(response, status, error_type):
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert body["error"]["message"]


def recorded(published, response):
    document = published.wait_for(response.headers["x-request-id"])
    return document["attributes"]["metadata"]


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b'{"model": "gpt-4o-mini", "messages": [', "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b'{"messages": []}', "missing_model"),
        (b'{"model": "", "messages": []}', "missing_model"),
    ],
)
def test_bad_bodies_are_400(caller, published, content, code):
    response = post(caller, CHAT, content=content)
    assert_openai_error(response, 400, code)
    metadata = recorded(published, response)
    assert (metadata["status_code"], metadata["error_type"], metadata["status"]) == (400, code, "error")
    assert metadata["error_count"] == 1


def test_bad_bodies_on_messages_use_anthropic_format(caller, published):
    response = post(caller, MESSAGES, content=b"{nope")
    assert_anthropic_error(response, 400, "invalid_request_error")
    assert recorded(published, response)["error_type"] == "invalid_json"


def test_unknown_provider_is_400(caller, published):
    response = post(caller, CHAT, json={"model": "m", "messages": []}, headers={"x-provider": "nowhere"})
    assert_openai_error(response, 400, "unknown_provider")
    assert recorded(published, response)["error_type"] == "unknown_provider"


def test_body_over_the_limit_is_413(caller, published, settings):
    settings.GATEWAY_MAX_BODY_BYTES = 1000
    big = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 5000}]}
    response = post(caller, CHAT, json=big)
    assert_openai_error(response, 413, "request_too_large")
    assert recorded(published, response)["status_code"] == 413
    response = post(caller, MESSAGES, json=big)
    assert_anthropic_error(response, 413, "request_too_large")


@pytest.mark.parametrize("key", [None, "tg-not-a-real-key"])
def test_missing_or_bad_key_is_401(caller, published, key):
    response = post(caller, CHAT, json={"model": "gpt-4o-mini", "messages": []}, key=key)
    assert_openai_error(response, 401, "missing_api_key" if not key else "invalid_api_key")
    metadata = recorded(published, response)
    assert metadata["status_code"] == 401
    response = post(caller, MESSAGES, json={"model": "claude-3-5-haiku-latest", "max_tokens": 1}, key=key)
    assert_anthropic_error(response, 401, "authentication_error")


def test_upstream_timeout_is_504(caller, published, settings):
    settings.GATEWAY_UPSTREAM_TIMEOUT = 0.3
    response = post(caller, CHAT, json={"model": "slow-3", "messages": [{"role": "user", "content": "x"}]})
    assert_openai_error(response, 504, "upstream_timeout")
    metadata = recorded(published, response)
    assert metadata["provider_error_type"] == "upstream_timeout"
    assert metadata["provider_error_count"] == 1

    response = post(caller, MESSAGES, json={"model": "claude-slow-3", "max_tokens": 5, "messages": []})
    assert_anthropic_error(response, 504, "timeout_error")


def test_unreachable_upstream_is_502(caller, published, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    monkeypatch.setenv("CUSTOM_BASE_URL", f"http://127.0.0.1:{closed_port}/v1")
    response = post(caller, CHAT, json={"model": "custom/llama3", "messages": []})
    assert_openai_error(response, 502, "upstream_unreachable")
    metadata = recorded(published, response)
    assert metadata["provider_error_type"] == "upstream_unreachable"
    assert metadata["status_code"] == 502


def test_malformed_upstream_response_is_502(caller, published):
    response = post(caller, CHAT, json={"model": "malformed", "messages": [{"role": "user", "content": "x"}]})
    assert_openai_error(response, 502, "bad_upstream_response")
    assert recorded(published, response)["provider_error_type"] == "malformed_response"

    streamed = post(caller, CHAT, json={"model": "malformed", "stream": True, "messages": []})
    assert_openai_error(streamed, 502, "bad_upstream_response")


@pytest.mark.parametrize("status", [400, 404, 429, 500, 503])
def test_provider_errors_reach_the_client_unchanged(caller, published, provider_server, status):
    response = post(caller, CHAT, json={"model": f"status-{status}", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == status
    assert "error" in response.json()
    metadata = recorded(published, response)
    assert metadata["status_code"] == metadata["provider_status_code"] == status
    assert metadata["error_type"] == "provider_error"
    assert metadata["provider_error_type"]


def test_provider_errors_on_messages_keep_anthropic_body(caller, published):
    response = post(caller, MESSAGES, json={"model": "claude-status-529", "max_tokens": 5, "messages": []})
    assert_anthropic_error(response, 529, "overloaded_error")
    assert recorded(published, response)["provider_error_type"] == "overloaded_error"


def test_stream_that_dies_midway_ends_with_an_error_event(caller, published):
    response = post(
        caller, CHAT, json={"model": "die-midstream", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    )
    assert response.status_code == 200
    events = [line for line in response.text.split("\n\n") if line]
    assert '"error"' in events[-1]
    metadata = recorded(published, response)
    assert metadata["error_type"] == "upstream_stream_interrupted"
    assert metadata["status"] == "error"


def test_wrong_method_is_405_in_format(caller):
    response = httpx.get(caller.gateway_url + CHAT, headers={"authorization": f"Bearer {caller.key}"})
    assert_openai_error(response, 405, "method_not_allowed")
