import orjson
import pytest

from proxy import translation
from proxy.translation import (
    MessagesStreamTranslator,
    TranslationError,
    chat_request_to_messages,
    messages_error_to_chat,
    messages_response_to_chat,
)

UPSTREAM = "claude-sonnet-4-5-20250929"
PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest.fixture
def frozen_clock(monkeypatch):
    monkeypatch.setattr(translation.time, "time", lambda: 1_760_000_000.75)
    return 1_760_000_000


def translate(messages, **fields):
    return chat_request_to_messages({"model": "claude-sonnet", "messages": messages, **fields}, upstream_model=UPSTREAM)


def text(value):
    return {"type": "text", "text": value}


# Requests


def test_minimal_request_gets_upstream_model_and_default_max_tokens():
    assert translate([{"role": "user", "content": "Hello"}]) == {
        "model": UPSTREAM,
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [text("Hello")]}],
    }


def test_system_and_developer_messages_become_one_system_prompt():
    request = translate(
        [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "developer", "content": [text("Answer in French."), text("Never use emoji.")]},
            {"role": "user", "content": "Hi"},
        ]
    )
    assert request["system"] == "You are a terse assistant.\n\nAnswer in French.\n\nNever use emoji."
    assert request["messages"] == [{"role": "user", "content": [text("Hi")]}]


def test_system_with_an_image_part_is_rejected():
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    with pytest.raises(TranslationError) as raised:
        translate([{"role": "system", "content": [image]}, {"role": "user", "content": "Hi"}])
    assert raised.value.param == "messages[0].content[0]"


def test_image_parts_map_to_base64_and_url_sources():
    request = translate(
        [
            {
                "role": "user",
                "content": [
                    text("What is in these pictures?"),
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_BASE64}", "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": "https://images.example.com/cat.jpg"}},
                ],
            }
        ]
    )
    assert request["messages"][0]["content"] == [
        text("What is in these pictures?"),
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_BASE64}},
        {"type": "image", "source": {"type": "url", "url": "https://images.example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize("url", ["ftp://example.com/a.png", "data:image/png,not-base64", "data:;base64,AAAA"])
def test_unusable_image_urls_are_rejected(url):
    with pytest.raises(TranslationError) as raised:
        translate([{"role": "user", "content": [text("see"), {"type": "image_url", "image_url": {"url": url}}]}])
    assert raised.value.param == "messages[0].content[1].image_url"


def test_unsupported_content_part_is_rejected():
    audio = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    with pytest.raises(TranslationError) as raised:
        translate([{"role": "user", "content": [audio]}])
    assert raised.value.param == "messages[0].content[0].type"


def test_consecutive_same_role_messages_are_merged_and_empty_text_dropped():
    request = translate(
        [
            {"role": "user", "content": "First question."},
            {"role": "user", "content": [text("Second question.")]},
            {"role": "assistant", "content": "Answer one."},
            {"role": "assistant", "content": ""},
            {"role": "assistant", "content": "Answer two."},
            {"role": "user", "content": "Thanks"},
        ]
    )
    assert request["messages"] == [
        {"role": "user", "content": [text("First question."), text("Second question.")]},
        {"role": "assistant", "content": [text("Answer one."), text("Answer two.")]},
        {"role": "user", "content": [text("Thanks")]},
    ]


def test_tool_call_round_trip_maps_calls_and_merges_results():
    request = translate(
        [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "id": "call_paris",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_rome",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Rome", "unit": "c"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_paris", "content": "18C, cloudy"},
            {"role": "tool", "tool_call_id": "call_rome", "content": [text("24C, sunny")]},
            {"role": "user", "content": "Which is warmer?"},
        ]
    )
    assert request["messages"] == [
        {"role": "user", "content": [text("Weather in Paris and Rome?")]},
        {
            "role": "assistant",
            "content": [
                text("Let me check."),
                {"type": "tool_use", "id": "call_paris", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_rome", "name": "get_weather", "input": {"city": "Rome", "unit": "c"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_paris", "content": "18C, cloudy"},
                {"type": "tool_result", "tool_use_id": "call_rome", "content": "24C, sunny"},
                text("Which is warmer?"),
            ],
        },
    ]


def test_assistant_with_only_tool_calls_and_empty_arguments():
    request = translate(
        [
            {"role": "user", "content": "What time is it?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "now", "arguments": ""}}],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": ""},
        ]
    )
    assert request["messages"][1:] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "now", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1"}]},
    ]


@pytest.mark.parametrize("arguments", ['{"city": "Paris"', "[1, 2]", "42"])
def test_bad_tool_call_arguments_are_rejected(arguments):
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    with pytest.raises(TranslationError) as raised:
        translate([{"role": "user", "content": "Hi"}, {"role": "assistant", "tool_calls": [call]}])
    assert raised.value.param == "messages[1].tool_calls[0].function.arguments"


def test_tool_message_without_tool_call_id_is_rejected():
    with pytest.raises(TranslationError) as raised:
        translate([{"role": "user", "content": "Hi"}, {"role": "tool", "content": "42"}])
    assert raised.value.param == "messages[1].tool_call_id"


def test_unknown_role_is_rejected():
    with pytest.raises(TranslationError) as raised:
        translate([{"role": "narrator", "content": "Once upon a time"}])
    assert raised.value.param == "messages[0].role"


def test_tools_get_input_schema_with_a_default():
    weather_schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    request = translate(
        [{"role": "user", "content": "Hi"}],
        tools=[
            {
                "type": "function",
                "function": {"name": "get_weather", "description": "Current weather", "parameters": weather_schema},
            },
            {"type": "function", "function": {"name": "now"}},
        ],
    )
    assert request["tools"] == [
        {"name": "get_weather", "description": "Current weather", "input_schema": weather_schema},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in request


def test_non_function_tool_is_rejected():
    with pytest.raises(TranslationError) as raised:
        translate([{"role": "user", "content": "Hi"}], tools=[{"type": "custom", "custom": {"name": "grammar"}}])
    assert raised.value.param == "tools[0]"


NOW_TOOL = [{"type": "function", "function": {"name": "now"}}]


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "now"}}, {"type": "tool", "name": "now"}),
    ],
)
def test_tool_choice_mapping(tool_choice, expected):
    request = translate([{"role": "user", "content": "Hi"}], tools=NOW_TOOL, tool_choice=tool_choice)
    assert request["tool_choice"] == expected


