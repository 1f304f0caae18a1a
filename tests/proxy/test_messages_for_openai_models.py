"""/v1/messages with OpenAI-compatible models: the Anthropic SDK through the live gateway, translated both ways."""

import json

import anthropic
import httpx
import pytest

pytestmark = pytest.mark.django_db(transaction=True)

TEXT = "".join(f"tok{i} " for i in range(20))
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}


@pytest.fixture
def claude(caller, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-deployment-openai")
    return anthropic.Anthropic(base_url=caller.gateway_url, api_key=caller.key, max_retries=0)


def chat_requests(provider_server):
    return [request for request in provider_server.requests if request.path.endswith("/chat/completions")]


def gpt_4o_mini_cost(input_tokens: int, output_tokens: int, cached: int = 0) -> float:
    # gpt-4o-mini: $0.15 in, $0.075 cached in, $0.60 out per million tokens.
    return ((input_tokens - cached) * 0.15 + cached * 0.075 + output_tokens * 0.60) / 1_000_000


def sse_events(body: str) -> list[tuple[str, dict]]:
    events = []
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_a_message_is_answered_by_an_openai_model_and_billed_by_its_counts(claude, provider_server, published):
    raw = claude.messages.with_raw_response.create(
        model="gpt-4o-mini",
        max_tokens=64,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "Hello"}],
        metadata={"user_id": "end-user-9"},
        stop_sequences=["###"],
        # This SDK no longer offers sampling parameters; older clients and Claude Code still send them.
        extra_body={"temperature": 0.3},
    )
    message = raw.parse()
    assert message.id.startswith("msg_chatcmpl-")
    assert (message.type, message.role, message.model) == ("message", "assistant", "gpt-4o-mini")
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == TEXT
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 20

    upstream = chat_requests(provider_server)[-1]
    assert upstream.path == "/v1/chat/completions"
    assert upstream.headers["authorization"] == "Bearer sk-deployment-openai"
    assert "anthropic-version" not in upstream.headers and caller_key_absent(upstream, claude.api_key)
    assert upstream.json == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        "max_completion_tokens": 64,
        "temperature": 0.3,
        "stop": ["###"],
        "user": "end-user-9",
    }
    assert upstream.headers.get("x-echo-extra-fields", "") == ""

    document = published.wait_for(raw.headers["x-request-id"])
    attributes = document["attributes"]
    metadata = attributes["metadata"]
    assert (attributes["provider"], attributes["model"]) == ("openai", "gpt-4o-mini")
    assert attributes["response"]["type"] == "message"
    assert metadata["tokens"] == {
        "input": message.usage.input_tokens,
        "output": 20,
        "total": message.usage.input_tokens + 20,
    }
    assert metadata["cost"] == pytest.approx(gpt_4o_mini_cost(message.usage.input_tokens, 20))
    assert (metadata["status_code"], metadata["error_type"]) == (200, None)


def caller_key_absent(upstream, key: str) -> bool:
    return key not in json.dumps(upstream.headers) and key.encode() not in upstream.body


def test_other_openai_compatible_providers_get_max_tokens(claude, provider_server):
    claude.messages.create(model="groq/llama-3.3-70b", max_tokens=32, messages=[{"role": "user", "content": "Hi"}])
    upstream = chat_requests(provider_server)[-1].json
    assert upstream["max_tokens"] == 32 and "max_completion_tokens" not in upstream


