"""What a request may cost before it is sent: its input tokens, its output tokens at most, its price.

Budgets reserve that worst case and token limits its tokens (`budgets.enforcement`), then settle to
what the record bills. An estimate that runs low lets concurrent requests overspend a budget by
the difference, so it counts everything the model is sent, not only the messages' text: tool
definitions and their JSON schemas, earlier tool calls and their arguments, output schemas, and
images at what a large one costs.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from functools import lru_cache

import orjson

from telemetry import pricing

# Where the text of a request is, in both protocols: top-level fields the model reads.
_PROMPT_KEYS = frozenset(("messages", "prompt", "input", "system", "instructions", "tools", "response_format", "text"))
# Fields of a message, content part, tool or tool call that hold text, or parts that do.
_TEXT_KEYS = frozenset(
    ("content", "text", "arguments", "description", "name", "tool_calls", "function", "output", "thinking", "format")
)
# Fields whose whole JSON the model reads, names included: schemas and a tool call's input.
_JSON_KEYS = frozenset(("parameters", "input_schema", "input", "schema", "json_schema"))
# Content parts that are images, in OpenAI's chat and responses APIs and Anthropic's; each is counted at
# what a large image costs (about 1,600 tokens on Anthropic, up to about 1,100 on OpenAI at high detail).
_IMAGE_TYPES = frozenset(("image", "image_url", "input_image"))
IMAGE_TOKENS = 1600
_CHARS_PER_TOKEN = 4
_OUTPUT_LIMIT_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def _text_chars(pending: list) -> int:
    """Characters the model reads in a body's values (an image counts as IMAGE_TOKENS' worth)."""
    total = 0
    while pending:  # a loop, not recursion: cheaper, and no depth limit for a deeply nested body
        value = pending.pop()
        kind = type(value)
        if kind is str:
            total += len(value)
        elif kind is dict:
            if value.get("type") in _IMAGE_TYPES:
                total += IMAGE_TOKENS * _CHARS_PER_TOKEN
                continue
            for key in value:  # a message has fewer keys than there are text keys to look for
                if key in _TEXT_KEYS:
                    pending.append(value[key])
                elif key in _JSON_KEYS:
                    total += _json_chars(value[key])
        elif kind is list:
            pending += value
        elif kind is int:  # an embedding input given as token ids
            total += _CHARS_PER_TOKEN
    return total


def _json_chars(value) -> int:
    if type(value) is str:  # a schema or input given as a JSON string, or text
        return len(value)
    return len(orjson.dumps(value))


def estimated_input_tokens(payload: dict) -> int:
    pending = []
    for key in payload:
        if key in _PROMPT_KEYS:
            pending.append(payload[key])
    return -(-_text_chars(pending) // _CHARS_PER_TOKEN)


def declared_output_tokens(payload: dict) -> int | None:
    for name in _OUTPUT_LIMIT_KEYS:
        value = payload.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def worst_case_nano(*, provider: str, model: str, at: float, input_tokens: int, output_tokens: int) -> int:
    """The request's highest possible cost in nano-USD; 1 for a model without a known price.

    An unpriced request is logged at no cost (flagged `cost_unknown`), so it settles to nothing,
    but it still needs room in the budget: a budget that is all spent refuses it too.
    """
    # Prices change by the day at most (and overrides within their 30 s refresh, which clears this cache).
    return _worst_case_nano(provider, model, int(at // 86400), input_tokens, output_tokens, pricing.overrides_version())


@lru_cache(maxsize=4096)
def _worst_case_nano(provider: str, model: str, day: int, input_tokens: int, output_tokens: int, _version) -> int:
    usage = pricing.TokenUsage(input=input_tokens, output=output_tokens)
    at = datetime.fromtimestamp(day * 86400, tz=UTC)
    cost = pricing.request_cost(provider=provider, model=model, at=at, usage=usage)
    return max(math.ceil(cost * 1e9), 1) if cost else 1