def test_invalid_tool_choice_is_rejected():
    with pytest.raises(TranslationError) as raised:
        translate([{"role": "user", "content": "Hi"}], tools=NOW_TOOL, tool_choice="sometimes")
    assert raised.value.param == "tool_choice"


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        (None, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", {"type": "any", "disable_parallel_tool_use": True}),
        ("none", {"type": "none"}),
    ],
)
def test_parallel_tool_calls_false_disables_parallel_use(tool_choice, expected):
    fields = {"tools": NOW_TOOL, "parallel_tool_calls": False}
    if tool_choice:
        fields["tool_choice"] = tool_choice
    assert translate([{"role": "user", "content": "Hi"}], **fields)["tool_choice"] == expected


def test_tool_choice_without_tools_is_dropped():
    request = translate([{"role": "user", "content": "Hi"}], tool_choice="auto", parallel_tool_calls=False)
    assert "tool_choice" not in request
    assert "tools" not in request


def test_legacy_functions_and_function_call_are_mapped():
    request = translate(
        [
            {"role": "user", "content": "What time is it?"},
            {"role": "assistant", "content": None, "function_call": {"name": "now", "arguments": "{}"}},
            {"role": "function", "name": "now", "content": "12:00"},
        ],
        functions=[{"name": "now", "description": "Current time"}],
        function_call={"name": "now"},
    )
    assert request["tools"] == [
        {"name": "now", "description": "Current time", "input_schema": {"type": "object", "properties": {}}}
    ]
    assert request["tool_choice"] == {"type": "tool", "name": "now"}
    assert request["messages"][1:] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_legacy_1", "name": "now", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_legacy_1", "content": "12:00"}]},
    ]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"max_tokens": 256}, 256),
        ({"max_completion_tokens": 512}, 512),
        ({"max_tokens": 256, "max_completion_tokens": 512}, 512),
        ({}, 4096),
    ],
)
def test_max_tokens(fields, expected):
    assert translate([{"role": "user", "content": "Hi"}], **fields)["max_tokens"] == expected


