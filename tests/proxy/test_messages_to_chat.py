"""The Anthropic Messages -> OpenAI chat translation, as pure functions."""

import anthropic
import orjson
import pydantic
import pytest

from proxy.messages_to_chat import (
    ChatStreamTranslator,
    UnreadableResponse,
    chat_error_to_messages,
    chat_response_to_messages,
    chat_stream_error_to_messages,
    messages_request_to_chat,
    messages_usage,
    tool_input,
    wants_thinking,
)
from proxy.translation import TranslationError

UPSTREAM = "gpt-4o-mini-2024-07-18"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def translate(messages, **fields):
    body = {"model": "gpt-4o-mini", "max_tokens": 256, "messages": messages, **fields}
    return messages_request_to_chat(body, upstream_model=UPSTREAM)


def text(value, **extra):
    return {"type": "text", "text": value, **extra}


def rejected(messages=None, **fields) -> TranslationError:
    with pytest.raises(TranslationError) as raised:
        translate([{"role": "user", "content": "Hi"}] if messages is None else messages, **fields)
    return raised.value


# Requests


def test_minimal_request():
    assert translate([{"role": "user", "content": "Hello"}]) == {
        "model": UPSTREAM,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 256,
    }


def test_the_output_limit_goes_under_the_providers_name_for_it():
    body = {"model": "o3", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}
    request = messages_request_to_chat(body, upstream_model="o3", max_tokens_field="max_completion_tokens")
    assert request["max_completion_tokens"] == 100 and "max_tokens" not in request


@pytest.mark.parametrize(
    "system",
    [
        "You are terse.\n\nAnswer in French.",
        [text("You are terse.", cache_control={"type": "ephemeral"}), text("Answer in French.")],
    ],
)
def test_system_string_or_text_blocks_become_one_system_message(system):
    request = translate([{"role": "user", "content": "Hi"}], system=system)
    assert request["messages"][0] == {"role": "system", "content": "You are terse.\n\nAnswer in French."}


def test_user_text_blocks_become_a_string_and_images_become_image_url_parts():
    request = translate(
        [
            {"role": "user", "content": [text("First."), text("Second.", cache_control={"type": "ephemeral"})]},
            {"role": "assistant", "content": "Noted."},
            {
                "role": "user",
                "content": [
                    text("What is in these?"),
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                    {"type": "image", "source": {"type": "url", "url": "https://images.example.com/cat.jpg"}},
                ],
            },
        ]
    )
    assert request["messages"] == [
        {"role": "user", "content": "First.\n\nSecond."},
        {"role": "assistant", "content": "Noted."},
        {
            "role": "user",
            "content": [
                text("What is in these?"),
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://images.example.com/cat.jpg"}},
            ],
        },
    ]


def test_documents_become_file_or_text_parts():
    pdf = {
        "type": "document",
        "title": "q3.pdf",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
    }
    note = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "A note."}}
    request = translate([{"role": "user", "content": [pdf, note, text("Summarise.")]}])
    assert request["messages"][0]["content"] == [
        {"type": "file", "file": {"filename": "q3.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
        text("A note."),
        text("Summarise."),
    ]


def test_tool_round_trip_maps_tool_use_and_tool_results():
    request = translate(
        [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Two cities.", "signature": "sig"},
                    text("Let me check."),
                    {"type": "tool_use", "id": "toolu_paris", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_rome", "name": "get_weather", "input": {"city": "Rome"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_paris", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "toolu_rome", "content": [text("24C"), text("sunny")]},
                    text("Which is warmer?"),
                ],
            },
        ]
    )
    assert request["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "toolu_paris",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "toolu_rome",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_paris", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_rome", "content": "24C\n\nsunny"},
        {"role": "user", "content": "Which is warmer?"},
    ]


