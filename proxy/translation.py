"""Translate OpenAI chat completions to Anthropic's Messages API and back.

Pure functions over decoded JSON: the Anthropic adapter calls them around its HTTP
exchange, so nothing here knows about Django, sockets or credentials.
"""

import time
import uuid
from typing import Any

import orjson

DEFAULT_MAX_TOKENS = 4096

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

TOOL_CHOICES = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}

# Anthropic error type -> (OpenAI error type, OpenAI error code).
ERROR_TYPES: dict[str, tuple[str, str | None]] = {
    "invalid_request_error": ("invalid_request_error", None),
    "request_too_large": ("invalid_request_error", "request_too_large"),
    "authentication_error": ("authentication_error", "invalid_api_key"),
    "permission_error": ("permission_error", None),
    "not_found_error": ("not_found_error", None),
    "billing_error": ("insufficient_quota", "insufficient_quota"),
    "rate_limit_error": ("rate_limit_error", "rate_limit_exceeded"),
    "api_error": ("server_error", None),
    "overloaded_error": ("server_error", "overloaded"),
    "timeout_error": ("server_error", "timeout"),
}

# For error bodies that are missing or unrecognised, the HTTP status is all we have.
STATUS_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class TranslationError(ValueError):
    """A chat request that cannot be expressed as an Anthropic request; `param` names the field."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


# Requests


def chat_request_to_messages(body: dict, *, upstream_model: str) -> dict:
    """Build an Anthropic Messages request from an OpenAI chat completion request."""
    n = body.get("n")
    if n is not None and n != 1:
        raise TranslationError("n > 1 is not supported by Anthropic models", param="n")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise TranslationError("messages must be a non-empty list", param="messages")

    system, turns = _conversation(messages)
    if not turns:
        raise TranslationError("messages must include a user or assistant message", param="messages")
    json_instruction = _json_instruction(body.get("response_format"))
    if json_instruction:
        system.append(json_instruction)

    request: dict[str, Any] = {"model": upstream_model, "max_tokens": _max_tokens(body), "messages": turns}
    if system:
        request["system"] = "\n\n".join(system)
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None:
            if not _is_number(value):
                raise TranslationError(f"{name} must be a number", param=name)
            request[name] = value
    stop_sequences = _stop_sequences(body.get("stop"))
    if stop_sequences:
        request["stop_sequences"] = stop_sequences
    if "stream" in body:
        stream = body["stream"]
        if stream is not None and not isinstance(stream, bool):
            raise TranslationError("stream must be a boolean", param="stream")
        request["stream"] = bool(stream)
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise TranslationError("user must be a string", param="user")
    if user:
        request["metadata"] = {"user_id": user}
    request.update(_tool_settings(body))
    return request


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _max_tokens(body: dict) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TranslationError(f"{name} must be a positive integer", param=name)
        return value
    return DEFAULT_MAX_TOKENS


def _conversation(messages: list) -> tuple[list[str], list[dict]]:
    """Split chat messages into system texts and alternating Anthropic turns."""
    system: list[str] = []
    turns: list[dict] = []
    legacy_call_id = None
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise TranslationError("each message must be an object", param=where)
        role = message.get("role")
        if not isinstance(role, str):
            raise TranslationError("each message needs a role", param=f"{where}.role")
        if role in ("system", "developer"):
            text = _plain_text(message.get("content"), where)
            if text:
                system.append(text)
            continue
        if role == "user":
            turn_role, blocks = "user", _content_blocks(message.get("content"), where)
        elif role == "assistant":
            turn_role, blocks = "assistant", _assistant_blocks(message, where)
            if isinstance(message.get("function_call"), dict):
                # Legacy function calls carry no id; the next `function` message answers this one.
                legacy_call_id = f"call_legacy_{i}"
                blocks.append(_tool_use_block(legacy_call_id, message["function_call"], f"{where}.function_call"))
        elif role == "tool":
            turn_role, blocks = "user", [_tool_result(message.get("tool_call_id"), message.get("content"), where)]
        elif role == "function":
            if legacy_call_id is None:
                raise TranslationError("function message without a preceding function_call", param=where)
            turn_role, blocks = "user", [_tool_result(legacy_call_id, message.get("content"), where)]
        else:
            raise TranslationError(f"unsupported message role {role!r}", param=f"{where}.role")
        if not blocks:
            continue
        # Anthropic requires user and assistant turns to alternate.
        if turns and turns[-1]["role"] == turn_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": turn_role, "content": blocks})
    for turn in turns:
        # Anthropic wants tool results first in a user turn; the sort is stable, so order is kept otherwise.
        turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    return system, turns


def _plain_text(content: Any, where: str) -> str:
    """Text of a string or a list of text parts, for fields Anthropic only takes as text."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise TranslationError("content must be a string or a list of parts", param=f"{where}.content")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            raise TranslationError("only text parts are supported here", param=f"{where}.content[{j}]")
        texts.append(_text(part, "text", f"{where}.content[{j}]"))
    return "\n\n".join(text for text in texts if text)