@pytest.mark.parametrize(("stop", "expected"), [("END", ["END"]), (["\n\n", "END"], ["\n\n", "END"])])
def test_stop_becomes_stop_sequences(stop, expected):
    assert translate([{"role": "user", "content": "Hi"}], stop=stop)["stop_sequences"] == expected


def test_bad_stop_is_rejected():
    with pytest.raises(TranslationError) as raised:
        translate([{"role": "user", "content": "Hi"}], stop=[1, 2])
    assert raised.value.param == "stop"


def test_sampling_stream_and_user_are_copied_and_unknown_fields_dropped():
    request = translate(
        [{"role": "user", "content": "Hi"}],
        temperature=0.2,
        top_p=0.9,
        stream=True,
        stream_options={"include_usage": True},
        user="user-1234",
        seed=7,
        logprobs=True,
        frequency_penalty=0.5,
        presence_penalty=0.1,
        store=False,
    )
    assert request == {
        "model": UPSTREAM,
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [text("Hi")]}],
        "temperature": 0.2,
        "top_p": 0.9,
        "stream": True,
        "metadata": {"user_id": "user-1234"},
    }


def test_json_object_response_format_adds_a_system_instruction():
    request = translate(
        [{"role": "system", "content": "Extract the city."}, {"role": "user", "content": "I live in Oslo"}],
        response_format={"type": "json_object"},
    )
    assert request["system"] == (
        "Extract the city.\n\nRespond only with a single valid JSON object, with no other text before or after it."
    )


def test_json_schema_response_format_includes_the_schema():
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    request = translate(
        [{"role": "user", "content": "I live in Oslo"}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
    )
    assert request["system"].startswith("Respond only with a single valid JSON object")
    assert request["system"].endswith('{"type":"object","properties":{"city":{"type":"string"}}}')


def test_text_response_format_adds_nothing():
    request = translate([{"role": "user", "content": "Hi"}], response_format={"type": "text"})
    assert "system" not in request


def test_n_greater_than_one_is_rejected():
    with pytest.raises(TranslationError) as raised:
        translate([{"role": "user", "content": "Hi"}], n=3)
    assert str(raised.value) == "n > 1 is not supported by Anthropic models"
    assert raised.value.param == "n"


def test_n_of_one_is_accepted():
    assert "n" not in translate([{"role": "user", "content": "Hi"}], n=1)


@pytest.mark.parametrize(
    "body",
    [
        {"model": "claude-sonnet"},
        {"model": "claude-sonnet", "messages": []},
        {"model": "claude-sonnet", "messages": "Hi"},
        {"model": "claude-sonnet", "messages": [{"role": "system", "content": "Only a system prompt"}]},
    ],
)
def test_missing_or_empty_messages_are_rejected(body):
    with pytest.raises(TranslationError) as raised:
        chat_request_to_messages(body, upstream_model=UPSTREAM)
    assert raised.value.param == "messages"


def test_translation_error_is_a_value_error():
    assert issubclass(TranslationError, ValueError)
    assert TranslationError("bad").param is None


# Responses


def anthropic_response(content, stop_reason="end_turn", **usage):
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": UPSTREAM,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 12, **usage},
    }


def test_text_response(frozen_clock):
    response = anthropic_response([text("Bonjour"), text(" !")])
    assert messages_response_to_chat(response, model="claude-sonnet") == {
        "id": "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL",
        "object": "chat.completion",
        "created": frozen_clock,
        "model": "claude-sonnet",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Bonjour !", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 25,
            "completion_tokens": 12,
            "total_tokens": 37,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }


