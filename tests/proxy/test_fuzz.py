"""Property tests: arbitrary and mistyped bodies never make the gateway fail.

Hypothesis generates JSON-ish bodies and structurally valid but mistyped bodies for every route,
sends them to the live gateway, and checks that no answer is a 5xx of the gateway's own (a 502 or
504 about the provider is legitimate), that every answer has an x-request-id, and that every error
is in the route's own format. The translations between the two protocols are fuzzed directly too.

The run counts its requests and 5xx answers and writes "fuzz: N requests, M 5xx" to
var/test-artifacts/fuzz-summary.txt (and stdout).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import anthropic
import httpx
import orjson
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.messages_to_chat import (
    ChatStreamTranslator,
    UnreadableResponse,
    chat_error_to_messages,
    chat_response_to_messages,
    messages_request_to_chat,
)
from proxy.translation import TranslationError, chat_request_to_messages, messages_error_to_chat
from telemetry.streams import accumulate_stream

pytestmark = pytest.mark.django_db(transaction=True)

# Bounds the whole file to about a minute on a busy machine.
HTTP_EXAMPLES = 150
TRANSLATION_EXAMPLES = 200
SUMMARY = Path(__file__).resolve().parents[2] / "var" / "test-artifacts" / "fuzz-summary.txt"
# 5xx answers that speak of the provider, not of the gateway.
UPSTREAM_CODES = {"upstream_timeout", "upstream_unreachable", "upstream_connection_error", "bad_upstream_response"}

FUZZ = settings(
    max_examples=HTTP_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

counts: Counter = Counter()
# The Anthropic SDK's own union of stream event types: what a translated stream must be made of.
STREAM_EVENT = pydantic.TypeAdapter(anthropic.types.RawMessageStreamEvent)


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    line = f"fuzz: {counts['requests']} requests, {counts['5xx']} 5xx"
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(line + "\n")
    print("\n" + line)


@pytest.fixture
def client(caller):
    with httpx.Client(base_url=caller.gateway_url, timeout=30) as session:
        yield session


# --- Strategies ----------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def either(valid):
    """Mostly the valid shape, sometimes any JSON value at all: most bodies then get far enough to mistype one field."""
    return st.one_of(valid, valid, valid, valid, valid, json_values)


text_part = st.fixed_dictionaries({"type": st.just("text"), "text": either(st.text(max_size=20))})
image_part = st.fixed_dictionaries(
    {
        "type": st.just("image_url"),
        "image_url": either(st.fixed_dictionaries({"url": either(st.just("https://x/a.png"))})),
    }
)
content = either(st.text(max_size=20) | st.lists(either(text_part | image_part), max_size=3))
tool_call = st.fixed_dictionaries(
    {
        "id": either(st.just("call_1")),
        "type": either(st.just("function")),
        "function": either(st.fixed_dictionaries({"name": either(st.just("f")), "arguments": either(st.just("{}"))})),
    }
)
chat_message = either(
    st.fixed_dictionaries({"role": either(st.sampled_from(["user", "system", "developer"])), "content": content})
    | st.fixed_dictionaries(
        {"role": st.just("assistant"), "content": content},
        optional={"tool_calls": either(st.lists(tool_call, max_size=2))},
    )
    | st.fixed_dictionaries({"role": st.just("tool"), "tool_call_id": either(st.just("call_1")), "content": content})
)
function_tool = st.fixed_dictionaries(
    {
        "type": either(st.just("function")),
        "function": either(
            st.fixed_dictionaries(
                {"name": either(st.just("get_weather"))},
                optional={"description": json_values, "parameters": either(st.just({"type": "object"}))},
            )
        ),
    }
)
chat_body = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["gpt-4o-mini", "claude-3-5-haiku-latest"]),
        "messages": either(st.lists(chat_message, min_size=1, max_size=3)),
    },
    optional={
        "max_tokens": either(st.integers(1, 100)),
        "max_completion_tokens": either(st.integers(1, 100)),
        "temperature": either(st.floats(0, 2)),
        "top_p": json_values,
        "n": json_values,
        "stop": either(st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=2)),
        "stream": either(st.booleans()),
        "stream_options": json_values,
        "user": json_values,
        "tools": either(st.lists(function_tool, max_size=2)),
        "tool_choice": either(st.sampled_from(["auto", "none", "required"])),
        "parallel_tool_calls": json_values,
        "functions": json_values,
        "function_call": json_values,
        "response_format": either(
            st.fixed_dictionaries(
                {"type": either(st.sampled_from(["text", "json_object", "json_schema"]))},
                optional={"json_schema": either(st.fixed_dictionaries({"name": st.just("s"), "schema": json_values}))},
            )
        ),
    },
)
messages_body = st.fixed_dictionaries(
    {
        "model": st.just("claude-3-5-haiku-latest"),
        "max_tokens": either(st.integers(1, 100)),
        "messages": either(st.lists(chat_message, max_size=3)),
    },
    optional={
        "system": either(st.text(max_size=10)),
        "stream": either(st.booleans()),
        "temperature": json_values,
        "tools": json_values,
        "tool_choice": json_values,
        "stop_sequences": json_values,
        "metadata": json_values,
    },
)
# Anthropic-shaped bodies, for /v1/messages served by an OpenAI model.
anthropic_source = either(
    st.fixed_dictionaries(
        {"type": st.just("base64"), "media_type": either(st.just("image/png")), "data": either(st.just("AAAA"))}
    )
    | st.fixed_dictionaries({"type": st.just("url"), "url": either(st.just("https://x/a.png"))})
    | st.fixed_dictionaries({"type": st.just("text"), "media_type": st.just("text/plain"), "data": either(st.text())})
)
anthropic_text = st.fixed_dictionaries({"type": st.just("text"), "text": either(st.text(max_size=20))})
anthropic_image = st.fixed_dictionaries({"type": st.sampled_from(["image", "document"]), "source": anthropic_source})
anthropic_tool_use = st.fixed_dictionaries(
    {
        "type": st.just("tool_use"),
        "id": either(st.just("toolu_1")),
        "name": either(st.just("get_weather")),
        "input": either(st.dictionaries(st.text(max_size=5), scalars, max_size=2)),
    }
)
anthropic_tool_result = st.fixed_dictionaries(
    {"type": st.just("tool_result"), "tool_use_id": either(st.just("toolu_1"))},
    optional={
        "content": either(st.text(max_size=10) | st.lists(either(anthropic_text | anthropic_image), max_size=2)),
        "is_error": either(st.booleans()),
    },
)
anthropic_thinking = st.fixed_dictionaries(
    {"type": st.sampled_from(["thinking", "redacted_thinking"]), "thinking": json_values}
)
anthropic_blocks = either(
    st.text(max_size=20)
    | st.lists(
        either(anthropic_text | anthropic_image | anthropic_tool_use | anthropic_tool_result | anthropic_thinking),
        max_size=3,
    )
)
anthropic_message = either(
    st.fixed_dictionaries({"role": either(st.sampled_from(["user", "assistant"])), "content": anthropic_blocks})
)
anthropic_tool = either(
    st.fixed_dictionaries(
        {"name": either(st.just("get_weather")), "input_schema": either(st.just({"type": "object"}))},
        optional={"type": either(st.just("custom")), "description": either(st.text(max_size=5))},
    )
)
anthropic_tool_choice = either(
    st.fixed_dictionaries(
        {"type": either(st.sampled_from(["auto", "any", "none", "tool"]))},
        optional={"name": either(st.just("get_weather")), "disable_parallel_tool_use": either(st.booleans())},
    )
)
anthropic_body = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["gpt-4o-mini", "azure/gpt-4o", "groq/llama-3.3-70b"]),
        "max_tokens": either(st.integers(1, 100)),
        "messages": either(st.lists(anthropic_message, min_size=1, max_size=3)),
    },
    optional={
        "system": either(st.text(max_size=10) | st.lists(either(anthropic_text), max_size=2)),
        "stream": either(st.booleans()),
        "temperature": either(st.floats(0, 1)),
        "top_p": either(st.floats(0, 1)),
        "stop_sequences": either(st.lists(st.text(max_size=5), max_size=2)),
        "metadata": either(st.fixed_dictionaries({"user_id": either(st.text(max_size=5))})),
        "tools": either(st.lists(anthropic_tool, max_size=2)),
        "tool_choice": anthropic_tool_choice,
        "thinking": json_values,
        "output_config": either(
            st.fixed_dictionaries(
                {"format": either(st.fixed_dictionaries({"type": st.just("json_schema"), "schema": json_values}))}
            )
        ),
    },
)
# Well-formed Anthropic conversations with tools, whose only freedom is in the values: each must translate.
valid_text = st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=10)})
valid_tool_use = st.fixed_dictionaries(
    {
        "type": st.just("tool_use"),
        "id": st.text(min_size=1, max_size=6),
        "name": st.text(min_size=1, max_size=6),
        "input": st.dictionaries(st.text(max_size=4), json_values, max_size=2),
    }
)
valid_tool_result = st.fixed_dictionaries(
    {"type": st.just("tool_result"), "tool_use_id": st.text(min_size=1, max_size=6)},
    optional={
        "content": st.text(max_size=10) | st.lists(valid_text, max_size=2),
        "is_error": st.booleans(),
    },
)
valid_turns = st.lists(
    st.tuples(
        st.lists(valid_tool_result | valid_text, min_size=1, max_size=3),
        st.lists(valid_tool_use | valid_text, min_size=1, max_size=3),
    ),
    min_size=1,
    max_size=3,
).map(
    lambda pairs: [
        message
        for user, assistant in pairs
        for message in ({"role": "user", "content": user}, {"role": "assistant", "content": assistant})
    ]
)
# OpenAI-shaped answers, for the way back.
chat_tool_delta = st.fixed_dictionaries(
    {"index": either(st.integers(0, 2))},
    optional={
        "id": either(st.sampled_from(["call_a", "call_b"])),
        "type": st.just("function"),
        "function": either(
            st.fixed_dictionaries(
                {}, optional={"name": either(st.just("get_weather")), "arguments": either(st.text(max_size=6))}
            )
        ),
    },
)
chat_delta = either(
    st.fixed_dictionaries(
        {},
        optional={
            "role": st.just("assistant"),
            "content": either(st.text(max_size=6) | st.none()),
            "refusal": either(st.none() | st.text(max_size=4)),
            "reasoning_content": either(st.text(max_size=4)),
            "tool_calls": either(st.lists(chat_tool_delta, max_size=2)),
        },
    )
)
chat_usage = either(
    st.fixed_dictionaries(
        {"prompt_tokens": either(st.integers(0, 10**6)), "completion_tokens": either(st.integers(0, 10**6))},
        optional={
            "prompt_tokens_details": either(st.fixed_dictionaries({"cached_tokens": either(st.integers(0, 10**6))}))
        },
    )
)
finish_reasons = either(st.sampled_from([None, "stop", "length", "tool_calls", "content_filter"]))
chat_chunk = either(
    st.fixed_dictionaries(
        {
            "id": either(st.just("chatcmpl-1")),
            "choices": either(
                st.lists(
                    either(
                        st.fixed_dictionaries(
                            {"index": either(st.just(0)), "delta": chat_delta, "finish_reason": finish_reasons}
                        )
                    ),
                    max_size=2,
                )
            ),
        },
        optional={
            "usage": chat_usage,
            "error": either(st.fixed_dictionaries({"message": either(st.text(max_size=5))})),
        },
    )
)
chat_completion = either(
    st.fixed_dictionaries(
        {
            "id": either(st.just("chatcmpl-1")),
            "choices": either(
                st.lists(
                    either(
                        st.fixed_dictionaries(
                            {
                                "message": either(
                                    st.fixed_dictionaries(
                                        {"role": st.just("assistant"), "content": either(st.text(max_size=6))},
                                        optional={
                                            "tool_calls": either(
                                                st.lists(
                                                    either(
                                                        st.fixed_dictionaries(
                                                            {
                                                                "id": either(st.just("call_1")),
                                                                "function": either(
                                                                    st.fixed_dictionaries(
                                                                        {
                                                                            "name": either(st.just("f")),
                                                                            "arguments": either(st.text(max_size=8)),
                                                                        }
                                                                    )
                                                                ),
                                                            }
                                                        )
                                                    ),
                                                    max_size=2,
                                                )
                                            ),
                                            "refusal": either(st.none() | st.text(max_size=4)),
                                        },
                                    )
                                ),
                                "finish_reason": finish_reasons,
                            }
                        )
                    ),
                    max_size=2,
                )
            ),
        },
        optional={"usage": chat_usage},
    )
)
embeddings_body = st.fixed_dictionaries(
    {"model": st.just("text-embedding-3-small"), "input": either(st.text(max_size=10) | st.lists(st.text(max_size=5)))},
    optional={"dimensions": json_values, "encoding_format": json_values, "user": json_values},
)
completions_body = st.fixed_dictionaries(
    {"model": st.just("gpt-4o-mini"), "prompt": either(st.text(max_size=10))},
    optional={"max_tokens": json_values, "n": json_values, "stream": either(st.booleans()), "stop": json_values},
)
responses_body = st.fixed_dictionaries(
    {"model": st.just("gpt-4o-mini"), "input": either(st.text(max_size=10))},
    optional={"instructions": json_values, "stream": either(st.booleans()), "text": json_values, "tools": json_values},
)
# HTTP clients refuse to send a value with leading or trailing blanks, so none is generated.
header_text = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20).filter(
    lambda value: value == value.strip(" \t")
)
odd_headers = st.dictionaries(
    st.sampled_from(
        ["x-user-id", "x-thread-id", "x-experiment-id", "x-project-id", "openai-beta", "anthropic-version"]
    ),
    header_text,
    max_size=2,
)
ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages"]


# --- Checks --------------------------------------------------------------------------------------


def send(client, caller, path: str, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    sent = {"content-type": "application/json"}
    sent["x-api-key" if path == "/v1/messages" else "authorization"] = (
        caller.key if path == "/v1/messages" else f"Bearer {caller.key}"
    )
    for name, value in (headers or {}).items():
        sent[name] = value.encode()
    response = client.post(path, content=content, headers=sent)
    counts["requests"] += 1
    if response.status_code >= 500:
        counts["5xx"] += 1
    return response


def assert_well_formed(response: httpx.Response, path: str) -> None:
    assert response.headers.get("x-request-id"), (response.status_code, response.text[:500])
    if response.status_code < 400:
        return
    body = response.json()
    if path == "/v1/messages":
        assert body["type"] == "error" and body["error"]["type"] and body["error"]["message"], body
    else:
        assert isinstance(body["error"], dict) and body["error"]["message"], body
    if response.status_code >= 500:
        code = body["error"].get("code") if path != "/v1/messages" else None
        assert response.status_code in (502, 504), body
        assert path == "/v1/messages" or code in UPSTREAM_CODES, body


# --- Through the live gateway --------------------------------------------------------------------


@FUZZ
@given(path=st.sampled_from(ROUTES), body=json_values)
def test_any_json_body_on_any_route(client, caller, path, body):
    response = send(client, caller, path, orjson.dumps(body))
    assert_well_formed(response, path)
    assert response.status_code != 200 or isinstance(body, dict)


@FUZZ
@given(path=st.sampled_from(ROUTES), content=st.binary(max_size=64))
def test_any_bytes_on_any_route(client, caller, path, content):
    response = send(client, caller, path, content)
    assert_well_formed(response, path)


@FUZZ
@given(body=chat_body, headers=odd_headers)
def test_mistyped_chat_bodies(client, caller, body, headers):
    response = send(client, caller, "/v1/chat/completions", orjson.dumps(body), headers)
    assert_well_formed(response, "/v1/chat/completions")


@FUZZ
@given(body=messages_body)
def test_mistyped_messages_bodies(client, caller, body):
    response = send(client, caller, "/v1/messages", orjson.dumps(body))
    assert_well_formed(response, "/v1/messages")


@FUZZ
@given(body=anthropic_body)
def test_mistyped_messages_bodies_for_openai_models(client, caller, body):
    response = send(client, caller, "/v1/messages", orjson.dumps(body))
    assert_well_formed(response, "/v1/messages")
    if response.status_code == 200 and body.get("stream") is True:
        assert response.text.startswith("event: message_start\n")
        assert response.text.endswith('event: message_stop\ndata: {"type":"message_stop"}\n\n')
    elif response.status_code == 200:
        assert anthropic.types.Message.model_validate(response.json()).type == "message"


@FUZZ
@given(
    case=st.one_of(
        st.tuples(st.just("/v1/embeddings"), embeddings_body),
        st.tuples(st.just("/v1/completions"), completions_body),
        st.tuples(st.just("/v1/responses"), responses_body),
    )
)
def test_mistyped_embeddings_completions_and_responses_bodies(client, caller, case):
    path, body = case
    response = send(client, caller, path, orjson.dumps(body))
    assert_well_formed(response, path)


# --- The translation on its own ------------------------------------------------------------------


@settings(max_examples=TRANSLATION_EXAMPLES, deadline=None, database=None)
@given(body=chat_body)
def test_translation_either_translates_or_names_the_field(body):
    try:
        translated = chat_request_to_messages(body, upstream_model="claude-3-5-haiku-latest")
    except TranslationError as exc:
        assert exc.param
        return
    orjson.dumps(translated)
    assert isinstance(translated["max_tokens"], int) and translated["messages"]


@settings(max_examples=TRANSLATION_EXAMPLES, deadline=None, database=None)
@given(body=json_values, status=st.integers(400, 599))
def test_any_anthropic_error_body_becomes_an_openai_error(body, status):
    error = messages_error_to_chat(body if isinstance(body, dict) else None, status)["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)


@settings(max_examples=TRANSLATION_EXAMPLES, deadline=None, database=None)
@given(body=anthropic_body)
def test_messages_translation_either_translates_or_names_the_field(body):
    try:
        translated = messages_request_to_chat(body, upstream_model="gpt-4o-mini")
    except TranslationError as exc:
        assert exc.param
        return
    orjson.dumps(translated)
    assert isinstance(translated["max_tokens"], int) and isinstance(translated["messages"], list)
    roles = {message["role"] for message in translated["messages"]}
    assert roles <= {"system", "user", "assistant", "tool"}


@settings(max_examples=TRANSLATION_EXAMPLES, deadline=None, database=None)
@given(messages=valid_turns, system=st.text(max_size=5) | st.lists(valid_text, max_size=2))
def test_well_formed_tool_conversations_always_translate(messages, system):
    body = {"model": "gpt-4o-mini", "max_tokens": 10, "messages": messages, "system": system}
    translated = messages_request_to_chat(body, upstream_model="gpt-4o-mini")["messages"]
    blocks = [block for message in messages for block in message["content"]]
    assert sum(message["role"] == "tool" for message in translated) == sum(
        block["type"] == "tool_result" for block in blocks
    )
    calls = [call for message in translated for call in message.get("tool_calls", ())]
    assert [call["id"] for call in calls] == [block["id"] for block in blocks if block["type"] == "tool_use"]
    assert all(orjson.loads(call["function"]["arguments"]) is not None for call in calls)


@settings(max_examples=TRANSLATION_EXAMPLES, deadline=None, database=None)
@given(response=chat_completion)
def test_any_chat_completion_becomes_a_message_or_is_unreadable(response):
    if not isinstance(response, dict):
        return
    try:
        message = chat_response_to_messages(response, model="gpt-4o-mini", stop=["###"])
    except UnreadableResponse:
        return
    orjson.dumps(message)
    anthropic.types.Message.model_validate(message)
    assert message["type"] == "message" and message["id"].startswith("msg_")
    assert message["stop_reason"] in ("end_turn", "max_tokens", "tool_use", "refusal", "stop_sequence")
    for block in message["content"]:
        assert block["type"] in ("text", "tool_use")
        assert block["type"] == "text" or isinstance(block["input"], dict)
    assert all(isinstance(count, int) and count >= 0 for count in message["usage"].values())


@settings(max_examples=TRANSLATION_EXAMPLES, deadline=None, database=None)
@given(chunks=st.lists(chat_chunk, max_size=8), thinking=st.booleans())
def test_any_chunk_sequence_makes_a_well_ordered_anthropic_stream(chunks, thinking):
    translator = ChatStreamTranslator(model="gpt-4o-mini", thinking=thinking)
    events = []
    for chunk in chunks:
        if isinstance(chunk, dict):
            events.extend(translator.feed(chunk))
        if translator.error is not None:
            assert translator.error["type"] == "error" and translator.error["error"]["message"]
            return
    events.extend(translator.end())
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("message_start") == names.count("message_stop") == 1
    started = [data["index"] for name, data in events if name == "content_block_start"]
    stopped = [data["index"] for name, data in events if name == "content_block_stop"]
    assert started == stopped == list(range(len(started)))
    for position, (name, data) in enumerate(events):
        if name == "content_block_delta":
            assert data["index"] in started[: names[:position].count("content_block_start")]
    assert [STREAM_EVENT.validate_python(data).type for _, data in events] == names
    raw = [b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) for name, data in events]
    _, response, _, _ = accumulate_stream("anthropic", raw)
    assert response["stop_reason"] == events[-2][1]["delta"]["stop_reason"]


@settings(max_examples=TRANSLATION_EXAMPLES, deadline=None, database=None)
@given(body=json_values, status=st.integers(400, 599))
def test_any_openai_error_body_becomes_an_anthropic_error(body, status):
    error = chat_error_to_messages(body, status)
    assert error["type"] == "error"
    assert isinstance(error["error"]["message"], str) and error["error"]["message"]
    assert error["error"]["type"].endswith("_error") or error["error"]["type"] == "request_too_large"