def test_assistant_with_only_tool_use_has_null_content():
    request = translate(
        [
            {"role": "user", "content": "Time?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}]},
        ]
    )
    assert request["messages"][1]["content"] is None
    assert request["messages"][1]["tool_calls"][0]["function"] == {"name": "now", "arguments": "{}"}
    assert request["messages"][2:] == [{"role": "tool", "tool_call_id": "toolu_1", "content": ""}]


def test_tool_error_is_noted_in_the_text_and_images_follow_as_a_user_message():
    screenshot = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    request = translate(
        [
            {"role": "user", "content": "Go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "shot", "input": {}}]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True, "content": "timed out"},
                ],
            },
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_2", "name": "shot", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": [screenshot]}]},
        ]
    )
    assert request["messages"][2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "[tool error] timed out"}
    assert request["messages"][4:] == [
        {"role": "tool", "tool_call_id": "toolu_2", "content": ""},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]},
    ]


def test_tools_and_tool_choice():
    tools = [
        {"name": "get_weather", "description": "Weather now", "input_schema": WEATHER_SCHEMA},
        {"type": "custom", "name": "now", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}},
    ]
    request = translate([{"role": "user", "content": "Hi"}], tools=tools, tool_choice={"type": "any"})
    assert request["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "Weather now", "parameters": WEATHER_SCHEMA},
        },
        {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}},
    ]
    assert request["tool_choice"] == "required"
    assert "parallel_tool_calls" not in request


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_tool_choice_mapping(tool_choice, expected):
    tools = [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}]
    assert (
        translate([{"role": "user", "content": "Hi"}], tools=tools, tool_choice=tool_choice)["tool_choice"] == expected
    )


def test_disable_parallel_tool_use_turns_parallel_calls_off():
    tools = [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}]
    choice = {"type": "auto", "disable_parallel_tool_use": True}
    request = translate([{"role": "user", "content": "Hi"}], tools=tools, tool_choice=choice)
    assert request["parallel_tool_calls"] is False


def test_tool_choice_without_tools_is_dropped():
    request = translate([{"role": "user", "content": "Hi"}], tool_choice={"type": "any"})
    assert "tool_choice" not in request and "tools" not in request


def test_sampling_stop_user_and_stream_are_mapped_and_the_rest_dropped():
    request = translate(
        [{"role": "user", "content": "Hi"}],
        temperature=0.2,
        top_p=0.9,
        top_k=40,
        stop_sequences=["END", "STOP"],
        metadata={"user_id": "user-42"},
        stream=True,
        thinking={"type": "enabled", "budget_tokens": 2048},
        service_tier="auto",
    )
    assert request == {
        "model": UPSTREAM,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 256,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END", "STOP"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "user-42",
    }


