"""A request record's request and response read as one conversation, for the detail and thread pages.

`conversation_from(request, response)` turns what the gateway logged (an OpenAI chat, completions
or Responses API body, or an Anthropic messages body, and the reply: whole, or the
`streamed_data` chunks of either dialect, assembled as `telemetry.streams` does) into turns:
system, user, assistant and tool, each a list of parts (text, image placeholder, tool call, tool
result, thinking). Pure: no database, no Django, so that every shape is unit-tested.

Images are never drawn: a placeholder names their type and size or URL. Bodies logged as
metadata only ("[redacted]") give no turns and say so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from telemetry.streams import accumulated_response

REDACTED = "[redacted]"
# Data URLs and base64 images are long: the placeholder shows this much of a URL.
_URL_SHOWN = 120
# Endpoints whose `input` is not a conversation.
_NOT_CONVERSATIONS = ("/embeddings", "/moderations")


@dataclass
class Part:
    """One piece of a turn. `kind` is text, image, tool_call, tool_result, thinking or other."""

    kind: str
    text: str = ""
    # Tool calls and results: the call's id and the tool's name; is_error for a failed result.
    call_id: str = ""
    name: str = ""
    is_error: bool = False


@dataclass
class Turn:
    role: str  # system, user, assistant or tool
    parts: list[Part] = field(default_factory=list)
    # Where the turn was logged: "request" (what the caller sent) or "response" (the reply).
    source: str = "request"

    @property
    def tool_calls(self) -> list[Part]:
        return [part for part in self.parts if part.kind == "tool_call"]


@dataclass
class Conversation:
    turns: list[Turn] = field(default_factory=list)
    redacted: bool = False
    # Whether the reply was assembled from streamed chunks.
    streamed: bool = False
    # The tools the caller offered, by name.
    tools: list[str] = field(default_factory=list)
    error: str = ""
    finish_reason: str = ""

    @property
    def request_turns(self) -> list[Turn]:
        return [turn for turn in self.turns if turn.source == "request"]

    @property
    def response_turns(self) -> list[Turn]:
        return [turn for turn in self.turns if turn.source == "response"]

    @property
    def new_request_turns(self) -> list[Turn]:
        """What this request added to the thread: its turns after the last assistant turn it repeats."""
        turns = self.request_turns
        for index in range(len(turns) - 1, -1, -1):
            if turns[index].role == "assistant":
                return turns[index + 1 :]
        return [turn for turn in turns if turn.role != "system"] or turns


def conversation_from(request, response, *, path: str = "", dialect: str | None = None) -> Conversation | None:
    """The conversation in a logged request and response, or None for a body that is not one
    (embeddings, an unparsed body). `path` is the request's; `dialect` ("openai" or "anthropic")
    is guessed when None."""
    if path.rstrip("/").endswith(_NOT_CONVERSATIONS):
        return None
    if request == REDACTED or (isinstance(request, dict) and _is_redacted(request)):
        return Conversation(redacted=True)
    if not isinstance(request, dict):
        return None
    dialect = dialect or _dialect(request, response)
    conversation = Conversation(tools=_tool_names(request.get("tools")))
    if "messages" in request:
        if dialect == "anthropic":
            conversation.turns += _anthropic_request(request)
        else:
            conversation.turns += _openai_messages(request.get("messages"))
    elif "input" in request or "instructions" in request:
        conversation.turns += _responses_input(request)
    elif "prompt" in request:
        conversation.turns.append(Turn("user", _texts(request.get("prompt"))))
    else:
        return None
    _reply(conversation, response, dialect=dialect)
    _name_tool_results(conversation.turns)
    return conversation


# --- Reading the shape ------------------------------------------------------------------


def _is_redacted(request: dict) -> bool:
    return any(request.get(key) == REDACTED for key in ("messages", "input", "prompt"))


def _dialect(request: dict, response) -> str:
    if "system" in request or (isinstance(request.get("max_tokens"), int) and "anthropic_version" in request):
        return "anthropic"
    if isinstance(response, dict):
        if response.get("type") == "message" or isinstance(response.get("content"), list):
            return "anthropic"
        chunks = response.get("streamed_data")
        if isinstance(chunks, list) and any(
            isinstance(chunk, dict) and str(chunk.get("type", "")).startswith(("message_", "content_block_"))
            for chunk in chunks
        ):
            return "anthropic"
    for message in request.get("messages") or ():
        blocks = message.get("content") if isinstance(message, dict) else None
        if isinstance(blocks, list) and any(
            isinstance(block, dict) and block.get("type") in ("tool_use", "tool_result") for block in blocks
        ):
            return "anthropic"
    return "openai"


def _tool_names(tools) -> list[str]:
    names = []
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, dict):
            continue
        function = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        if isinstance(function.get("name"), str):
            names.append(function["name"])
    return names


def _pretty(value) -> str:
    """Tool arguments and inputs as indented JSON; a string that is not JSON as it is."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _image(url: str = "", media_type: str = "", data: str = "") -> Part:
    if url.startswith("data:"):
        media_type, _, data = url[5:].partition(",")
        media_type = media_type.split(";")[0]
        url = ""
    if data:
        size = len(data) * 3 // 4
        return Part("image", f"Image ({media_type or 'inline'}, {_size(size)}, not shown)")
    if url:
        shown = url if len(url) <= _URL_SHOWN else url[:_URL_SHOWN] + "…"
        return Part("image", f"Image ({shown}, not shown)")
    return Part("image", "Image (not shown)")