def _text(part: dict, name: str, where: str) -> str:
    text = part.get(name)
    if text is None:
        return ""
    if not isinstance(text, str):
        raise TranslationError(f"{name} must be a string", param=f"{where}.{name}")
    return text


def _content_blocks(content: Any, where: str) -> list[dict]:
    if content is None:
        return []
    if isinstance(content, str):
        return _text_block(content)
    if not isinstance(content, list):
        raise TranslationError("content must be a string or a list of parts", param=f"{where}.content")
    blocks = []
    for j, part in enumerate(content):
        part_where = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            cache_control = part.get("cache_control")
            if cache_control is not None and not isinstance(cache_control, dict):
                raise TranslationError("cache_control must be an object", param=f"{part_where}.cache_control")
            blocks.extend(_text_block(_text(part, "text", part_where), cache_control))
        elif kind == "refusal":
            blocks.extend(_text_block(_text(part, "refusal", part_where)))
        elif kind == "image_url":
            blocks.append(_image_block(part, part_where))
        else:
            raise TranslationError(f"unsupported content part type {kind!r}", param=f"{part_where}.type")
    return blocks


def _text_block(text: str, cache_control: dict | None = None) -> list[dict]:
    # Anthropic rejects empty and whitespace-only text blocks, and they carry no meaning.
    if not text.strip():
        return []
    block = {"type": "text", "text": text}
    if cache_control:
        block["cache_control"] = cache_control
    return [block]


def _image_block(part: dict, where: str) -> dict:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if isinstance(url, str) and url.startswith("data:"):
        header, comma, data = url.removeprefix("data:").partition(",")
        media_type, *flags = header.split(";")
        if comma and media_type and "base64" in flags:
            return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
        raise TranslationError("image data URLs must be base64 encoded with a media type", param=f"{where}.image_url")
    if isinstance(url, str) and url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise TranslationError("image_url must be an http(s) or data URL", param=f"{where}.image_url")


def _assistant_blocks(message: dict, where: str) -> list[dict]:
    blocks = _content_blocks(message.get("content"), where)
    tool_calls = message.get("tool_calls") or []
    if not isinstance(tool_calls, list):
        raise TranslationError("tool_calls must be a list", param=f"{where}.tool_calls")
    for j, call in enumerate(tool_calls):
        call_where = f"{where}.tool_calls[{j}]"
        call_id = call.get("id") if isinstance(call, dict) else None
        if not isinstance(call_id, str) or not call_id or call.get("type", "function") != "function":
            raise TranslationError("tool calls must be function calls with an id", param=call_where)
        blocks.append(_tool_use_block(call["id"], call.get("function"), f"{call_where}.function"))
    return blocks


def _tool_use_block(call_id: str, function: Any, where: str) -> dict:
    if not isinstance(function, dict) or not _is_name(function.get("name")):
        raise TranslationError("a function call needs a name", param=where)
    arguments = _parse_arguments(function.get("arguments"), f"{where}.arguments")
    return {"type": "tool_use", "id": call_id, "name": function["name"], "input": arguments}


def _parse_arguments(arguments: Any, where: str) -> dict:
    if isinstance(arguments, dict):
        return arguments
    # Models emit "" for functions without parameters.
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if not isinstance(arguments, str):
        raise TranslationError("function arguments must be a JSON string", param=where)
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError as exc:
        raise TranslationError(f"function arguments are not valid JSON: {exc}", param=where) from exc
    if not isinstance(parsed, dict):
        raise TranslationError("function arguments must be a JSON object", param=where)
    return parsed


