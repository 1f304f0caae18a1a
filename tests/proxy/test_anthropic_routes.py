"""Anthropic models: natively on /v1/messages, translated on /v1/chat/completions."""

import json

import anthropic
import httpx
import openai
import pytest

pytestmark = pytest.mark.django_db(transaction=True)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}


@pytest.fixture
def claude(caller, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-deployment")
    return anthropic.Anthropic(base_url=caller.gateway_url, api_key=caller.key, max_retries=0)


@pytest.fixture
def chat(caller, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-deployment")
    return openai.OpenAI(base_url=caller.openai_base_url, api_key=caller.key, max_retries=0)


def messages_requests(provider_server):
    return [request for request in provider_server.requests if request.path == "/v1/messages"]


def test_messages_pass_through_natively(claude, provider_server, published):
    raw = claude.messages.with_raw_response.create(
        model="claude-3-5-sonnet-20241022", max_tokens=64, messages=[{"role": "user", "content": "Hello"}]
    )
    message = raw.parse()
    assert message.content[0].text
    upstream = messages_requests(provider_server)[-1]
    assert upstream.headers["x-api-key"] == "sk-ant-deployment"
    assert upstream.headers["anthropic-version"]
    document = published.wait_for(raw.headers["x-request-id"])
    metadata = document["attributes"]["metadata"]
    assert document["attributes"]["provider"] == "anthropic"
    assert metadata["tokens"]["input"] == message.usage.input_tokens
    assert metadata["tokens"]["output"] == message.usage.output_tokens
    # Claude 3.5 Sonnet: $3 in, $15 out per million tokens.
    expected = (message.usage.input_tokens * 3 + message.usage.output_tokens * 15) / 1_000_000
    assert metadata["cost"] == pytest.approx(expected)
    assert metadata["provider_request_id"].startswith("req_")


def test_messages_stream_natively(claude, published):
    with claude.messages.stream(
        model="claude-3-5-sonnet-20241022", max_tokens=64, messages=[{"role": "user", "content": "Stream"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "".join(f"tok{i} " for i in range(20))
    document = published.wait_for(stream.response.headers["x-request-id"])
    response = document["attributes"]["response"]
    assert response["content"][0]["text"] == text
    assert response["streamed_data"][0]["type"] == "message_start"
    assert document["attributes"]["metadata"]["tokens"]["output"] == final.usage.output_tokens


def test_messages_errors_use_anthropic_format(caller, claude):
    response = httpx.post(
        caller.gateway_url + "/v1/messages",
        json={"model": "claude-3-5-sonnet-20241022", "messages": [{"role": "user", "content": "x"}]},
        headers={"x-api-key": caller.key, "anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }

    with pytest.raises(anthropic.NotFoundError) as caught:
        claude.messages.create(model="claude-status-404", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "not_found_error"


def test_chat_completion_with_claude_is_translated(chat, provider_server, published):
    raw = chat.chat.completions.with_raw_response.create(
        model="claude-3-5-sonnet-20241022",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        max_tokens=50,
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "".join(f"tok{i} " for i in range(20))
    assert completion.choices[0].finish_reason == "stop"
    upstream = messages_requests(provider_server)[-1].json
    assert upstream["system"] == "Be brief."
    assert upstream["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
    assert upstream["max_tokens"] == 50
    document = published.wait_for(raw.headers["x-request-id"])
    assert document["attributes"]["metadata"]["tokens"]["output"] == completion.usage.completion_tokens == 20


def test_tool_calls_are_translated_both_ways(chat, provider_server):
    completion = chat.chat.completions.create(
        model="claude-3-5-sonnet-20241022",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}
    assert (
        messages_requests(provider_server)[-1].json["tools"][0]["input_schema"]
        == WEATHER_TOOL["function"]["parameters"]
    )

    follow_up = chat.chat.completions.create(
        model="claude-3-5-sonnet-20241022",
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"},
        ],
        tools=[WEATHER_TOOL],
    )
    sent = messages_requests(provider_server)[-1].json["messages"]
    assert sent[1]["content"][0]["type"] == "tool_use"
    assert sent[2]["content"][0] == {"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21 C"}
    assert follow_up.choices[0].finish_reason == "stop"


def test_streamed_chat_with_claude_becomes_chat_chunks(chat, published):
    with chat.chat.completions.with_streaming_response.create(
        model="claude-3-5-sonnet-20241022",
        messages=[{"role": "user", "content": "Stream"}],
        stream=True,
        stream_options={"include_usage": True},
    ) as raw:
        chunks = list(raw.parse())
        request_id = raw.headers["x-request-id"]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "".join(f"tok{i} " for i in range(20))
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage.completion_tokens == 20
    document = published.wait_for(request_id)
    assert document["attributes"]["metadata"]["tokens"]["output"] == 20
    assert document["attributes"]["response"]["streamed_data"][0]["object"] == "chat.completion.chunk"


def test_streamed_tool_call_from_claude(chat):
    chunks = list(
        chat.chat.completions.create(
            model="claude-3-5-sonnet-20241022",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER_TOOL],
            stream=True,
        )
    )
    arguments = "".join(
        call.function.arguments or ""
        for chunk in chunks
        if chunk.choices
        for call in (chunk.choices[0].delta.tool_calls or [])
    )
    assert json.loads(arguments) == {"location": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_provider_errors_are_translated_for_chat_clients(chat):
    with pytest.raises(openai.RateLimitError) as caught:
        chat.chat.completions.create(model="claude-status-429", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 429
    assert caught.value.body["code"] == "rate_limit_exceeded"


def test_n_above_one_is_rejected_for_claude(chat, published):
    with pytest.raises(openai.BadRequestError) as caught:
        chat.chat.completions.create(
            model="claude-3-5-sonnet-20241022", messages=[{"role": "user", "content": "x"}], n=2
        )
    assert caught.value.body["param"] == "n"
    assert published.wait_for_count(1)[-1]["attributes"]["metadata"]["status_code"] == 400


def test_an_error_event_inside_a_translated_stream_reaches_the_chat_client_in_openai_format(caller, chat, published):
    body = {"model": "claude-overloaded-midstream", "messages": [{"role": "user", "content": "x"}], "stream": True}
    headers = {"authorization": f"Bearer {caller.key}"}
    with httpx.stream("POST", caller.openai_base_url + "/chat/completions", json=body, headers=headers) as response:
        events = [event for event in response.read().decode().split("\n\n") if event.strip()]
    assert response.status_code == 200
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "tok0 tok1 tok2 "
    # The stream ends with the error, in OpenAI's format, and nothing after it (no [DONE]).
    assert events[-1].startswith("data: ")
    assert json.loads(events[-1].removeprefix("data: ")) == {
        "error": {"message": "Overloaded", "type": "server_error", "param": None, "code": "overloaded"}
    }
    metadata = published.wait_for(response.headers["x-request-id"])["attributes"]["metadata"]
    assert metadata["provider_error_type"] == "overloaded_error"
    assert metadata["error_type"] == "upstream_stream_error"
    with pytest.raises(openai.APIError, match="Overloaded"):
        list(chat.chat.completions.create(**body))