def _size(size: int) -> str:
    return f"{size / 1024:.0f} kB" if size >= 1024 else f"{size} bytes"


def _texts(content) -> list[Part]:
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [Part("text", content)]
    if isinstance(content, list):
        return [part for item in content for part in _texts(item)]
    return [Part("other", _pretty(content))]


# --- OpenAI -------------------------------------------------------------------------


def _openai_parts(content) -> list[Part]:
    if not isinstance(content, list):
        return _texts(content)
    parts = []
    for item in content:
        if isinstance(item, str):
            parts.append(Part("text", item))
        elif not isinstance(item, dict):
            continue
        elif item.get("type") in ("text", "input_text", "output_text"):
            parts.append(Part("text", str(item.get("text") or "")))
        elif item.get("type") in ("image_url", "input_image"):
            image = item.get("image_url")
            url = image.get("url", "") if isinstance(image, dict) else str(image or "")
            parts.append(_image(url=url))
        elif item.get("type") == "refusal":
            parts.append(Part("text", f"Refused: {item.get('refusal') or ''}"))
        else:
            parts.append(Part("other", f"{item.get('type') or 'part'} (not shown)"))
    return parts


def _openai_tool_calls(message: dict) -> list[Part]:
    calls = []
    for call in message.get("tool_calls") or ():
        if isinstance(call, dict):
            function = call.get("function") if isinstance(call.get("function"), dict) else {}
            calls.append(
                Part(
                    "tool_call",
                    _pretty(function.get("arguments") or ""),
                    call_id=str(call.get("id") or ""),
                    name=str(function.get("name") or ""),
                )
            )
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        calls.append(Part("tool_call", _pretty(legacy.get("arguments") or ""), name=str(legacy.get("name") or "")))
    return calls


def _openai_message(message: dict, *, source: str) -> Turn:
    role = message.get("role") or "assistant"
    if role in ("tool", "function"):
        result = Part(
            "tool_result",
            _pretty("\n".join(part.text for part in _openai_parts(message.get("content")))),
            call_id=str(message.get("tool_call_id") or ""),
            name=str(message.get("name") or ""),
        )
        return Turn("tool", [result], source=source)
    parts = _openai_parts(message.get("content"))
    if message.get("refusal"):
        parts.append(Part("text", f"Refused: {message['refusal']}"))
    parts += _openai_tool_calls(message)
    return Turn("system" if role == "developer" else role, parts, source=source)


def _openai_messages(messages) -> list[Turn]:
    return [_openai_message(message, source="request") for message in messages or () if isinstance(message, dict)]


def _responses_input(request: dict) -> list[Turn]:
    turns = []
    if request.get("instructions"):
        turns.append(Turn("system", _texts(request["instructions"])))
    items = request.get("input")
    if isinstance(items, str):
        return [*turns, Turn("user", [Part("text", items)])]
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict):
            turns += _responses_item(item, source="request")
    return turns


def _responses_item(item: dict, *, source: str) -> list[Turn]:
    kind = item.get("type") or "message"
    if kind == "message":
        role = item.get("role") or "assistant"
        return [Turn("system" if role == "developer" else role, _openai_parts(item.get("content")), source=source)]
    if kind == "function_call":
        call = Part(
            "tool_call",
            _pretty(item.get("arguments") or ""),
            call_id=str(item.get("call_id") or ""),
            name=str(item.get("name") or ""),
        )
        return [Turn("assistant", [call], source=source)]
    if kind == "function_call_output":
        output = item.get("output")
        text = _pretty(output)
        return [Turn("tool", [Part("tool_result", text, call_id=str(item.get("call_id") or ""))], source=source)]
    if kind == "reasoning":
        summary = " ".join(str(entry.get("text", "")) for entry in item.get("summary") or () if isinstance(entry, dict))
        return [Turn("assistant", [Part("thinking", summary)], source=source)] if summary else []
    return [Turn("assistant", [Part("other", f"{kind} (not shown)")], source=source)]