def test_structured_output_becomes_a_json_schema_response_format():
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}}
    output_config = {"effort": "high", "format": {"type": "json_schema", "schema": schema}}
    request = translate([{"role": "user", "content": "Hi"}], output_config=output_config)
    assert request["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    assert "reasoning_effort" not in request


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": "100"}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": [1]}, "top_p"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"stop_sequences": [1]}, "stop_sequences"),
        ({"metadata": "me"}, "metadata"),
        ({"metadata": {"user_id": 7}}, "metadata.user_id"),
        ({"system": 5}, "system"),
        ({"system": [{"type": "image"}]}, "system.0"),
        ({"tools": {}}, "tools"),
        ({"tools": ["x"]}, "tools.0"),
        ({"tools": [{"name": "", "input_schema": {}}]}, "tools.0.name"),
        ({"tools": [{"name": "f", "description": 3, "input_schema": {}}]}, "tools.0.description"),
        ({"tools": [{"name": "f"}]}, "tools.0.input_schema"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
        (
            {"tool_choice": {"type": "auto", "disable_parallel_tool_use": "yes"}},
            "tool_choice.disable_parallel_tool_use",
        ),
        ({"mcp_servers": [{"type": "url", "url": "https://mcp.example.com"}]}, "mcp_servers"),
        ({"output_config": "json"}, "output_config"),
        ({"output_config": {"format": {"type": "json_object"}}}, "output_config.format"),
        ({"output_config": {"format": {"type": "json_schema", "schema": "x"}}}, "output_config.format.schema"),
    ],
)
def test_mistyped_fields_are_rejected_with_their_name(fields, param):
    assert rejected(**fields).param == param


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([], "messages"),
        ("Hi", "messages"),
        (["Hi"], "messages.0"),
        ([{"role": "system", "content": "x"}], "messages.0.role"),
        ([{"role": "user"}], "messages.0.content"),
        ([{"role": "user", "content": 5}], "messages.0.content"),
        ([{"role": "user", "content": ["x"]}], "messages.0.content.0"),
        ([{"role": "user", "content": [{"type": "text", "text": 5}]}], "messages.0.content.0.text"),
        ([{"role": "user", "content": [{"type": "video"}]}], "messages.0.content.0.type"),
        ([{"role": "user", "content": [{"type": "image", "source": "x"}]}], "messages.0.content.0.source"),
        (
            [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}],
            "messages.0.content.0.source.type",
        ),
        (
            [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "AA"}}]}],
            "messages.0.content.0.source.media_type",
        ),
        ([{"role": "user", "content": [{"type": "tool_result"}]}], "messages.0.content.0.tool_use_id"),
        (
            [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": "no"}]}],
            "messages.0.content.0.is_error",
        ),
        (
            [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": 5}]}],
            "messages.0.content.0.content",
        ),
        (
            [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "x"}]}]}],
            "messages.0.content.0.content.0.type",
        ),
        ([{"role": "assistant", "content": [{"type": "tool_use", "name": "f"}]}], "messages.0.content.0.id"),
        ([{"role": "assistant", "content": [{"type": "tool_use", "id": "t"}]}], "messages.0.content.0.name"),
        (
            [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "{}"}]}],
            "messages.0.content.0.input",
        ),
        ([{"role": "assistant", "content": [{"type": "image"}]}], "messages.0.content.0.type"),
    ],
)
def test_mistyped_messages_are_rejected_with_their_path(messages, param):
    assert rejected(messages).param == param


# Responses


def completion(message, finish_reason="stop", **choice):
    return {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "model": UPSTREAM,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, **choice}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150},
    }


def test_text_response():
    answer = chat_response_to_messages(completion({"role": "assistant", "content": "Hello!"}), model="gpt-4o-mini")
    assert answer == {
        "id": "msg_chatcmpl-abc123",
        "type": "message",
        "role": "assistant",
        "model": "gpt-4o-mini",
        "content": [text("Hello!")],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 120,
            "output_tokens": 30,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def test_text_and_tool_calls_become_text_and_tool_use_blocks():
    message = {
        "role": "assistant",
        "content": "Checking both.",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}},
        ],
    }
    answer = chat_response_to_messages(completion(message, "tool_calls"), model="gpt-4o-mini")
    assert answer["content"] == [
        text("Checking both."),
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "now", "input": {}},
    ]
    assert answer["stop_reason"] == "tool_use"


def test_tool_calls_with_finish_reason_stop_still_stop_for_tool_use():
    message = {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "function": {"name": "now"}}]}
    answer = chat_response_to_messages(completion(message, "stop"), model="m")
    assert answer["stop_reason"] == "tool_use"
    assert answer["content"] == [{"type": "tool_use", "id": "c", "name": "now", "input": {}}]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ({"a": 1}, {"a": 1}),
        ("", {}),
        (None, {}),
        ('{"a": ', {"_raw_arguments": '{"a": '}),
        ("[1]", {"_raw_arguments": "[1]"}),
        (7, {"_raw_arguments": "7"}),
    ],
)
def test_tool_input(arguments, expected):
    assert tool_input(arguments) == expected


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
        ("x", "end_turn"),
    ],
)
def test_stop_reasons(finish_reason, stop_reason):
    answer = chat_response_to_messages(completion({"content": "x"}, finish_reason), model="m")
    assert answer["stop_reason"] == stop_reason