def test_tool_use_response_has_tool_calls_and_no_content():
    response = anthropic_response(
        [
            {"type": "thinking", "thinking": "The user wants weather.", "signature": "EqQBCgIYAhIM"},
            {
                "type": "tool_use",
                "id": "toolu_01A09q90qw90lq917835lq9",
                "name": "get_weather",
                "input": {"city": "Oslo"},
            },
        ],
        stop_reason="tool_use",
    )
    choice = messages_response_to_chat(response, model="claude-sonnet")["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {
                "id": "toolu_01A09q90qw90lq917835lq9",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
            }
        ],
    }
    arguments = choice["message"]["tool_calls"][0]["function"]["arguments"]
    assert orjson.loads(arguments) == {"city": "Oslo"}


def test_text_and_tool_use_response_keeps_both():
    response = anthropic_response(
        [text("Checking."), {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}], stop_reason="tool_use"
    )
    message = messages_response_to_chat(response, model="claude-sonnet")["choices"][0]["message"]
    assert message["content"] == "Checking."
    assert message["tool_calls"][0]["function"] == {"name": "now", "arguments": "{}"}


def test_empty_response_has_empty_string_content():
    message = messages_response_to_chat(anthropic_response([]), model="claude-sonnet")["choices"][0]["message"]
    assert message["content"] == ""
    assert "tool_calls" not in message


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("something_new", "stop"),
        (None, "stop"),
    ],
)
def test_stop_reasons(stop_reason, finish_reason):
    response = anthropic_response([text("Hi")], stop_reason=stop_reason)
    assert messages_response_to_chat(response, model="m")["choices"][0]["finish_reason"] == finish_reason


def test_usage_counts_cache_tokens_as_prompt_tokens():
    response = anthropic_response([text("Hi")], cache_creation_input_tokens=1000, cache_read_input_tokens=3000)
    assert messages_response_to_chat(response, model="m")["usage"] == {
        "prompt_tokens": 4025,
        "completion_tokens": 12,
        "total_tokens": 4037,
        "prompt_tokens_details": {"cached_tokens": 3000},
    }


def test_usage_tolerates_null_cache_fields():
    response = anthropic_response([text("Hi")], cache_creation_input_tokens=None, cache_read_input_tokens=None)
    assert messages_response_to_chat(response, model="m")["usage"]["prompt_tokens"] == 25


# Errors


@pytest.mark.parametrize(
    ("anthropic_type", "status", "openai_type", "code"),
    [
        ("invalid_request_error", 400, "invalid_request_error", None),
        ("authentication_error", 401, "authentication_error", "invalid_api_key"),
        ("permission_error", 403, "permission_error", None),
        ("not_found_error", 404, "not_found_error", None),
        ("rate_limit_error", 429, "rate_limit_error", "rate_limit_exceeded"),
        ("api_error", 500, "server_error", None),
        ("overloaded_error", 529, "server_error", "overloaded"),
    ],
)
def test_error_types_map_and_keep_the_message(anthropic_type, status, openai_type, code):
    body = {
        "type": "error",
        "error": {"type": anthropic_type, "message": "messages.0.content: Field required"},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }
    assert messages_error_to_chat(body, status) == {
        "error": {
            "message": "messages.0.content: Field required",
            "type": openai_type,
            "param": None,
            "code": code,
        }
    }


@pytest.mark.parametrize(
    ("body", "status", "openai_type"),
    [
        (None, 429, "rate_limit_error"),
        (None, 503, "server_error"),
        ({"unexpected": "shape"}, 401, "authentication_error"),
        ({"error": {"type": "brand_new_error", "message": "?"}}, 418, "invalid_request_error"),
    ],
)
def test_unusable_error_bodies_fall_back_to_the_status(body, status, openai_type):
    error = messages_error_to_chat(body, status)["error"]
    assert error["type"] == openai_type
    assert error["message"]


def test_missing_error_message_names_the_status():
    assert messages_error_to_chat(None, 502)["error"]["message"] == "The upstream provider returned HTTP 502"


# Streaming


