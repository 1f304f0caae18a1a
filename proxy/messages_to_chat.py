"""Translate Anthropic Messages requests to OpenAI chat completions, and the answers back.

The reverse of proxy/translation.py: an Anthropic client (the Anthropic SDK, Claude Code) calls
/v1/messages with a model served by an OpenAI-compatible provider. Pure functions over decoded JSON;
every field read is type-checked, and a request that cannot be expressed raises TranslationError
naming the field, in Anthropic's dotted path style (`messages.0.content.1.source`).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

# The Anthropic error type for an HTTP status (shared with the chat-to-Messages direction); statuses
# not listed fall back by class (4xx, 5xx).
from proxy.translation import STATUS_ERROR_TYPES, TranslationError

# Fields with no chat-completions counterpart that change what the model may do: refused, not dropped.
REFUSED_FIELDS = {
    "mcp_servers": "MCP servers are run by Anthropic's API",
    "container": "code execution containers are run by Anthropic's API",
}
# Content blocks whose meaning lives only in the provider's own history: dropped from requests.
DROPPED_BLOCKS = frozenset({"thinking", "redacted_thinking"})
# Where OpenAI-compatible servers put a reasoning model's thoughts (DeepSeek and vLLM; OpenRouter).
REASONING_FIELDS = ("reasoning_content", "reasoning")
TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
TOOL_ERROR_PREFIX = "[tool error] "

# An error inside a stream has no status: its OpenAI `code` or `type` says what it is.
OPENAI_ERROR_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "invalid_api_key": "authentication_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "not_found_error": "not_found_error",
    "model_not_found": "not_found_error",
    "rate_limit_exceeded": "rate_limit_error",
    "rate_limit_error": "rate_limit_error",
    "insufficient_quota": "billing_error",
    "context_length_exceeded": "invalid_request_error",
    "overloaded": "overloaded_error",
    "server_error": "api_error",
}


class UnreadableResponse(ValueError):
    """A provider answer without the parts a Messages response is built from."""


# Requests


def messages_request_to_chat(body: dict, *, upstream_model: str, max_tokens_field: str = "max_tokens") -> dict:
    """Build an OpenAI chat completion request from an Anthropic Messages request.

    `max_tokens_field` is the name the provider reads the output limit under (OpenAI's own API wants
    `max_completion_tokens`; many compatible servers know only `max_tokens`).
    """
    for name, reason in REFUSED_FIELDS.items():
        if body.get(name):
            raise TranslationError(f"not available for this model: {reason}", param=name)
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise TranslationError("Field required", param="max_tokens")
    if not _is_int(max_tokens) or max_tokens < 1:
        raise TranslationError("must be a positive integer", param="max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise TranslationError("must be a non-empty list", param="messages")

    chat_messages: list[dict] = []
    system = _system_text(body.get("system"))
    if system:
        chat_messages.append({"role": "system", "content": system})
    for i, message in enumerate(messages):
        chat_messages.extend(_chat_messages(message, f"messages.{i}"))

    request: dict[str, Any] = {"model": upstream_model, "messages": chat_messages, max_tokens_field: max_tokens}
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None:
            if not _is_number(value):
                raise TranslationError("must be a number", param=name)
            request[name] = value
    stop = stop_sequences(body)
    if stop:
        request["stop"] = stop
    if body.get("stream") is True:
        # Asked for so the request is billed by the provider's own count.
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}
    user = _user_id(body.get("metadata"))
    if user:
        request["user"] = user
    response_format = _response_format(body.get("output_config"))
    if response_format:
        request["response_format"] = response_format
    request.update(_tool_settings(body))
    wants_thinking(body)  # checked here, read by the answer's translation
    return request


def _response_format(output_config: Any) -> dict | None:
    """Structured outputs: `output_config.format` is a JSON Schema, as in OpenAI's json_schema format.

    `output_config.effort` is left out: models without reasoning refuse OpenAI's `reasoning_effort`.
    """
    if output_config is None:
        return None
    if not isinstance(output_config, dict):
        raise TranslationError("must be an object", param="output_config")
    output_format = output_config.get("format")
    if output_format is None:
        return None
    if not isinstance(output_format, dict) or output_format.get("type") != "json_schema":
        raise TranslationError("must be an object whose type is json_schema", param="output_config.format")
    schema = output_format.get("schema")
    if not isinstance(schema, dict):
        raise TranslationError("must be an object (a JSON Schema)", param="output_config.format.schema")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def wants_thinking(body: dict) -> bool:
    """Whether the client asked for thinking blocks; only then is a model's reasoning sent as them."""
    thinking = body.get("thinking")
    if thinking is None:
        return False
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if not isinstance(kind, str):
        raise TranslationError("must be an object with a type", param="thinking")
    return kind != "disabled"