def test_a_matched_stop_sequence_reported_by_the_server_is_named():
    response = completion({"content": "Counting: 1 2"}, "stop", stop_reason="END")
    answer = chat_response_to_messages(response, model="m", stop=["END"])
    assert (answer["stop_reason"], answer["stop_sequence"]) == ("stop_sequence", "END")
    # OpenAI itself does not say which sequence matched: the answer simply ended.
    answer = chat_response_to_messages(completion({"content": "Counting"}), model="m", stop=["END"])
    assert (answer["stop_reason"], answer["stop_sequence"]) == ("end_turn", None)


def test_a_refusal_is_text_with_stop_reason_refusal():
    answer = chat_response_to_messages(completion({"content": None, "refusal": "I can't help with that."}), model="m")
    assert answer["content"] == [text("I can't help with that.")]
    assert answer["stop_reason"] == "refusal"


def test_empty_answer_has_no_blocks_and_a_missing_id_gets_one():
    response = completion({"role": "assistant", "content": ""})
    del response["id"]
    answer = chat_response_to_messages(response, model="m")
    assert answer["content"] == [] and answer["id"].startswith("msg_")


@pytest.mark.parametrize("response", [{}, {"choices": []}, {"choices": ["x"]}, {"choices": [{"message": "hi"}]}])
def test_a_completion_without_a_message_is_unreadable(response):
    with pytest.raises(UnreadableResponse):
        chat_response_to_messages(response, model="m")


def test_cached_prompt_tokens_are_cache_reads_and_left_out_of_input_tokens():
    usage = {"prompt_tokens": 2000, "completion_tokens": 50, "prompt_tokens_details": {"cached_tokens": 1536}}
    assert messages_usage(usage) == {
        "input_tokens": 464,
        "output_tokens": 50,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 1536,
    }
    assert messages_usage({"prompt_tokens": 100, "prompt_cache_hit_tokens": 40})["cache_read_input_tokens"] == 40


@pytest.mark.parametrize("usage", [None, "x", {}, {"prompt_tokens": None, "completion_tokens": -1}])
def test_missing_or_mistyped_usage_counts_zero(usage):
    assert messages_usage(usage) == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


# Errors


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
    ],
)
def test_error_type_follows_the_status_and_the_message_is_kept(status, error_type):
    body = {"error": {"message": "Something is off.", "type": "invalid_request_error", "param": None, "code": None}}
    assert chat_error_to_messages(body, status) == {
        "type": "error",
        "error": {"type": error_type, "message": "Something is off."},
    }


@pytest.mark.parametrize("body", [None, {}, {"error": None}, {"error": {"message": 5}}, {"detail": "x"}])
def test_unusable_error_bodies_name_the_status(body):
    assert chat_error_to_messages(body, 502)["error"] == {
        "type": "api_error",
        "message": "The upstream provider returned HTTP 502",
    }


def test_a_plain_string_error_keeps_its_text():
    assert chat_error_to_messages({"error": "model is loading"}, 503)["error"]["message"] == "model is loading"


@pytest.mark.parametrize(
    ("error", "error_type"),
    [
        ({"message": "Overloaded", "type": "server_error"}, "api_error"),
        ({"message": "Slow down", "type": "requests", "code": "rate_limit_exceeded"}, "rate_limit_error"),
        ({"message": "Busy", "code": 529}, "overloaded_error"),
        ({"message": "?", "type": "mystery"}, "api_error"),
    ],
)
def test_stream_errors_are_typed_by_code_or_type(error, error_type):
    assert chat_stream_error_to_messages({"error": error}) == {
        "type": "error",
        "error": {"type": error_type, "message": error["message"]},
    }


