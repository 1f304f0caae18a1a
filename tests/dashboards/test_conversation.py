"""Logged requests and responses read as conversations: every dialect and shape the gateway logs."""

from __future__ import annotations

from dashboards.conversation import conversation_from


def roles(conversation) -> list[str]:
    return [turn.role for turn in conversation.turns]


def test_an_openai_chat_with_a_tool_call_and_its_result():
    request = {
        "model": "gpt-4o-mini",
        "tools": [{"type": "function", "function": {"name": "order_status", "parameters": {}}}],
        "messages": [
            {"role": "system", "content": "You are a support agent."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Where is order 42?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 4096}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "order_status", "arguments": '{"id":42}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "shipped"}'},
        ],
    }
    response = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "It shipped."}, "finish_reason": "stop"}]
    }

    conversation = conversation_from(request, response)

    assert roles(conversation) == ["system", "user", "assistant", "tool", "assistant"]
    assert conversation.tools == ["order_status"]
    user = conversation.turns[1]
    assert [part.kind for part in user.parts] == ["text", "image"]
    assert user.parts[1].text == "Image (image/png, 3 kB, not shown)"
    call = conversation.turns[2].tool_calls[0]
    assert (call.name, call.call_id, call.text) == ("order_status", "call_1", '{\n  "id": 42\n}')
    result = conversation.turns[3].parts[0]
    assert (result.kind, result.call_id, result.name, result.text) == (
        "tool_result",
        "call_1",
        "order_status",
        '{\n  "status": "shipped"\n}',
    )
    assert [turn.source for turn in conversation.turns][-1] == "response"
    assert conversation.finish_reason == "stop"
    assert not conversation.streamed
    # What this request added to its thread: the tool result after the assistant's call.
    assert [turn.role for turn in conversation.new_request_turns] == ["tool"]


def test_an_anthropic_message_with_system_tool_use_and_tool_result():
    request = {
        "model": "claude-3-5-haiku",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Look it up."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "-3 C"}]},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/map.png"}},
                ],
            },
        ],
    }
    response = {"type": "message", "content": [{"type": "text", "text": "Cold: -3 C."}], "stop_reason": "end_turn"}

    conversation = conversation_from(request, response)

    assert roles(conversation) == ["system", "user", "assistant", "tool", "user", "assistant"]
    assert [part.kind for part in conversation.turns[2].parts] == ["thinking", "tool_call"]
    assert conversation.turns[2].parts[1].name == "weather"
    result = conversation.turns[3].parts[0]
    assert (result.text, result.name) == ("-3 C", "weather")
    assert conversation.turns[4].parts[0].text == "Image (https://example.com/map.png, not shown)"
    assert conversation.turns[-1].parts[0].text == "Cold: -3 C."
    assert conversation.finish_reason == "end_turn"


def test_an_openai_stream_is_assembled_from_its_chunks_tool_calls_included():
    request = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Order 7?"}]}
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Checking"}}]},
        {"choices": [{"index": 0, "delta": {"content": " now."}}]},
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "id": "call_9", "function": {"name": "order_status", "arguments": '{"id"'}}
                        ]
                    },
                }
            ]
        },
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":7}"}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"usage": {"prompt_tokens": 5, "completion_tokens": 9}},
    ]

    conversation = conversation_from(request, {"streamed_data": chunks})

    assert conversation.streamed
    answer = conversation.turns[-1]
    assert answer.role == "assistant" and answer.source == "response"
    assert answer.parts[0].text == "Checking now."
    assert (answer.tool_calls[0].name, answer.tool_calls[0].text) == ("order_status", '{\n  "id": 7\n}')
    assert conversation.finish_reason == "tool_calls"


def test_an_anthropic_stream_is_assembled_from_its_events():
    request = {"model": "claude-3-5-haiku", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]}
    chunks = [
        {"type": "message_start", "message": {"id": "msg_1", "role": "assistant", "usage": {"input_tokens": 3}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo!"}},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t1", "name": "wave"}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"n": 2}'}},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 4}},
    ]

    conversation = conversation_from(request, {"streamed_data": chunks})

    answer = conversation.turns[-1]
    assert [part.kind for part in answer.parts] == ["text", "tool_call"]
    assert answer.parts[0].text == "Hello!"
    assert answer.parts[1].text == '{\n  "n": 2\n}'
    assert conversation.streamed and conversation.finish_reason == "tool_use"


def test_metadata_only_logging_gives_no_turns_and_says_it_is_redacted():
    request = {"model": "gpt-4o-mini", "stream": True, "messages": "[redacted]"}
    response = {"id": "chatcmpl-x", "content": "[redacted]", "streamed_data": []}

    conversation = conversation_from(request, response)

    assert conversation.redacted
    assert conversation.turns == []


def test_an_error_reply_is_kept_with_the_prompt():
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
    response = {"error": {"type": "rate_limit_error", "message": "Slow down"}}

    conversation = conversation_from(request, response)

    assert roles(conversation) == ["user"]
    assert conversation.error == "Slow down"


def test_the_responses_api_with_a_function_call():
    request = {
        "model": "gpt-4o",
        "instructions": "Be kind.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Add 2 and 3"}]},
            {"type": "function_call", "call_id": "fc_1", "name": "add", "arguments": '{"a":2,"b":3}'},
            {"type": "function_call_output", "call_id": "fc_1", "output": "5"},
        ],
    }
    response = {"output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "5"}]}]}

    conversation = conversation_from(request, response)

    assert roles(conversation) == ["system", "user", "assistant", "tool", "assistant"]
    assert conversation.turns[3].parts[0].name == "add"
    assert conversation.turns[-1].parts[0].text == "5"


def test_a_legacy_completion_and_a_body_that_is_no_conversation():
    conversation = conversation_from({"prompt": "Say hi"}, {"choices": [{"text": "hi", "index": 0}]})
    assert roles(conversation) == ["user", "assistant"]
    assert conversation.turns[1].parts[0].text == "hi"

    embedding = {"model": "text-embedding-3-small", "input": "hello"}
    assert conversation_from(embedding, {"data": []}, path="/v1/embeddings") is None
    assert conversation_from({"raw": "not json"}, None) is None
    assert conversation_from(None, None) is None
