"""Translation cost: Messages -> chat (requests, answers, streams) beside the chat -> Messages direction.

    python bench/messages_translation_bench.py [--rounds 2000]

A request the size Claude Code sends (a long system prompt, 20 tools, 40 turns of tool calls and
results), an answer with text and a tool call, and a stream of 500 text chunks plus a tool call, each
translated `--rounds` times; printed as microseconds per call, beside the reverse translation of the
equivalent chat request and Anthropic stream, which the gateway already runs for chat clients.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

from proxy.messages_to_chat import (
    ChatStreamTranslator,
    chat_response_to_messages,
    messages_request_to_chat,
)
from proxy.translation import (
    MessagesStreamTranslator,
    chat_request_to_messages,
    messages_response_to_chat,
)

SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}, "limit": {"type": "integer"}}}


def messages_request() -> dict:
    tools = [{"name": f"tool_{i}", "description": "Does a thing. " * 20, "input_schema": SCHEMA} for i in range(20)]
    messages: list[dict] = [{"role": "user", "content": [{"type": "text", "text": "Fix the failing test. " * 30}]}]
    for i in range(20):
        call = {"type": "tool_use", "id": f"toolu_{i}", "name": "tool_1", "input": {"path": f"src/{i}.py"}}
        messages.append({"role": "assistant", "content": [{"type": "text", "text": "Reading it."}, call]})
        result = {"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": "line of code\n" * 80}
        messages.append({"role": "user", "content": [result]})
    system = [{"type": "text", "text": "You are a coding agent. " * 400, "cache_control": {"type": "ephemeral"}}]
    return {"model": "gpt-4.1", "max_tokens": 8192, "system": system, "messages": messages, "tools": tools}


def chat_completion() -> dict:
    call = {"id": "call_1", "type": "function", "function": {"name": "tool_1", "arguments": '{"path": "a.py"}'}}
    message = {"role": "assistant", "content": "Let me look. " * 40, "tool_calls": [call]}
    return {
        "id": "chatcmpl-1",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
        "usage": {
            "prompt_tokens": 30_000,
            "completion_tokens": 400,
            "prompt_tokens_details": {"cached_tokens": 28_000},
        },
    }


def chat_chunks() -> list[dict]:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4.1"}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"content": f"word{i} "}}]} for i in range(500)]
    opening = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "tool_1", "arguments": ""}}
    chunks.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": [opening]}}]})
    for piece in ('{"path": ', '"a.py"}'):
        call = {"index": 0, "function": {"arguments": piece}}
        chunks.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]})
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    chunks.append({**base, "choices": [], "usage": {"prompt_tokens": 30_000, "completion_tokens": 503}})
    return chunks


def anthropic_events() -> list[tuple[str, dict]]:
    events = [("message_start", {"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 1}}})]
    events.append(("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}))
    events += [
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": f"word{i} "}}) for i in range(500)
    ]
    events.append(("content_block_stop", {"index": 0}))
    events.append(("content_block_start", {"index": 1, "content_block": {"type": "tool_use", "id": "t", "name": "f"}}))
    events += [
        ("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": piece}})
        for piece in ('{"path": ', '"a.py"}')
    ]
    events.append(("content_block_stop", {"index": 1}))
    events.append(("message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 503}}))
    events.append(("message_stop", {}))
    return events


def as_chat_request(body: dict) -> dict:
    """The same conversation as a chat client would send it, for the reverse translation."""
    return messages_request_to_chat(body, upstream_model="claude-sonnet-4-5") | {"model": "claude-sonnet-4-5"}


def per_call_us(function, rounds: int) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        function()
    return (time.perf_counter() - started) / rounds * 1_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    rounds = parser.parse_args().rounds
    body, completion, chunks, events = messages_request(), chat_completion(), chat_chunks(), anthropic_events()
    chat_body = as_chat_request(body)
    anthropic_answer = chat_response_to_messages(completion, model="claude")

    def stream_to_anthropic():
        translator = ChatStreamTranslator(model="gpt-4.1")
        for chunk in chunks:
            translator.feed(chunk)
        translator.end()

    def stream_to_chat():
        translator = MessagesStreamTranslator(model="claude", include_usage=True)
        for name, data in events:
            translator.feed(name, data)

    stream_rounds = max(rounds // 10, 1)
    rows = [
        (
            "request (Claude Code sized)",
            per_call_us(lambda: messages_request_to_chat(body, upstream_model="gpt-4.1"), rounds),
            per_call_us(lambda: chat_request_to_messages(chat_body, upstream_model="claude"), rounds),
        ),
        (
            "answer (text + tool call)",
            per_call_us(lambda: chat_response_to_messages(completion, model="gpt-4.1"), rounds),
            per_call_us(lambda: messages_response_to_chat(anthropic_answer, model="claude"), rounds),
        ),
        (
            "stream (500 text chunks + tool call)",
            per_call_us(stream_to_anthropic, stream_rounds),
            per_call_us(stream_to_chat, stream_rounds),
        ),
    ]
    print(f"{'translation':40} {'messages->chat µs':>18} {'chat->messages µs':>18}")
    for name, forward, reverse in rows:
        print(f"{name:40} {forward:18.1f} {reverse:18.1f}")
    print(f"per stream chunk: {rows[2][1] / len(chunks):.2f} µs (messages->chat)")


if __name__ == "__main__":
    main()