def _tool_result(tool_call_id: Any, content: Any, where: str) -> dict:
    if not isinstance(tool_call_id, str) or not tool_call_id:
        raise TranslationError("tool messages need a tool_call_id", param=f"{where}.tool_call_id")
    block = {"type": "tool_result", "tool_use_id": tool_call_id}
    text = _plain_text(content, where)
    if text:
        block["content"] = text
    return block


def _json_instruction(response_format: Any) -> str | None:
    # Anthropic has no JSON mode. A system instruction keeps the answer in `message.content`, where the
    # client expects it; forcing a tool call would enforce the schema but change the response shape.
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise TranslationError("response_format must be an object", param="response_format")
    kind = response_format.get("type")
    if kind not in (None, "text", "json_object", "json_schema"):
        raise TranslationError(
            "response_format.type must be text, json_object or json_schema", param="response_format.type"
        )
    if kind == "json_object":
        return "Respond only with a single valid JSON object, with no other text before or after it."
    if kind == "json_schema":
        json_schema = response_format.get("json_schema")
        schema = json_schema.get("schema") if isinstance(json_schema, dict) else None
        if not isinstance(json_schema, dict) or not isinstance(schema, dict | None):
            raise TranslationError(
                "response_format.json_schema must be an object whose schema is an object",
                param="response_format.json_schema",
            )
        schema = schema or {}
        return (
            "Respond only with a single valid JSON object, with no other text before or after it. "
            f"It must conform to this JSON Schema: {orjson.dumps(schema).decode()}"
        )
    return None


def _stop_sequences(stop: Any) -> list[str]:
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(item, str) for item in stop):
        return stop
    raise TranslationError("stop must be a string or a list of strings", param="stop")


def _tool_settings(body: dict) -> dict:
    """The `tools` and `tool_choice` fields, also accepting the legacy `functions` and `function_call`."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if tools is None and body.get("functions") is not None:
        functions = body["functions"]
        tools = [{"type": "function", "function": f} for f in functions] if isinstance(functions, list) else functions
    if choice is None and body.get("function_call") is not None:
        call = body["function_call"]
        choice = {"type": "function", "function": call} if isinstance(call, dict) else call
    if not tools:
        # Without tools there is nothing to choose from, and Anthropic rejects a bare tool_choice.
        return {}
    settings: dict[str, Any] = {"tools": _tools(tools)}
    tool_choice = _tool_choice(choice)
    if body.get("parallel_tool_calls") is False and (tool_choice or {}).get("type") != "none":
        tool_choice = {**(tool_choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if tool_choice:
        settings["tool_choice"] = tool_choice
    return settings


def _tools(tools: Any) -> list[dict]:
    if not isinstance(tools, list):
        raise TranslationError("tools must be a list", param="tools")
    converted = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict) or not _is_name(function.get("name")):
            raise TranslationError("only function tools with a name are supported", param=f"tools[{i}]")
        description, parameters = function.get("description"), function.get("parameters")
        if not isinstance(description, str | None) or not isinstance(parameters, dict | None):
            raise TranslationError(
                "a tool's description must be a string, its parameters an object", param=f"tools[{i}]"
            )
        spec = {"name": function["name"]}
        if description:
            spec["description"] = description
        spec["input_schema"] = parameters or {"type": "object", "properties": {}}
        converted.append(spec)
    return converted


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _tool_choice(choice: Any) -> dict | None:
    if choice is None:
        return None
    if isinstance(choice, str) and choice in TOOL_CHOICES:
        return dict(TOOL_CHOICES[choice])
    function = choice.get("function") if isinstance(choice, dict) and choice.get("type") == "function" else None
    if isinstance(function, dict) and _is_name(function.get("name")):
        return {"type": "tool", "name": function["name"]}
    raise TranslationError("tool_choice must be auto, required, none or a named function", param="tool_choice")


# Responses


def messages_response_to_chat(response: dict, *, model: str) -> dict:
    """Build an OpenAI chat completion from an Anthropic Messages response; `model` is the client's name."""
    texts, tool_calls = [], []
    for block in response.get("content") or []:
        if block.get("type") == "text":
            texts.append(block.get("text") or "")
        elif block.get("type") == "tool_use":
            tool_calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {"name": block["name"], "arguments": orjson.dumps(block.get("input") or {}).decode()},
                }
            )
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not tool_calls else None,
        "refusal": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": f"chatcmpl-{response.get('id', '')}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(response.get("stop_reason"), "stop"),
            }
        ],
        "usage": _chat_usage(response.get("usage") or {}),
    }