FULL_STREAM = [
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_014p7gG3wDgGV9EUtLvnow3U",
                "type": "message",
                "role": "assistant",
                "model": UPSTREAM,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 472,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 100,
                    "output_tokens": 2,
                },
            },
        },
    ),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("ping", {"type": "ping"}),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me"}},
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " check."}},
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "name": "get_weather",
                "input": {},
            },
        },
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"city": '}},
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '"Oslo"}'}},
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 89},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
]


def feed_all(translator, events):
    return [chunk for event_type, data in events for chunk in translator.feed(event_type, data)]


def test_full_stream_translates_to_the_exact_chunks():
    translator = MessagesStreamTranslator(model="claude-sonnet", include_usage=True)
    chunks = feed_all(translator, FULL_STREAM)

    envelope = {
        "id": "chatcmpl-msg_014p7gG3wDgGV9EUtLvnow3U",
        "object": "chat.completion.chunk",
        "created": translator.created,
        "model": "claude-sonnet",
    }

    def chunk(delta, finish_reason=None):
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**envelope, "choices": [choice], "usage": None}

    assert chunks == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Let me"}),
        chunk({"content": " check."}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
        chunk({}, "tool_calls"),
        {
            **envelope,
            "choices": [],
            "usage": {
                "prompt_tokens": 572,
                "completion_tokens": 89,
                "total_tokens": 661,
                "prompt_tokens_details": {"cached_tokens": 100},
            },
        },
    ]
    assert translator.usage == (572, 89)
    assert translator.finish_reason == "tool_calls"
    assert translator.error is None


def test_stream_without_include_usage_has_no_usage_chunk_or_field():
    translator = MessagesStreamTranslator(model="claude-sonnet", include_usage=False)
    chunks = feed_all(translator, FULL_STREAM)
    assert len(chunks) == 7
    assert all("usage" not in chunk and len(chunk["choices"]) == 1 for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert translator.usage == (572, 89)


def test_event_type_falls_back_to_the_data_type():
    translator = MessagesStreamTranslator(model="m", include_usage=False)
    chunks = translator.feed(None, FULL_STREAM[0][1])
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[0]["id"] == "chatcmpl-msg_014p7gG3wDgGV9EUtLvnow3U"


def test_usage_is_none_before_any_event_and_tracks_message_start():
    translator = MessagesStreamTranslator(model="m", include_usage=False)
    assert translator.usage is None
    assert translator.finish_reason is None
    translator.feed("message_start", FULL_STREAM[0][1])
    assert translator.usage == (572, 2)


def test_tool_indexes_count_only_tool_calls_and_thinking_is_skipped():
    translator = MessagesStreamTranslator(model="m", include_usage=False)
    events = [
        FULL_STREAM[0],
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking"}}),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Two calls."}},
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQB"}},
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "toolu_a", "name": "a"},
            },
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}},
        ),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 2,
                "content_block": {"type": "tool_use", "id": "toolu_b", "name": "b"},
            },
        ),
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        ),
    ]
    deltas = [chunk["choices"][0]["delta"] for chunk in feed_all(translator, events)]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"tool_calls": [{"index": 0, "id": "toolu_a", "type": "function", "function": {"name": "a", "arguments": ""}}]},
        {"tool_calls": [{"index": 1, "id": "toolu_b", "type": "function", "function": {"name": "b", "arguments": ""}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},
    ]


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [("end_turn", "stop"), ("max_tokens", "length"), ("stop_sequence", "stop"), ("refusal", "content_filter")],
)
def test_stream_finish_reasons(stop_reason, finish_reason):
    translator = MessagesStreamTranslator(model="m", include_usage=False)
    translator.feed("message_start", FULL_STREAM[0][1])
    chunks = translator.feed("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop_reason}})
    assert chunks[0]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason}
    assert translator.finish_reason == finish_reason


def test_ping_and_unknown_events_produce_nothing():
    translator = MessagesStreamTranslator(model="m", include_usage=True)
    assert translator.feed("ping", {"type": "ping"}) == []
    assert translator.feed("future_event", {"type": "future_event"}) == []


