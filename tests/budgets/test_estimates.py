"""What a request reserves before it is sent: everything the model reads counts, not only the messages' text."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from budgets import services
from budgets.estimates import IMAGE_TOKENS, estimated_input_tokens
from budgets.models import Scope
from tests.budgets.test_enforcement import CHAT, PROMPT, chat, price_at_1000_per_mtok

# 4,000 characters of tool-call arguments: 1,000 tokens' worth.
ARGUMENTS = json.dumps({"query": "x" * 3985})
SCHEMA = {
    "type": "object",
    "properties": {f"field_{i}": {"type": "string", "description": "y" * 60} for i in range(20)},
}
SCHEMA_CHARS = len(json.dumps(SCHEMA, separators=(",", ":")))


def tokens_of(chars: int) -> int:
    return -(-chars // 4)


def test_a_plain_message_counts_its_text_alone():
    assert estimated_input_tokens(CHAT) == tokens_of(len(PROMPT))


def test_an_earlier_tool_call_counts_its_arguments():
    body = CHAT | {
        "messages": [
            {"role": "user", "content": PROMPT},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": ARGUMENTS}}],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
        ]
    }
    assert estimated_input_tokens(body) >= tokens_of(len(ARGUMENTS) + len(PROMPT))


def test_openai_tools_count_their_whole_schema():
    tool = {"type": "function", "function": {"name": "lookup", "description": "Find it.", "parameters": SCHEMA}}
    assert estimated_input_tokens(CHAT | {"tools": [tool]}) >= tokens_of(SCHEMA_CHARS + len(PROMPT))


def test_anthropic_tools_and_tool_use_input_count_their_json():
    body = {
        "model": "claude-3-5-haiku-latest",
        "max_tokens": 20,
        "tools": [{"name": "lookup", "description": "Find it.", "input_schema": SCHEMA}],
        "messages": [
            {"role": "user", "content": PROMPT},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": SCHEMA}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]},
        ],
    }
    assert estimated_input_tokens(body) >= tokens_of(2 * SCHEMA_CHARS + len(PROMPT))


def test_an_output_schema_counts():
    schema = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}
    assert estimated_input_tokens(CHAT | {"response_format": schema}) >= tokens_of(SCHEMA_CHARS)
    responses = {"model": "gpt-4o-mini", "input": PROMPT, "text": {"format": {"type": "json_schema", "schema": SCHEMA}}}
    assert estimated_input_tokens(responses) >= tokens_of(SCHEMA_CHARS)


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "input_image", "image_url": "https://example.com/cat.png"},
    ],
)
def test_an_image_counts_as_a_large_one(part):
    body = CHAT | {"messages": [{"role": "user", "content": [{"type": "text", "text": PROMPT}, part]}]}
    assert estimated_input_tokens(body) == IMAGE_TOKENS + tokens_of(len(PROMPT))


def test_responses_function_call_items_and_their_output_count():
    body = {
        "model": "gpt-4o-mini",
        "input": [
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": ARGUMENTS},
            {"type": "function_call_output", "call_id": "c1", "output": "z" * 400},
        ],
    }
    assert estimated_input_tokens(body) >= tokens_of(len(ARGUMENTS) + 400)


def test_embedding_token_ids_count_one_token_each():
    assert estimated_input_tokens({"model": "text-embedding-3-small", "input": [[1, 2, 3, 4, 5]]}) == 5


@pytest.mark.django_db(transaction=True)
def test_a_token_limit_reserves_the_tool_call_arguments_a_request_carries(caller):
    services.rate_limit_set(scope=Scope.ORG, org=caller.org, tpm=100_000)
    body = CHAT | {
        "max_tokens": 0,
        "messages": [
            {"role": "user", "content": PROMPT},
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": ARGUMENTS}}],
            },
            {"role": "tool", "tool_call_id": "c", "content": "ok"},
        ],
    }
    response = chat(caller, body)
    assert response.status_code == 200, response.text
    assert int(response.headers["x-ratelimit-remaining-tokens"]) <= 100_000 - tokens_of(len(ARGUMENTS))


@pytest.mark.django_db(transaction=True)
def test_without_max_tokens_a_budget_reserves_the_most_output_of_the_deployment(caller, provider_server):
    from proxy.models import Deployment, ModelGroup

    price_at_1000_per_mtok("gpt-4o-mini")
    for name, most in (("short-answers", 100), ("long-answers", 8192)):
        group = ModelGroup.objects.create(name=name)
        Deployment.objects.create(
            group=group,
            name=name,
            provider="openai",
            base_url=provider_server.url + "/v1",
            upstream_model="gpt-4o-mini",
            max_output_tokens=most,
        )
    # At $1000 per million tokens each way, 6 input tokens and 100 output reserve $0.106, the default
    # 4,096 (the model route, which knows no limit) $4.10, and 8,192 $8.20.
    services.budget_set(scope=Scope.PROJECT, org=caller.org, project=caller.project, usd=Decimal("5"))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}]}

    assert chat(caller, body | {"model": "short-answers"}).status_code == 200
    assert chat(caller, body).status_code == 200
    refused = chat(caller, body | {"model": "long-answers"})
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"