def _chat_usage(usage: dict) -> dict:
    """OpenAI usage from Anthropic token counts; cached prompt tokens count as prompt tokens."""
    cached = usage.get("cache_read_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + (usage.get("cache_creation_input_tokens") or 0) + cached
    completion = usage.get("output_tokens") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def messages_error_to_chat(error_body: dict | None, status: int) -> dict:
    """Build an OpenAI error body from an Anthropic one (or from the status alone when the body is unusable)."""
    error = error_body.get("error", error_body) if isinstance(error_body, dict) else None
    if not isinstance(error, dict):
        error = {}
    anthropic_type = error.get("type")
    if anthropic_type not in ERROR_TYPES:
        anthropic_type = STATUS_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    openai_type, code = ERROR_TYPES[anthropic_type]
    message = error.get("message") or f"The upstream provider returned HTTP {status}"
    return {"error": {"message": message, "type": openai_type, "param": None, "code": code}}


# Streaming


class MessagesStreamTranslator:
    """Turn Anthropic stream events into chat.completion.chunk dicts, one event at a time.

    After an `error` event, `error` holds the event body, ready for `messages_error_to_chat`.
    """

    def __init__(self, *, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        # Replaced by the upstream message id at message_start, which Anthropic always sends first.
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.finish_reason: str | None = None
        self.error: dict | None = None
        self._token_counts: dict[str, int] = {}
        self._tool_indexes: dict[int, int] = {}  # content block index -> tool call index

    @property
    def usage(self) -> tuple[int, int] | None:
        """(input_tokens, output_tokens) seen so far; input includes cache reads and writes."""
        if not self._token_counts:
            return None
        usage = _chat_usage(self._token_counts)
        return usage["prompt_tokens"], usage["completion_tokens"]

    @property
    def provider_usage(self) -> dict | None:
        """Anthropic's usage object as counted so far, for the request log."""
        return dict(self._token_counts) or None

    def feed(self, event_type: str | None, data: dict) -> list[dict]:
        """Translate one event; `event_type` falls back to the event's own `type` field."""
        match event_type or data.get("type"):
            case "message_start":
                message = data.get("message") or {}
                self.id = f"chatcmpl-{message.get('id', '')}"
                self._count_tokens(message.get("usage"))
                return [self._chunk({"role": "assistant", "content": ""})]
            case "content_block_start":
                return self._block_start(data.get("index"), data.get("content_block") or {})
            case "content_block_delta":
                return self._block_delta(data.get("index"), data.get("delta") or {})
            case "message_delta":
                self._count_tokens(data.get("usage"))
                self.finish_reason = FINISH_REASONS.get((data.get("delta") or {}).get("stop_reason"), "stop")
                return [self._chunk({}, self.finish_reason)]
            case "message_stop":
                return [self._usage_chunk()] if self.include_usage else []
            case "error":
                self.error = data
                return []
            case _:
                # ping, content_block_stop and any event types added later carry nothing for the client.
                return []

    def _block_start(self, index: int | None, block: dict) -> list[dict]:
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if block.get("type") == "tool_use" and index is not None:
            tool_index = self._tool_indexes[index] = len(self._tool_indexes)
            call = {"index": tool_index, "id": block.get("id"), "type": "function"}
            call["function"] = {"name": block.get("name"), "arguments": ""}
            return [self._chunk({"tool_calls": [call]})]
        # Thinking blocks stay with the provider; chat completions have no place for them.
        return []

    def _block_delta(self, index: int | None, delta: dict) -> list[dict]:
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if delta.get("type") == "input_json_delta" and delta.get("partial_json") and index in self._tool_indexes:
            call = {"index": self._tool_indexes[index], "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _count_tokens(self, usage: dict | None) -> None:
        # Counts in message_delta are cumulative, and fields may be null until known.
        for name, value in (usage or {}).items():
            if isinstance(value, int):
                self._token_counts[name] = value

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> dict:
        chunk = self._envelope([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}])
        if self.include_usage:
            # OpenAI sends `usage: null` on every chunk but the last when usage was requested.
            chunk["usage"] = None
        return chunk

    def _usage_chunk(self) -> dict:
        return {**self._envelope([]), "usage": _chat_usage(self._token_counts)}

    def _envelope(self, choices: list) -> dict:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