# --- Anthropic ----------------------------------------------------------------------


def _anthropic_blocks(content) -> list[Part]:
    if not isinstance(content, list):
        return _texts(content)
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(Part("text", block))
            continue
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            parts.append(Part("text", str(block.get("text") or "")))
        elif kind in ("image", "document"):
            source = block.get("source") if isinstance(block.get("source"), dict) else {}
            if kind == "image":
                parts.append(
                    _image(
                        url=source.get("url", ""), media_type=source.get("media_type", ""), data=source.get("data", "")
                    )
                )
            else:
                kind_shown = source.get("media_type") or source.get("type") or "file"
                parts.append(Part("other", f"Document ({kind_shown}, not shown)"))
        elif kind in ("tool_use", "server_tool_use"):
            parts.append(
                Part(
                    "tool_call",
                    _pretty(block.get("input", {})),
                    call_id=str(block.get("id") or ""),
                    name=str(block.get("name") or ""),
                )
            )
        elif kind == "tool_result":
            inner = block.get("content")
            if isinstance(inner, list):
                text = "\n".join(part.text for part in _anthropic_blocks(inner))
            else:
                text = _pretty(str(inner or ""))
            parts.append(
                Part(
                    "tool_result",
                    text,
                    call_id=str(block.get("tool_use_id") or ""),
                    is_error=bool(block.get("is_error")),
                )
            )
        elif kind == "thinking":
            parts.append(Part("thinking", str(block.get("thinking") or "")))
        elif kind == "redacted_thinking":
            parts.append(Part("thinking", "(thinking redacted by the provider)"))
        else:
            parts.append(Part("other", f"{kind or 'block'} (not shown)"))
    return parts


def _anthropic_turns(role: str, content, *, source: str) -> list[Turn]:
    """A message's blocks as turns; tool results a user sends become tool turns of their own."""
    turns: list[Turn] = []
    for part in _anthropic_blocks(content):
        turn_role = "tool" if part.kind == "tool_result" else role
        if not turns or turns[-1].role != turn_role:
            turns.append(Turn(turn_role, source=source))
        turns[-1].parts.append(part)
    return turns


def _anthropic_request(request: dict) -> list[Turn]:
    turns = []
    if request.get("system"):
        turns.append(Turn("system", _anthropic_blocks(request["system"])))
    for message in request.get("messages") or ():
        if isinstance(message, dict):
            turns += _anthropic_turns(message.get("role") or "user", message.get("content"), source="request")
    return turns


# --- The reply ----------------------------------------------------------------------


def _reply(conversation: Conversation, response, *, dialect: str) -> None:
    if not isinstance(response, dict):
        if response == REDACTED:
            conversation.redacted = True
        return
    chunks = response.get("streamed_data")
    if isinstance(chunks, list) and chunks:
        conversation.streamed = True
        response = accumulated_response(dialect, chunks) | {
            key: value for key, value in response.items() if key == "error"
        }
    if response.get("content") == REDACTED:
        conversation.redacted = True
        return
    error = response.get("error")
    if isinstance(error, dict):
        conversation.error = str(error.get("message") or error.get("type") or "error")
    elif isinstance(error, str):
        conversation.error = error
    if isinstance(response.get("output"), list):  # Responses API
        for item in response["output"]:
            if isinstance(item, dict):
                conversation.turns += _responses_item(item, source="response")
        return
    if isinstance(response.get("choices"), list):
        for choice in response["choices"]:
            if not isinstance(choice, dict):
                continue
            conversation.finish_reason = conversation.finish_reason or str(choice.get("finish_reason") or "")
            if "text" in choice and "message" not in choice:  # legacy completions
                conversation.turns.append(Turn("assistant", _texts(choice.get("text")), source="response"))
                continue
            message = choice.get("message") or choice.get("delta")
            if isinstance(message, dict):
                conversation.turns.append(_openai_message({"role": "assistant", **message}, source="response"))
        return
    if "content" in response:
        conversation.finish_reason = str(response.get("stop_reason") or "")
        conversation.turns += _anthropic_turns("assistant", response.get("content"), source="response")


def _name_tool_results(turns: list[Turn]) -> None:
    """A tool result names the tool whose call it answers, as the call is logged earlier in the thread."""
    names = {}
    for turn in turns:
        for part in turn.parts:
            if part.kind == "tool_call" and part.call_id:
                names[part.call_id] = part.name
            elif part.kind == "tool_result" and not part.name:
                part.name = names.get(part.call_id, "")