# Streaming


def chunk(delta=None, finish_reason=None, **extra):
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    return {"id": "chatcmpl-s1", "object": "chat.completion.chunk", "model": UPSTREAM, "choices": choices, **extra}


def call_piece(index, arguments, **opening):
    function = {"arguments": arguments}
    if "name" in opening:
        function["name"] = opening.pop("name")
    return chunk({"tool_calls": [{"index": index, **opening, "function": function}]})


def run(chunks, **options):
    translator = ChatStreamTranslator(model="gpt-4o-mini", **options)
    events = [event for piece in chunks for event in translator.feed(piece)]
    return translator, events + translator.end()


USAGE = {"prompt_tokens": 300, "completion_tokens": 41, "prompt_tokens_details": {"cached_tokens": 100}}


def test_text_then_two_tool_calls_become_the_exact_events():
    chunks = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Let me"}),
        chunk({"content": " check."}),
        call_piece(0, "", id="call_a", type="function", name="get_weather"),
        call_piece(0, '{"city": '),
        call_piece(0, '"Oslo"}'),
        call_piece(1, '{"city": "Rome"}', id="call_b", type="function", name="get_weather"),
        chunk({}, "tool_calls"),
        chunk(usage=USAGE),
    ]
    translator, events = run(chunks)

    def delta(index, **body):
        return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": body})

    def start(index, block):
        return ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})

    def stop(index):
        return ("content_block_stop", {"type": "content_block_stop", "index": index})

    message = {
        "id": "msg_chatcmpl-s1",
        "type": "message",
        "role": "assistant",
        "model": "gpt-4o-mini",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    assert events == [
        ("message_start", {"type": "message_start", "message": message}),
        start(0, text("")),
        delta(0, type="text_delta", text="Let me"),
        delta(0, type="text_delta", text=" check."),
        stop(0),
        start(1, {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}),
        delta(1, type="input_json_delta", partial_json='{"city": '),
        delta(1, type="input_json_delta", partial_json='"Oslo"}'),
        stop(1),
        start(2, {"type": "tool_use", "id": "call_b", "name": "get_weather", "input": {}}),
        delta(2, type="input_json_delta", partial_json='{"city": "Rome"}'),
        stop(2),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {
                    "input_tokens": 200,
                    "output_tokens": 41,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 100,
                },
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    assert translator.usage == USAGE


def test_plain_text_stream_ends_with_end_turn_and_nothing_twice():
    translator, events = run([chunk({"role": "assistant", "content": ""}), chunk({"content": "Hi"}), chunk({}, "stop")])
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert translator.end() == [] and translator.feed(chunk({"content": "late"})) == []


def test_a_stream_with_no_chunks_still_makes_a_whole_message():
    _, events = run([])
    assert [name for name, _ in events] == ["message_start", "message_delta", "message_stop"]


def test_a_tool_call_whose_name_comes_late_opens_once_named_with_the_buffered_arguments():
    chunks = [call_piece(0, '{"a":', id="call_x"), call_piece(0, " 1}", name="f"), chunk({}, "tool_calls")]
    _, events = run(chunks)
    assert events[1] == (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "call_x", "name": "f", "input": {}},
        },
    )
    assert events[2][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"a": 1}'}


def test_length_finish_and_server_reported_stop_sequence():
    _, events = run([chunk({"content": "a"}), chunk({}, "length")])
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"
    matched = chunk({}, "stop")
    matched["choices"][0]["stop_reason"] = "###"
    _, events = run([chunk({"content": "a"}), matched], stop=["###"])
    assert events[-2][1]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "###"}


def test_choices_other_than_the_first_and_odd_chunks_are_ignored():
    odd = [
        {"choices": "x"},
        {"choices": [None, {"index": 1, "delta": {"content": "other"}}]},
        chunk({"content": 5, "tool_calls": "x"}),
        chunk({"tool_calls": [None, {"index": 0, "function": "f"}]}),
        chunk({"content": "kept"}),
    ]
    _, events = run(odd)
    texts = [data["delta"]["text"] for name, data in events if name == "content_block_delta"]
    assert texts == ["kept"]