def test_a_streamed_message_arrives_as_anthropic_events_and_is_billed(claude, provider_server, published):
    with claude.messages.stream(
        model="gpt-4o-mini", max_tokens=64, messages=[{"role": "user", "content": "Stream"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    assert text == TEXT
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 20
    assert final.usage.input_tokens > 0
    assert chat_requests(provider_server)[-1].json["stream_options"] == {"include_usage": True}

    document = published.wait_for(request_id)
    attributes = document["attributes"]
    metadata = attributes["metadata"]
    assert [event["type"] for event in attributes["response"]["streamed_data"]][:2] == [
        "message_start",
        "content_block_start",
    ]
    assert attributes["response"]["content"][0]["text"] == TEXT
    assert attributes["response"]["stop_reason"] == "end_turn"
    assert metadata["tokens"]["input"] == final.usage.input_tokens
    assert metadata["tokens"]["output"] == 20
    assert metadata["usage_estimated"] is False
    assert metadata["cost"] == pytest.approx(gpt_4o_mini_cost(final.usage.input_tokens, 20))


def test_the_stream_events_come_in_anthropics_order(caller, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-deployment-openai")
    body = {"model": "chunks-2", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    response = httpx.post(caller.gateway_url + "/v1/messages", json=body, headers={"x-api-key": caller.key})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    assert [data["delta"]["text"] for name, data in events if name == "content_block_delta"] == ["tok0 ", "tok1 "]
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert events[-2][1]["usage"]["output_tokens"] == 2


def test_a_tool_round_trip(claude, provider_server, published):
    question = {"role": "user", "content": "Weather in Paris?"}
    message = claude.messages.create(model="gpt-4o-mini", max_tokens=64, messages=[question], tools=[WEATHER_TOOL])
    assert message.stop_reason == "tool_use"
    (tool_use,) = message.content
    assert (tool_use.type, tool_use.name, tool_use.input) == ("tool_use", "get_weather", {"location": "Paris"})
    assert chat_requests(provider_server)[-1].json["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather",
                "parameters": WEATHER_TOOL["input_schema"],
            },
        }
    ]

    raw = claude.messages.with_raw_response.create(
        model="gpt-4o-mini",
        max_tokens=64,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "auto"},
        messages=[
            question,
            {"role": "assistant", "content": [block.model_dump() for block in message.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "Sunny, 21 C"}],
            },
        ],
    )
    follow_up = raw.parse()
    sent = chat_requests(provider_server)[-1].json
    assert sent["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": tool_use.id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": tool_use.id, "content": "Sunny, 21 C"},
    ]
    assert sent["tool_choice"] == "auto"
    assert follow_up.stop_reason == "end_turn"
    assert follow_up.content[0].text == TEXT
    metadata = published.wait_for(raw.headers["x-request-id"])["attributes"]["metadata"]
    assert metadata["tokens"]["input"] == follow_up.usage.input_tokens


def test_a_streamed_tool_call(claude, published):
    with claude.messages.stream(
        model="gpt-4o-mini",
        max_tokens=64,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    assert "input_json" in kinds
    assert final.stop_reason == "tool_use"
    (tool_use,) = final.content
    assert (tool_use.name, tool_use.input) == ("get_weather", {"location": "Paris"})
    assert tool_use.id.startswith("call_")
    document = published.wait_for(request_id)
    assert document["attributes"]["response"]["content"][0]["input"] == {"location": "Paris"}
    assert document["attributes"]["metadata"]["tokens"]["output"] == final.usage.output_tokens > 0


@pytest.mark.parametrize(
    ("status", "error_type", "exception"),
    [
        (400, "invalid_request_error", anthropic.BadRequestError),
        (401, "authentication_error", anthropic.AuthenticationError),
        (403, "permission_error", anthropic.PermissionDeniedError),
        (404, "not_found_error", anthropic.NotFoundError),
        (413, "request_too_large", anthropic.APIStatusError),
        (429, "rate_limit_error", anthropic.RateLimitError),
        (500, "api_error", anthropic.InternalServerError),
        (529, "overloaded_error", anthropic.APIStatusError),
    ],
)
def test_provider_errors_reach_the_client_in_anthropics_format(claude, published, status, error_type, exception):
    with pytest.raises(exception) as caught:
        claude.messages.create(model=f"status-{status}", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == status
    assert caught.value.body == {
        "type": "error",
        "error": {"type": error_type, "message": f"{status} {_phrase(status)} (model asked for it)"},
    }
    metadata = published.wait_for(caught.value.response.headers["x-request-id"])["attributes"]["metadata"]
    assert (metadata["status_code"], metadata["provider_status_code"]) == (status, status)
    assert metadata["error_type"] == "provider_error"


def _phrase(status: int) -> str:
    from http import HTTPStatus

    return "Overloaded" if status == 529 else HTTPStatus(status).phrase


def test_a_streamed_request_refused_by_the_provider_gets_an_anthropic_error(claude):
    with (
        pytest.raises(anthropic.RateLimitError) as caught,
        claude.messages.stream(
            model="status-429", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        ) as stream,
    ):
        list(stream)
    assert caught.value.body["error"]["type"] == "rate_limit_error"


def test_what_cannot_be_translated_is_a_400_in_anthropics_format_and_recorded(caller, monkeypatch, published):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-deployment-openai")
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "Search the web"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search"}],
    }
    response = httpx.post(caller.gateway_url + "/v1/messages", json=body, headers={"x-api-key": caller.key})
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"].startswith("tools.0.type: tool type 'web_search_20250305'")
    metadata = published.wait_for(response.headers["x-request-id"])["attributes"]["metadata"]
    assert (metadata["status_code"], metadata["error_type"]) == (400, "unsupported_parameter")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "max_tokens: Field required"),
        ({"max_tokens": "ten", "messages": [{"role": "user", "content": "x"}]}, "max_tokens: must be a positive"),
        ({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]}, "messages.0"),
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "system": {"a": 1}}, "system: must be"),
    ],
)
def test_mistyped_fields_are_named(caller, body, message):
    body = {"model": "gpt-4o-mini", **body}
    response = httpx.post(caller.gateway_url + "/v1/messages", json=body, headers={"x-api-key": caller.key})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(message)


