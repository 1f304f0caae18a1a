"""Turning captured SSE events back into a response, for the request log."""

from __future__ import annotations

import contextlib

import orjson


def parse_sse_event(event: bytes) -> tuple[str | None, bytes]:
    """The event name and data payload of one raw SSE event block."""
    name = None
    data: list[bytes] = []
    for line in event.split(b"\n"):
        line = line.rstrip(b"\r")
        if line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
    return name, b"\n".join(data)


def decoded_events(events: list[bytes]) -> list[dict]:
    decoded = []
    for event in events:
        _, data = parse_sse_event(event)
        if not data or data == b"[DONE]":
            continue
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            payload = {"raw": data.decode("utf-8", "replace")}
        if isinstance(payload, dict):
            decoded.append(payload)
    return decoded


def accumulate_stream(dialect: str | None, events: list[bytes]):
    """(streamed_data, accumulated response, the provider's usage object or None, provider request id)."""
    chunks = decoded_events(events)
    if dialect == "anthropic":
        response, usage = _accumulate_anthropic(chunks)
    else:
        response, usage = _accumulate_openai(chunks)
    provider_request_id = response.get("id") if isinstance(response.get("id"), str) else None
    return chunks, response, usage, provider_request_id


def accumulated_response(dialect: str | None, chunks: list[dict]) -> dict:
    """The response a stream's decoded chunks (a record's `streamed_data`) add up to."""
    chunks = [chunk for chunk in chunks if isinstance(chunk, dict)]
    response, _ = _accumulate_anthropic(chunks) if dialect == "anthropic" else _accumulate_openai(chunks)
    return response


def _accumulate_openai(chunks: list[dict]):
    response: dict = {}
    choices: dict[int, dict] = {}
    usage = None
    for chunk in chunks:
        if chunk.get("type") == "response.completed" and isinstance(chunk.get("response"), dict):
            # The Responses API sends the whole final response as its last event.
            response = dict(chunk["response"])
            usage = response.get("usage") if isinstance(response.get("usage"), dict) else None
            continue
        for key in ("id", "model", "created", "system_fingerprint"):
            if key in chunk and key not in response:
                response[key] = chunk[key]
        if isinstance(chunk.get("usage"), dict):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            _merge_choice(choices.setdefault(choice.get("index", 0), {"index": choice.get("index", 0)}), choice)
    if choices:
        response["choices"] = [choices[index] for index in sorted(choices)]
    if usage:
        response["usage"] = usage
    return response, usage


def _merge_choice(target: dict, choice: dict) -> None:
    if choice.get("finish_reason"):
        target["finish_reason"] = choice["finish_reason"]
    if "text" in choice:  # legacy completions
        target["text"] = target.get("text", "") + (choice.get("text") or "")
        return
    delta = choice.get("delta") or {}
    merged = target.setdefault("delta", {})
    if delta.get("role"):
        merged["role"] = delta["role"]
    if delta.get("content"):
        merged["content"] = merged.get("content", "") + delta["content"]
    for call in delta.get("tool_calls") or ():
        calls = merged.setdefault("tool_calls", [])
        index = call.get("index", len(calls))
        while len(calls) <= index:
            calls.append({"index": len(calls), "type": "function", "function": {"name": "", "arguments": ""}})
        slot = calls[index]
        if call.get("id"):
            slot["id"] = call["id"]
        function = call.get("function") or {}
        slot["function"]["name"] += function.get("name") or ""
        slot["function"]["arguments"] += function.get("arguments") or ""


def _accumulate_anthropic(chunks: list[dict]):
    response: dict = {}
    blocks: dict[int, dict] = {}
    usage: dict = {}
    for chunk in chunks:
        kind = chunk.get("type")
        if kind == "message_start":
            message = chunk.get("message") or {}
            response = {key: value for key, value in message.items() if key not in ("content", "usage")}
            _merge_anthropic_usage(usage, message.get("usage"))
        elif kind == "content_block_start":
            blocks[chunk.get("index", 0)] = dict(chunk.get("content_block") or {})
        elif kind == "content_block_delta":
            block = blocks.setdefault(chunk.get("index", 0), {"type": "text", "text": ""})
            delta = chunk.get("delta") or {}
            if delta.get("type") == "text_delta":
                block["text"] = block.get("text", "") + delta.get("text", "")
            elif delta.get("type") == "input_json_delta":
                block["partial_json"] = block.get("partial_json", "") + delta.get("partial_json", "")
            elif delta.get("type") == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
        elif kind == "message_delta":
            response.update(chunk.get("delta") or {})
            _merge_anthropic_usage(usage, chunk.get("usage"))
    for block in blocks.values():
        if "partial_json" in block:
            with contextlib.suppress(orjson.JSONDecodeError):
                block["input"] = orjson.loads(block.pop("partial_json") or b"{}")
    if blocks:
        response["content"] = [blocks[index] for index in sorted(blocks)]
    if usage:
        response["usage"] = usage
    # All zeros is no count at all: a stream translated from a chat stream opens with zeros and gets its
    # counts at the end, so one cut short before them is estimated rather than billed as free.
    counted = any(isinstance(value, int) and value > 0 for value in usage.values())
    return response, usage if counted else None


def _merge_anthropic_usage(usage: dict, update) -> None:
    # message_delta counts are cumulative and may be null until known: a number replaces, a null keeps.
    if isinstance(update, dict):
        usage.update({key: value for key, value in update.items() if value is not None})