def test_error_event_is_kept_for_the_caller():
    translator = MessagesStreamTranslator(model="m", include_usage=True)
    translator.feed("message_start", FULL_STREAM[0][1])
    event = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert translator.feed("error", event) == []
    assert translator.error == event
    assert messages_error_to_chat(translator.error, 529)["error"] == {
        "message": "Overloaded",
        "type": "server_error",
        "param": None,
        "code": "overloaded",
    }


# Mistyped fields: a TranslationError naming the field, never a TypeError or AttributeError


HI = [{"role": "user", "content": "Hi"}]
FUNCTION = {"type": "function", "function": {"name": "f"}}


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"response_format": {"type": "json_schema", "json_schema": "{}"}}, "response_format.json_schema"),
        ({"response_format": {"type": "json_schema", "json_schema": []}}, "response_format.json_schema"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": "x"}}}, "response_format.json_schema"),
        ({"response_format": "json_object"}, "response_format"),
        ({"response_format": {"type": 5}}, "response_format.type"),
        ({"max_tokens": "100"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": 1.5}, "max_completion_tokens"),
        ({"stop": 5}, "stop"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": [1]}, "top_p"),
        ({"stream": "yes"}, "stream"),
        ({"tools": "f"}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": 5}}]}, "tools[0]"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "{}"}}]}, "tools[0]"),
        ({"tools": [{"type": "function", "function": {"name": "f", "description": 5}}]}, "tools[0]"),
        ({"tools": [FUNCTION], "tool_choice": {"type": "function", "function": {"name": 5}}}, "tool_choice"),
        ({"functions": {"name": "f"}}, "tools"),
        ({"user": 5}, "user"),
    ],
)
def test_mistyped_fields_are_rejected_with_their_name(fields, param):
    with pytest.raises(TranslationError) as raised:
        translate(HI, **fields)
    assert raised.value.param == param


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "system", "content": [{"type": "text", "text": 5}]}, "messages[0].content[0].text"),
        ({"role": "system", "content": 5}, "messages[0].content"),
        ({"role": "user", "content": 5}, "messages[0].content"),
        ({"role": "user", "content": {"type": "text", "text": "hi"}}, "messages[0].content"),
        ({"role": "user", "content": [{"type": "text", "text": ["hi"]}]}, "messages[0].content[0].text"),
        (
            {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": "x"}]},
            "messages[0].content[0].cache_control",
        ),
        ({"role": "user", "content": ["hi"]}, "messages[0].content[0].type"),
        ({"role": "user", "content": [{"type": "refusal", "refusal": 5}]}, "messages[0].content[0].refusal"),
        (
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": 5}}]},
            "messages[0].content[0].image_url",
        ),
        ({"role": ["user"], "content": "hi"}, "messages[0].role"),
        ({"role": "assistant", "tool_calls": {"id": "c"}}, "messages[0].tool_calls"),
        (
            {"role": "assistant", "tool_calls": [{"id": 5, "type": "function", "function": {"name": "f"}}]},
            "messages[0].tool_calls[0]",
        ),
        (
            {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": ["f"]}}]},
            "messages[0].tool_calls[0].function",
        ),
        (
            {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": 5}}]},
            "messages[0].tool_calls[0].function.arguments",
        ),
        ({"role": "tool", "tool_call_id": 5, "content": "x"}, "messages[0].tool_call_id"),
        ({"role": "tool", "tool_call_id": "c", "content": {"a": 1}}, "messages[0].content"),
        ({"role": "assistant", "function_call": {"name": 5}}, "messages[0].function_call"),
    ],
)
def test_mistyped_messages_are_rejected_with_their_path(message, param):
    with pytest.raises(TranslationError) as raised:
        translate([message, *HI])
    assert raised.value.param == param


def test_messages_not_a_list_is_rejected():
    for messages in ({"role": "user", "content": "hi"}, 5, None):
        with pytest.raises(TranslationError) as raised:
            chat_request_to_messages({"model": "claude", "messages": messages}, upstream_model=UPSTREAM)
        assert raised.value.param == "messages"