def test_an_error_chunk_is_kept_and_ends_the_translation():
    translator = ChatStreamTranslator(model="m")
    translator.feed(chunk({"content": "a"}))
    assert translator.feed({"error": {"message": "Overloaded", "type": "server_error"}}) == []
    assert translator.error == {"type": "error", "error": {"type": "api_error", "message": "Overloaded"}}


def test_events_are_json_serialisable():
    _, events = run([chunk({"content": "é"}), chunk({}, "stop"), chunk(usage=USAGE)])
    for _, data in events:
        orjson.dumps(data)


# Thinking


def test_reasoning_becomes_a_thinking_block_only_when_thinking_was_asked_for():
    response = completion({"role": "assistant", "content": "42", "reasoning_content": "6 times 7."})
    with_thinking = chat_response_to_messages(response, model="deepseek-reasoner", thinking=True)
    assert with_thinking["content"] == [
        {"type": "thinking", "thinking": "6 times 7.", "signature": ""},
        text("42"),
    ]
    assert chat_response_to_messages(response, model="deepseek-reasoner")["content"] == [text("42")]


@pytest.mark.parametrize(
    ("thinking", "wanted"),
    [
        (None, False),
        ({"type": "enabled", "budget_tokens": 1024}, True),
        ({"type": "adaptive"}, True),
        ({"type": "disabled"}, False),
    ],
)
def test_wants_thinking(thinking, wanted):
    assert wants_thinking({} if thinking is None else {"thinking": thinking}) is wanted


@pytest.mark.parametrize("thinking", ["on", {"budget_tokens": 5}, {"type": 1}])
def test_mistyped_thinking_is_rejected(thinking):
    assert rejected(thinking=thinking).param == "thinking"


def test_streamed_reasoning_is_a_thinking_block_before_the_text():
    chunks = [
        chunk({"role": "assistant", "content": None, "reasoning_content": "Six"}),
        chunk({"reasoning": " sevens."}),
        chunk({"content": "42"}),
        chunk({}, "stop"),
    ]
    _, events = run(chunks, thinking=True)
    assert events[1:7] == [
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""},
            },
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Six"}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": " sevens."}},
        ),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": text("")}),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "42"}},
        ),
    ]
    _, events = run(chunks)
    assert [data["content_block"]["type"] for name, data in events if name == "content_block_start"] == ["text"]


# The official SDK's own types accept what the translation makes.


def test_answers_validate_as_the_sdks_message_type():
    tool_call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    message = {"role": "assistant", "content": "Hi", "reasoning_content": "Hmm.", "tool_calls": [tool_call]}
    answer = chat_response_to_messages(completion(message, "tool_calls"), model="gpt-4o-mini", thinking=True)
    parsed = anthropic.types.Message.model_validate(answer)
    assert [block.type for block in parsed.content] == ["thinking", "text", "tool_use"]
    assert parsed.usage.input_tokens == 120


def test_stream_events_validate_as_the_sdks_event_types():
    chunks = [
        chunk({"role": "assistant", "content": None, "reasoning_content": "Hmm."}),
        chunk({"content": "Checking."}),
        call_piece(0, '{"a": 1}', id="call_a", type="function", name="f"),
        chunk({}, "tool_calls"),
        chunk(usage=USAGE),
    ]
    _, events = run(chunks, thinking=True)
    adapter = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)
    assert [adapter.validate_python(data).type for _, data in events] == [name for name, _ in events]
    error = chat_stream_error_to_messages({"error": {"message": "Overloaded", "type": "server_error"}})
    assert anthropic.types.ErrorResponse.model_validate(error).error.type == "api_error"
