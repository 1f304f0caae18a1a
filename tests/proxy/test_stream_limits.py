"""Streams that never end, go quiet, grow without bound or lose their client after the last word."""

import json
import time

import httpx
import pytest

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
HELLO = [{"role": "user", "content": "hello there, how are you today?"}]


def stream(caller, path, body, limit=20.0):
    """The response and its events; a stream still going after `limit` seconds fails the test."""
    auth = {"x-api-key": caller.key} if path == MESSAGES else {"authorization": f"Bearer {caller.key}"}
    url = caller.gateway_url + path
    received = b""
    deadline = time.monotonic() + limit
    with httpx.stream("POST", url, json={**body, "stream": True}, headers=auth, timeout=30) as response:
        for piece in response.iter_bytes():
            received += piece
            assert time.monotonic() < deadline, f"the stream was still going after {limit} s"
    response.received = received
    events = [event for event in received.decode().split("\n\n") if event.strip()]
    return response, events


def metadata_of(published, response):
    return published.wait_for(response.headers["x-request-id"], timeout=15)["attributes"]["metadata"]


def assert_openai_error_event(event, words):
    assert event.startswith("data: "), event
    error = json.loads(event[len("data: ") :])["error"]
    assert error["type"] == "api_error"
    assert words in error["message"]


def assert_anthropic_error_event(event, words):
    name, data = event.split("\n", 1)
    assert name == "event: error"
    body = json.loads(data[len("data: ") :])
    assert body["type"] == "error"
    assert words in body["error"]["message"]


# --- Total deadline and idle timeout ------------------------------------------------------


def test_a_stream_that_never_ends_is_cut_at_the_deadline(caller, published, settings):
    settings.GATEWAY_STREAM_TIMEOUT = 1.0
    response, events = stream(caller, CHAT, {"model": "endless-20", "messages": HELLO})
    assert response.status_code == 200
    assert len(events) > 3  # the pieces sent before the deadline were relayed
    assert_openai_error_event(events[-1], "1 s")
    metadata = metadata_of(published, response)
    assert metadata["error_type"] == "upstream_stream_timeout"
    assert metadata["status"] == "error"
    assert "1 s" in metadata["error_message"]

    response, events = stream(caller, MESSAGES, {"model": "claude-endless-20", "max_tokens": 5, "messages": HELLO})
    assert_anthropic_error_event(events[-1], "1 s")
    assert metadata_of(published, response)["error_type"] == "upstream_stream_timeout"


@pytest.mark.parametrize(
    ("path", "model", "check"),
    [
        (CHAT, "stall-30", assert_openai_error_event),
        (CHAT, "claude-stall-30", assert_openai_error_event),  # translated to chat chunks
        (MESSAGES, "claude-stall-30", assert_anthropic_error_event),
    ],
)
def test_a_stream_that_goes_quiet_is_cut_after_the_idle_timeout(caller, published, settings, path, model, check):
    settings.GATEWAY_STREAM_IDLE_TIMEOUT = 0.5
    response, events = stream(caller, path, {"model": model, "max_tokens": 5, "messages": HELLO})
    check(events[-1], "0.5 s")
    metadata = metadata_of(published, response)
    assert metadata["error_type"] == "upstream_stream_idle_timeout"
    assert metadata["provider_error_type"] == "upstream_stream_idle_timeout"


def test_a_slow_but_steady_stream_is_not_cut(caller, published, settings):
    settings.GATEWAY_STREAM_IDLE_TIMEOUT = 0.5
    response, events = stream(caller, CHAT, {"model": "slowstream-100", "messages": HELLO})
    assert events[-1] == "data: [DONE]"
    assert metadata_of(published, response)["error_type"] is None


# --- Size cap ---------------------------------------------------------------------------


def test_a_stream_past_the_size_cap_ends_with_an_error_event(caller, published, settings):
    settings.GATEWAY_MAX_RESPONSE_BYTES = 256 * 1024
    response, events = stream(caller, CHAT, {"model": "gzip-bloat-4096", "messages": HELLO})
    assert response.status_code == 200
    assert len(response.received) < 1024 * 1024
    assert_openai_error_event(events[-1], "262144")
    metadata = metadata_of(published, response)
    assert metadata["error_type"] == "upstream_response_too_large"

    response, events = stream(caller, MESSAGES, {"model": "claude-bloat-4096", "max_tokens": 5, "messages": HELLO})
    assert_anthropic_error_event(events[-1], "262144")


def test_a_compressed_stream_is_relayed_decoded(caller, published):
    response, events = stream(caller, CHAT, {"model": "gzip-chunks-5", "messages": HELLO})
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(event[len("data: ") :]) for event in events[:-1]]
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks if chunk["choices"])
    assert text == "tok0 tok1 tok2 tok3 tok4 "
    assert metadata_of(published, response)["tokens"]["output"] == 5


# --- Client gone right after the last word -------------------------------------------------------


def _read_until_finish(caller, model):
    """Read a chat stream until the chunk with finish_reason, then hang up, as many SDK loops do."""
    body = {"model": model, "stream": True, "messages": HELLO}
    headers = {"authorization": f"Bearer {caller.key}"}
    text = ""
    with httpx.stream("POST", caller.openai_base_url + "/chat/completions", json=body, headers=headers) as response:
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choice = json.loads(line[len("data: ") :])["choices"][0]
            text += choice["delta"].get("content") or ""
            if choice["finish_reason"]:
                break
    return request_id, text


def test_a_client_that_hangs_up_after_finish_reason_is_billed_from_the_providers_usage(caller, published):
    request_id, text = _read_until_finish(caller, "lateusage-1000")
    assert text.startswith("tok0 ")
    metadata = published.wait_for(request_id, timeout=15)["attributes"]["metadata"]
    assert metadata["client_disconnected"] is True
    assert metadata["tokens"]["output"] == 20  # the provider's own count, sent a second after finish_reason
    assert metadata["tokens"]["input"] > 0
    assert metadata["usage_estimated"] is False


def test_usage_that_never_comes_is_estimated_and_marked(caller, published, settings):
    settings.GATEWAY_STREAM_USAGE_GRACE = 0.3
    request_id, text = _read_until_finish(caller, "lateusage-5000")
    metadata = published.wait_for(request_id, timeout=15)["attributes"]["metadata"]
    assert metadata["usage_estimated"] is True
    assert metadata["tokens"]["output"] == pytest.approx(len(text) / 4, abs=2)
    assert metadata["tokens"]["input"] == pytest.approx(len(HELLO[0]["content"]) / 4, abs=2)


def test_a_complete_stream_is_not_marked_estimated(caller, published):
    response, events = stream(caller, CHAT, {"model": "gpt-4o-mini", "messages": HELLO})
    assert events[-1] == "data: [DONE]"
    metadata = metadata_of(published, response)
    assert metadata["usage_estimated"] is False
    assert metadata["tokens"]["output"] == 20
