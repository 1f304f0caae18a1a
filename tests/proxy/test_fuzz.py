"""Property tests: arbitrary and mistyped bodies never make the gateway fail.

Hypothesis generates JSON-ish bodies and structurally valid but mistyped bodies for every route,
sends them to the live gateway, and checks that no answer is a 5xx of the gateway's own (a 502 or
504 about the provider is legitimate), that every answer has an x-request-id, and that every error
is in the route's own format. The chat-to-Anthropic translation is fuzzed directly too.

The run counts its requests and 5xx answers and writes "fuzz: N requests, M 5xx" to
var/test-artifacts/fuzz-summary.txt (and stdout).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.translation import TranslationError, chat_request_to_messages, messages_error_to_chat

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