def test_an_error_inside_the_providers_stream_becomes_an_anthropic_error_event(caller, claude, published):
    body = {
        "model": "overloaded-midstream",
        "max_tokens": 10,
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    response = httpx.post(caller.gateway_url + "/v1/messages", json=body, headers={"x-api-key": caller.key})
    assert response.status_code == 200
    events = sse_events(response.text)
    texts = [data["delta"]["text"] for name, data in events if name == "content_block_delta"]
    assert "".join(texts) == "tok0 tok1 tok2 "
    # The stream ends with the error, in Anthropic's shape, and nothing after it.
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "api_error", "message": "The server is overloaded"}},
    )
    assert "message_stop" not in [name for name, _ in events]
    metadata = published.wait_for(response.headers["x-request-id"])["attributes"]["metadata"]
    assert (metadata["error_type"], metadata["provider_error_type"]) == ("upstream_stream_error", "server_error")

    unstreamed = {name: value for name, value in body.items() if name != "stream"}
    with pytest.raises(anthropic.APIStatusError, match="overloaded"), claude.messages.stream(**unstreamed) as stream:
        list(stream)


def test_a_stream_cut_short_by_the_client_is_billed_by_estimate(caller, monkeypatch, published):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-deployment-openai")
    body = {
        "model": "slowstream-100",
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": "Tell me a long story about the sea, please."}],
    }
    with httpx.stream("POST", caller.gateway_url + "/v1/messages", json=body, headers={"x-api-key": caller.key}) as r:
        request_id = r.headers["x-request-id"]
        deltas = 0
        for line in r.iter_lines():
            deltas += line == "event: content_block_delta"
            if deltas == 3:
                break
    metadata = published.wait_for(request_id, timeout=10)["attributes"]["metadata"]
    assert metadata["client_disconnected"] is True
    assert metadata["usage_estimated"] is True
    assert metadata["tokens"]["input"] > 0 and metadata["tokens"]["output"] > 0


def test_azure_deployments_answer_messages_too(claude, provider_server, monkeypatch, published):
    monkeypatch.setenv("AZURE_API_KEY", "azure-secret")
    raw = claude.messages.with_raw_response.create(
        model="azure/my-gpt4o-deployment", max_tokens=16, messages=[{"role": "user", "content": "Hi"}]
    )
    assert raw.parse().content[0].text == TEXT
    upstream = chat_requests(provider_server)[-1]
    assert upstream.path == "/openai/deployments/my-gpt4o-deployment/chat/completions"
    assert upstream.headers["api-key"] == "azure-secret"
    assert upstream.json["max_completion_tokens"] == 16
    assert published.wait_for(raw.headers["x-request-id"])["attributes"]["provider"] == "azure"


def test_claude_models_still_pass_through_natively(claude, provider_server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-deployment")
    message = claude.messages.create(
        model="claude-3-5-haiku-latest", max_tokens=16, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.content[0].text == TEXT
    assert provider_server.requests[-1].path == "/v1/messages"


def test_a_provider_dropping_the_stream_ends_it_with_an_anthropic_error(caller, monkeypatch, published):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-deployment-openai")
    body = {"model": "die-midstream", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    response = httpx.post(caller.gateway_url + "/v1/messages", json=body, headers={"x-api-key": caller.key})
    events = sse_events(response.text)
    assert events[0][0] == "message_start"
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "api_error", "message": "The provider's stream ended unexpectedly."}},
    )
    metadata = published.wait_for(response.headers["x-request-id"])["attributes"]["metadata"]
    assert metadata["error_type"] == "upstream_stream_interrupted"
