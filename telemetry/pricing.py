"""The cost of one request: genai-prices on the full usage, unless an admin override applies.

Usage is read with genai-prices' own extractors, so cache reads and writes, audio and
reasoning tokens are priced at their own rates, and tiered (long-context) prices apply
to the whole request. The model lookup is cached (unknown names too, bounded), and both
the extraction and the calculation run precompiled (`price_plan`), with the same results.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import lru_cache

from genai_prices import Usage
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import ModelInfo, Provider

from telemetry import price_plan

logger = logging.getLogger(__name__)

MILLION = Decimal(1_000_000)
_OVERRIDES_TTL_SECONDS = 30.0
_overrides: dict[tuple[str, str], list[tuple[datetime, Decimal, Decimal]]] = {}
_overrides_loaded_at = float("-inf")

# genai-prices knows these providers under other ids.
_PROVIDER_IDS = {"gemini": "google", "xai": "x-ai", "azure": "azure", "together": "together"}

# The shapes a usage object comes in, and the genai-prices extractor that reads each.
ANTHROPIC, CHAT, RESPONSES = "anthropic", "chat", "responses"
_EXTRACTORS = {ANTHROPIC: ("anthropic", "default"), CHAT: ("openai", "chat"), RESPONSES: ("openai", "responses")}
_REQUIRED = {
    ANTHROPIC: ("input_tokens", "output_tokens"),
    CHAT: ("prompt_tokens", "completion_tokens"),
    RESPONSES: ("input_tokens", "output_tokens"),
}

# The record's `metadata.tokens` keys beyond input/output/total, and the genai-prices usage
# field each one holds; kept where the provider reports them, so a repricing has them too.
TOKEN_DETAILS = {
    "cache_read": "cache_read_tokens",
    "cache_write": "cache_write_tokens",
    "cache_write_1h": "cache_write_1h_tokens",
    "reasoning": "output_reasoning_tokens",
    "input_audio": "input_audio_tokens",
    "output_audio": "output_audio_tokens",
    "cache_audio_read": "cache_audio_read_tokens",
}


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """A request's token counts: input counts every input token, cached ones included."""

    input: int = 0
    output: int = 0
    details: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.input + self.output

    def as_metadata(self) -> dict[str, int]:
        return {"input": self.input, "output": self.output, "total": self.total, **self.details}

    def priced_values(self) -> dict[str, int]:
        """The genai-prices usage fields and counts."""
        return {
            "input_tokens": self.input,
            "output_tokens": self.output,
            **{TOKEN_DETAILS[name]: value for name, value in self.details.items()},
        }

    def priced_usage(self) -> Usage:
        return Usage(**self.priced_values())

    @classmethod
    def from_metadata(cls, tokens) -> TokenUsage:
        """The usage a stored record's `metadata.tokens` describes."""
        tokens = tokens if isinstance(tokens, dict) else {}
        details = {name: tokens[name] for name in TOKEN_DETAILS if _is_count(tokens.get(name))}
        return cls(input=_count(tokens.get("input")), output=_count(tokens.get("output")), details=details)


def usage_shape(usage: dict, *, anthropic: bool) -> str:
    """Which provider's usage object this is: Anthropic's and OpenAI Responses' share key names."""
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        return CHAT
    if anthropic or "cache_read_input_tokens" in usage or "cache_creation_input_tokens" in usage:
        return ANTHROPIC
    return RESPONSES


def token_usage(usage, *, anthropic: bool = False) -> TokenUsage | None:
    """Token counts from a provider's `usage` object, read by genai-prices; None when there is none."""
    if not isinstance(usage, dict):
        return None
    shape = usage_shape(usage, anthropic=anthropic)
    # A counter the provider left out (or null) reads as zero rather than failing the extraction.
    usage = {**usage, **{key: _count(usage.get(key)) for key in _REQUIRED[shape]}}
    provider_id, flavor = _EXTRACTORS[shape]
    try:
        reported = price_plan.extract_usage(_provider(provider_id), usage, flavor)
    except (ValueError, TypeError):
        logger.warning("telemetry: unreadable %s usage %r", shape, usage)
        return TokenUsage(input=_count(usage.get(_REQUIRED[shape][0])), output=_count(usage.get(_REQUIRED[shape][1])))
    details = {name: reported[key] for name, key in TOKEN_DETAILS.items() if _is_count(reported.get(key))}
    return TokenUsage(
        input=_count(reported.get("input_tokens")), output=_count(reported.get("output_tokens")), details=details
    )


@lru_cache(maxsize=16)
def _provider(provider_id: str) -> Provider:
    return get_snapshot().find_provider(None, provider_id, None)


@lru_cache(maxsize=4096)
def priced_model(provider: str, model: str) -> tuple[Provider, ModelInfo] | None:
    """genai-prices' provider and model for a request, looked up once per pair; None when unknown.

    The bounded cache keeps unknown names too, and the lookup bypasses genai-prices' own
    per-name caches, so random model names cannot grow memory.
    """
    provider_id = _PROVIDER_IDS.get(provider, provider)
    return price_plan.find_model(model, provider_id) or price_plan.find_model(model, None)


def _load_overrides() -> None:
    """Refresh the override table at most every 30 s, so an admin change shows up without a restart."""
    global _overrides, _overrides_loaded_at
    if time.monotonic() - _overrides_loaded_at < _OVERRIDES_TTL_SECONDS:
        return
    from telemetry.models import PriceOverride

    table: dict[tuple[str, str], list[tuple[datetime, Decimal, Decimal]]] = {}
    for row in PriceOverride.objects.order_by("-valid_from").values_list(
        "provider", "model", "valid_from", "input_per_mtok", "output_per_mtok"
    ):
        provider, model, valid_from, input_price, output_price = row
        table.setdefault((provider, model), []).append((valid_from, input_price, output_price))
    _overrides = table
    _overrides_loaded_at = time.monotonic()


def overrides_version() -> float:
    """Changes whenever the override table is reloaded: a cache of prices keys on it."""
    return _overrides_loaded_at


def overrides_fresh() -> bool:
    """Whether request_cost would price without reading the database (async callers refresh first)."""
    return time.monotonic() - _overrides_loaded_at < _OVERRIDES_TTL_SECONDS


def refresh_overrides() -> None:
    """Load the override table if it is due; for async callers, from a thread, before request_cost."""
    _load_overrides()


def invalidate_overrides() -> None:
    global _overrides_loaded_at
    _overrides_loaded_at = float("-inf")


def _override_cost(provider: str, model: str, at: datetime, usage: TokenUsage) -> Decimal | None:
    # An override has one input and one output rate: every input token, cached or not, pays the input rate.
    for valid_from, input_price, output_price in _overrides.get((provider, model), ()):
        if valid_from <= at:
            return (input_price * usage.input + output_price * usage.output) / MILLION
    return None


def request_cost(*, provider: str, model: str, at: datetime, usage: TokenUsage) -> float | None:
    """USD cost of a request, or None when no price is known for the model."""
    if not model:
        return None
    try:
        _load_overrides()
    except Exception:
        logger.warning("price overrides could not be loaded", exc_info=True)
    cost = _override_cost(provider, model, at, usage)
    if cost is None:
        if not usage.total:
            return 0.0
        found = priced_model(provider, model)
        if found is None:
            return None
        library_provider, library_model = found
        try:
            cost = price_plan.total_price(library_model, library_provider, usage.priced_values(), at)
        except (ValueError, TypeError):
            logger.warning("telemetry: genai-prices could not price %s/%s for %r", provider, model, usage)
            return None
    return float(round(cost, 10))


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _count(value) -> int:
    return value if _is_count(value) else 0