def stop_sequences(body: dict) -> list[str]:
    """The request's stop sequences, checked; the stream and response translations read them too."""
    value = body.get("stop_sequences")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TranslationError("must be a list of strings", param="stop_sequences")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _user_id(metadata: Any) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise TranslationError("must be an object", param="metadata")
    user_id = metadata.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        raise TranslationError("must be a string", param="metadata.user_id")
    return user_id or None


def _system_text(system: Any) -> str:
    """A string, or text blocks joined by blank lines (their cache_control has no OpenAI counterpart)."""
    if system is None or isinstance(system, str):
        return system or ""
    if not isinstance(system, list):
        raise TranslationError("must be a string or a list of text blocks", param="system")
    texts = []
    for j, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise TranslationError("only text blocks are supported here", param=f"system.{j}")
        texts.append(_text(block, f"system.{j}"))
    return "\n\n".join(text for text in texts if text)


def _text(block: dict, where: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise TranslationError("must be a string", param=f"{where}.text")
    return text


def _blocks(message: dict, where: str) -> list:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise TranslationError("must be a string or a list of content blocks", param=f"{where}.content")
    return content


def _chat_messages(message: Any, where: str) -> list[dict]:
    if not isinstance(message, dict):
        raise TranslationError("each message must be an object", param=where)
    role = message.get("role")
    if role == "user":
        return _user_messages(_blocks(message, where), where)
    if role == "assistant":
        return _assistant_messages(_blocks(message, where), where)
    raise TranslationError("must be 'user' or 'assistant'", param=f"{where}.role")


def _block_type(block: Any, where: str) -> str:
    kind = block.get("type") if isinstance(block, dict) else None
    if not isinstance(kind, str):
        raise TranslationError("each content block must be an object with a type", param=where)
    return kind


def _user_messages(blocks: list, where: str) -> list[dict]:
    """A user turn: its tool results first, as `tool` messages (which must follow the calls), then the rest."""
    tool_messages: list[dict] = []
    parts: list[dict] = []
    for j, block in enumerate(blocks):
        block_where = f"{where}.content.{j}"
        kind = _block_type(block, block_where)
        if kind == "tool_result":
            tool_message, images = _tool_result(block, block_where)
            tool_messages.append(tool_message)
            parts.extend(images)
        elif kind in DROPPED_BLOCKS:
            continue
        else:
            parts.append(_user_part(kind, block, block_where))
    return tool_messages + ([{"role": "user", "content": _user_content(parts)}] if parts else [])


def _user_content(parts: list[dict]) -> str | list[dict]:
    # Text alone goes as a string: some OpenAI-compatible servers accept no part lists.
    if all(part["type"] == "text" for part in parts):
        return "\n\n".join(part["text"] for part in parts)
    return parts


def _user_part(kind: str, block: dict, where: str) -> dict:
    if kind == "text":
        return {"type": "text", "text": _text(block, where)}
    if kind == "image":
        return _image_part(block, where)
    if kind == "document":
        return _document_part(block, where)
    raise TranslationError(f"content block type {kind!r} is not supported for this model", param=f"{where}.type")


def _source(block: dict, where: str) -> tuple[str, dict]:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if not isinstance(kind, str):
        raise TranslationError("must be an object with a type", param=f"{where}.source")
    return kind, source


def _source_field(source: dict, name: str, where: str) -> str:
    value = source.get(name)
    if not _is_name(value):
        raise TranslationError("must be a non-empty string", param=f"{where}.source.{name}")
    return value


def _image_part(block: dict, where: str) -> dict:
    kind, source = _source(block, where)
    if kind == "base64":
        media_type = _source_field(source, "media_type", where)
        data = _source_field(source, "data", where)
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if kind == "url":
        return {"type": "image_url", "image_url": {"url": _source_field(source, "url", where)}}
    raise TranslationError(f"image source type {kind!r} is not supported for this model", param=f"{where}.source.type")


def _document_part(block: dict, where: str) -> dict:
    kind, source = _source(block, where)
    if kind == "text":
        return {"type": "text", "text": _source_field(source, "data", where)}
    if kind == "base64":
        media_type = _source_field(source, "media_type", where)
        data = _source_field(source, "data", where)
        title = block.get("title")
        filename = title if _is_name(title) else "document.pdf"
        return {"type": "file", "file": {"filename": filename, "file_data": f"data:{media_type};base64,{data}"}}
    raise TranslationError(
        f"document source type {kind!r} is not supported for this model", param=f"{where}.source.type"
    )


def _tool_result(block: dict, where: str) -> tuple[dict, list[dict]]:
    """The `tool` message for a tool_result block, and any images in it (tool messages carry text only)."""
    tool_use_id = block.get("tool_use_id")
    if not _is_name(tool_use_id):
        raise TranslationError("must be a non-empty string", param=f"{where}.tool_use_id")
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise TranslationError("must be a boolean", param=f"{where}.is_error")
    content = block.get("content")
    texts: list[str] = []
    images: list[dict] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for k, part in enumerate(content):
            part_where = f"{where}.content.{k}"
            kind = _block_type(part, part_where)
            if kind == "text":
                texts.append(_text(part, part_where))
            elif kind == "image":
                images.append(_image_part(part, part_where))
            else:
                raise TranslationError(
                    f"tool result block type {kind!r} is not supported for this model", param=f"{part_where}.type"
                )
    elif content is not None:
        raise TranslationError("must be a string or a list of content blocks", param=f"{where}.content")
    text = "\n\n".join(texts)
    if is_error:
        # Chat completions have no error flag on a tool result; the model reads it in the text.
        text = TOOL_ERROR_PREFIX + text
    return {"role": "tool", "tool_call_id": tool_use_id, "content": text}, images


def _assistant_messages(blocks: list, where: str) -> list[dict]:
    texts: list[str] = []
    tool_calls: list[dict] = []
    for j, block in enumerate(blocks):
        block_where = f"{where}.content.{j}"
        kind = _block_type(block, block_where)
        if kind == "text":
            texts.append(_text(block, block_where))
        elif kind == "tool_use":
            tool_calls.append(_tool_call(block, block_where))
        elif kind in DROPPED_BLOCKS:
            continue
        else:
            raise TranslationError(
                f"content block type {kind!r} is not supported in assistant turns for this model",
                param=f"{block_where}.type",
            )
    text = "\n\n".join(text for text in texts if text)
    if not text and not tool_calls:
        return []
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return [message]


def _tool_call(block: dict, where: str) -> dict:
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input")
    if not _is_name(call_id):
        raise TranslationError("must be a non-empty string", param=f"{where}.id")
    if not _is_name(name):
        raise TranslationError("must be a non-empty string", param=f"{where}.name")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise TranslationError("must be an object", param=f"{where}.input")
    function = {"name": name, "arguments": orjson.dumps(arguments).decode()}
    return {"id": call_id, "type": "function", "function": function}


def _tool_settings(body: dict) -> dict:
    tools = _tools(body.get("tools"))
    choice = body.get("tool_choice")
    settings: dict[str, Any] = {}
    chat_choice, parallel = _tool_choice(choice)
    if not tools:
        # OpenAI rejects tool_choice and parallel_tool_calls without tools.
        return settings
    settings["tools"] = tools
    if chat_choice is not None:
        settings["tool_choice"] = chat_choice
    if parallel is False:
        settings["parallel_tool_calls"] = False
    return settings


def _tools(tools: Any) -> list[dict]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise TranslationError("must be a list", param="tools")
    converted = []
    for i, tool in enumerate(tools):
        where = f"tools.{i}"
        if not isinstance(tool, dict):
            raise TranslationError("each tool must be an object", param=where)
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise TranslationError(
                f"tool type {kind!r} is run by Anthropic's API and is not available for this model",
                param=f"{where}.type",
            )
        name, description, schema = tool.get("name"), tool.get("description"), tool.get("input_schema")
        if not _is_name(name):
            raise TranslationError("must be a non-empty string", param=f"{where}.name")
        if description is not None and not isinstance(description, str):
            raise TranslationError("must be a string", param=f"{where}.description")
        if not isinstance(schema, dict):
            raise TranslationError("must be an object (a JSON Schema)", param=f"{where}.input_schema")
        function: dict[str, Any] = {"name": name}
        if description:
            function["description"] = description
        function["parameters"] = schema
        converted.append({"type": "function", "function": function})
    return converted


def _tool_choice(choice: Any) -> tuple[str | dict | None, bool | None]:
    """The chat tool_choice and parallel_tool_calls for an Anthropic tool_choice."""
    if choice is None:
        return None, None
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in ("auto", "any", "tool", "none"):
        raise TranslationError("must be an object whose type is auto, any, tool or none", param="tool_choice")
    disable_parallel = choice.get("disable_parallel_tool_use")
    if disable_parallel is not None and not isinstance(disable_parallel, bool):
        raise TranslationError("must be a boolean", param="tool_choice.disable_parallel_tool_use")
    parallel = False if disable_parallel else None
    if kind == "tool":
        name = choice.get("name")
        if not _is_name(name):
            raise TranslationError("must be a non-empty string", param="tool_choice.name")
        return {"type": "function", "function": {"name": name}}, parallel
    return TOOL_CHOICES[kind], parallel


# Responses


def chat_response_to_messages(
    response: dict, *, model: str, stop: list[str] | tuple = (), thinking: bool = False
) -> dict:
    """Build an Anthropic Messages response from an OpenAI chat completion; `model` is the client's name.

    `stop` is the request's stop sequences, to recognise a provider that reports which one matched;
    with `thinking`, a reasoning model's thoughts come first as a thinking block (without a signature,
    which only Anthropic can make). Raises UnreadableResponse when there is no first choice with a message.
    """
    choices = response.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise UnreadableResponse("the completion has no first choice with a message")
    content: list[dict] = []
    reasoning = _reasoning(message) if thinking else ""
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = _answer_text(message.get("content")) + _answer_text(message.get("refusal"))
    if text:
        content.append({"type": "text", "text": text})
    tool_calls = message.get("tool_calls")
    for call in tool_calls if isinstance(tool_calls, list) else ():
        block = _tool_use_block(call)
        if block is not None:
            content.append(block)
    has_tool_use = any(block["type"] == "tool_use" for block in content)
    stop_reason, stop_sequence = stop_reason_for(choice, has_tool_use=has_tool_use, stop=stop)
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        stop_reason = "refusal"
    return {
        "id": message_id(response.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": messages_usage(response.get("usage")),
    }


def message_id(upstream_id: Any) -> str:
    return f"msg_{upstream_id}" if _is_name(upstream_id) else f"msg_{uuid.uuid4().hex}"


def _reasoning(message: dict) -> str:
    for name in REASONING_FIELDS:
        value = message.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def _answer_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        # Some compatible servers answer with content parts.
        return "".join(part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def _tool_use_block(call: Any) -> dict | None:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not _is_name(function.get("name")):
        return None
    call_id = call.get("id")
    return {
        "type": "tool_use",
        "id": call_id if _is_name(call_id) else f"toolu_{uuid.uuid4().hex[:24]}",
        "name": function["name"],
        "input": tool_input(function.get("arguments")),
    }


def tool_input(arguments: Any) -> dict:
    """A tool call's arguments as the object Anthropic clients expect.

    Arguments that are not a JSON object (a model's malformed output) are kept whole under
    `_raw_arguments`, so the client's tool reports the problem back to the model.
    """
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if isinstance(arguments, str):
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    return {"_raw_arguments": arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()}


def stop_reason_for(choice: dict, *, has_tool_use: bool, stop: list[str] | tuple = ()) -> tuple[str, str | None]:
    """Anthropic's (stop_reason, stop_sequence) for a chat choice's finish_reason.

    OpenAI does not say which stop sequence ended an answer; vLLM and others put it in the choice's
    `stop_reason`, which is used where it is one of the request's.
    """
    finish_reason = choice.get("finish_reason")
    if finish_reason == "length":
        return "max_tokens", None
    # Some servers report "stop" with tool calls; a client only runs tools on "tool_use".
    if has_tool_use or finish_reason in ("tool_calls", "function_call"):
        return "tool_use", None
    if finish_reason == "content_filter":
        return "refusal", None
    matched = choice.get("stop_reason")
    if isinstance(matched, str) and matched in stop:
        return "stop_sequence", matched
    return "end_turn", None


def messages_usage(usage: Any) -> dict:
    """Anthropic usage from OpenAI counts: Anthropic's input_tokens leave out cache reads."""
    usage = usage if isinstance(usage, dict) else {}
    prompt = _count(usage.get("prompt_tokens"))
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, dict) else 0
    cached = cached or _count(usage.get("prompt_cache_hit_tokens"))  # DeepSeek's name for it
    cached = min(cached, prompt)
    return {
        "input_tokens": prompt - cached,
        "output_tokens": _count(usage.get("completion_tokens")),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
    }


def _count(value: Any) -> int:
    return value if _is_int(value) and value >= 0 else 0


# Errors


def chat_error_to_messages(error_body: Any, status: int) -> dict:
    """Anthropic's error body for an OpenAI one, typed by the HTTP status."""
    error_type = STATUS_ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    message = _error_message(error_body) or f"The upstream provider returned HTTP {status}"
    return {"type": "error", "error": {"type": error_type, "message": message}}


def chat_stream_error_to_messages(error_body: Any) -> dict:
    """Anthropic's error event body for an error sent inside an OpenAI stream."""
    error = error_body.get("error", error_body) if isinstance(error_body, dict) else None
    error_type = "api_error"
    if isinstance(error, dict):
        code, kind = error.get("code"), error.get("type")
        if _is_int(code) and code in STATUS_ERROR_TYPES:  # OpenRouter sends the status as the code
            error_type = STATUS_ERROR_TYPES[code]
        elif isinstance(code, str) and code in OPENAI_ERROR_TYPES:
            error_type = OPENAI_ERROR_TYPES[code]
        elif isinstance(kind, str) and kind in OPENAI_ERROR_TYPES:
            error_type = OPENAI_ERROR_TYPES[kind]
    message = _error_message(error_body) or "The provider's stream reported an error."
    return {"type": "error", "error": {"type": error_type, "message": message}}


def _error_message(error_body: Any) -> str | None:
    error = error_body.get("error", error_body) if isinstance(error_body, dict) else None
    if isinstance(error, str) and error:  # some servers send {"error": "text"}
        return error
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) and message else None


# Streaming


class ChatStreamTranslator:
    """Turn chat.completion.chunk dicts into Anthropic (event name, data) pairs, one chunk at a time.

    Blocks are numbered in the order they open (thinking, text, each tool call), each block closed before
    the next opens; reasoning becomes a thinking block only with `thinking`. `usage` holds the provider's
    own usage object once its usage chunk has arrived; after an error chunk, `error` holds the Anthropic
    error body to send, and nothing more should be fed.
    """

    def __init__(self, *, model: str, stop: list[str] | tuple = (), thinking: bool = False) -> None:
        self.model = model
        self.stop = stop
        self.thinking = thinking
        self.usage: dict | None = None
        self.error: dict | None = None
        self.finish_choice: dict | None = None  # the first choice, as of its finish_reason
        self.started = False
        self.ended = False
        self._blocks = 0
        self._open: int | None = None  # index of the block open now
        self._open_kind: str | None = None  # its type
        self._tools: dict[int, dict] = {}  # the provider's tool call index -> its block and buffered pieces

    def feed(self, chunk: dict) -> list[tuple[str, dict]]:
        if self.ended:
            return []
        if chunk.get("error") is not None:
            self.error = chat_stream_error_to_messages(chunk)
            return []
        events = self._start(chunk.get("id"))
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                events.extend(self._choice(choice))
        return events

    def end(self) -> list[tuple[str, dict]]:
        """Close the message: the open block, its stop reason and usage, message_stop."""
        if self.ended:
            return []
        events = self._start(None)
        for tool in self._tools.values():
            if tool["block"] is None:
                # A call whose name never came: sent all the same, so the client sees the model's turn.
                events.extend(self._open_tool(tool))
        events.extend(self._close())
        choice = self.finish_choice or {}
        has_tool_use = bool(self._tools)
        stop_reason, stop_sequence = stop_reason_for(choice, has_tool_use=has_tool_use, stop=self.stop)
        delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
        events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": messages_usage(self.usage)}))
        events.append(("message_stop", {"type": "message_stop"}))
        self.ended = True
        return events

    def _start(self, upstream_id: Any) -> list[tuple[str, dict]]:
        if self.started:
            return []
        self.started = True
        message = {
            "id": message_id(upstream_id),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # Chat streams count tokens only at the end; message_delta carries the counts.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _choice(self, choice: dict) -> list[tuple[str, dict]]:
        events: list[tuple[str, dict]] = []
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = _reasoning(delta) if self.thinking else ""
            if reasoning:
                events.extend(self._delta("thinking", reasoning))
            for name in ("content", "refusal"):
                text = delta.get(name)
                if isinstance(text, str) and text:
                    events.extend(self._delta("text", text))
            tool_calls = delta.get("tool_calls")
            for call in tool_calls if isinstance(tool_calls, list) else ():
                if isinstance(call, dict):
                    events.extend(self._tool_piece(call))
        if isinstance(choice.get("finish_reason"), str):
            self.finish_choice = choice
        return events

    def _delta(self, kind: str, text: str) -> list[tuple[str, dict]]:
        """A piece of text or thinking, in the open block of its kind or a new one."""
        events = []
        if self._open is None or self._open_kind != kind:
            events.extend(self._close())
            block = (
                {"type": "text", "text": ""}
                if kind == "text"
                else {"type": "thinking", "thinking": "", "signature": ""}
            )
            events.append(self._open_block(block))
        delta = {"type": "text_delta", "text": text} if kind == "text" else {"type": "thinking_delta", "thinking": text}
        events.append(("content_block_delta", {"type": "content_block_delta", "index": self._open, "delta": delta}))
        return events

    def _tool_piece(self, call: dict) -> list[tuple[str, dict]]:
        index = call.get("index")
        if not _is_int(index):
            # Servers that leave out the index send each call whole, or its pieces in order.
            index = len(self._tools) if _is_name(call.get("id")) or not self._tools else max(self._tools)
        tool = self._tools.get(index)
        if tool is None:
            tool = self._tools[index] = {"block": None, "id": None, "name": "", "pending": []}
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        if tool["block"] is None:
            if _is_name(call.get("id")):
                tool["id"] = call["id"]
            if isinstance(function.get("name"), str):
                tool["name"] += function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, dict):
            arguments = orjson.dumps(arguments).decode()
        if isinstance(arguments, str) and arguments:
            tool["pending"].append(arguments)
        events = []
        if tool["block"] is None and tool["name"]:
            events.extend(self._open_tool(tool))
        if tool["block"] is not None and tool["pending"]:
            events.append(_json_delta(tool))
        return events

    def _open_tool(self, tool: dict) -> list[tuple[str, dict]]:
        events = self._close()
        block = {
            "type": "tool_use",
            "id": tool["id"] or f"toolu_{uuid.uuid4().hex[:24]}",
            "name": tool["name"],
            "input": {},
        }
        events.append(self._open_block(block))
        tool["block"] = self._open
        if tool["pending"]:
            events.append(_json_delta(tool))
        return events

    def _open_block(self, block: dict) -> tuple[str, dict]:
        self._open, self._open_kind = self._blocks, block["type"]
        self._blocks += 1
        return "content_block_start", {"type": "content_block_start", "index": self._open, "content_block": block}

    def _close(self) -> list[tuple[str, dict]]:
        if self._open is None:
            return []
        index, self._open = self._open, None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]


def _json_delta(tool: dict) -> tuple[str, dict]:
    """The tool call's buffered argument pieces, as one delta of its block."""
    delta = {"type": "input_json_delta", "partial_json": "".join(tool["pending"])}
    tool["pending"].clear()
    return "content_block_delta", {"type": "content_block_delta", "index": tool["block"], "delta": delta}
