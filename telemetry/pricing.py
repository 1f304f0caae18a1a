"""The cost of one request: genai-prices, unless an admin override applies."""

import logging
import time
from datetime import datetime
from decimal import Decimal
from functools import lru_cache

from genai_prices import Usage, calc_price

logger = logging.getLogger(__name__)

MILLION = Decimal(1_000_000)
_OVERRIDES_TTL_SECONDS = 30.0
_overrides: dict[tuple[str, str], list[tuple[datetime, Decimal, Decimal]]] = {}
_overrides_loaded_at = float("-inf")

# genai-prices knows these providers under other ids.
_PROVIDER_IDS = {"gemini": "google", "xai": "x-ai", "azure": "azure", "together": "together"}


def _load_overrides() -> None:
    """Refresh the override table at most every 30 s, so an admin change shows up without a restart."""
    global _overrides, _overrides_loaded_at
    if time.monotonic() - _overrides_loaded_at < _OVERRIDES_TTL_SECONDS:
        return
    from proxy.models import PriceOverride

    table: dict[tuple[str, str], list[tuple[datetime, Decimal, Decimal]]] = {}
    for row in PriceOverride.objects.order_by("-valid_from").values_list(
        "provider", "model", "valid_from", "input_per_mtok", "output_per_mtok"
    ):
        provider, model, valid_from, input_price, output_price = row
        table.setdefault((provider, model), []).append((valid_from, input_price, output_price))
    _overrides = table
    _overrides_loaded_at = time.monotonic()


def invalidate_overrides() -> None:
    global _overrides_loaded_at
    _overrides_loaded_at = float("-inf")


def _override_cost(provider: str, model: str, at: datetime, input_tokens: int, output_tokens: int) -> Decimal | None:
    for valid_from, input_price, output_price in _overrides.get((provider, model), ()):
        if valid_from <= at:
            return (input_price * input_tokens + output_price * output_tokens) / MILLION
    return None


@lru_cache(maxsize=4096)
def _library_rates(provider: str, model: str) -> tuple[Decimal, Decimal] | None:
    """Per-token input and output rates from genai-prices, looked up once per model."""
    provider_id = _PROVIDER_IDS.get(provider, provider)
    try:
        input_only = calc_price(Usage(input_tokens=MILLION, output_tokens=0), model, provider_id=provider_id)
        output_only = calc_price(Usage(input_tokens=0, output_tokens=MILLION), model, provider_id=provider_id)
    except LookupError:
        try:
            input_only = calc_price(Usage(input_tokens=MILLION, output_tokens=0), model)
            output_only = calc_price(Usage(input_tokens=0, output_tokens=MILLION), model)
        except LookupError:
            return None
    return input_only.total_price / MILLION, output_only.total_price / MILLION


def request_cost(*, provider: str, model: str, at: datetime, input_tokens: int, output_tokens: int) -> float | None:
    """USD cost of a request, or None when no price is known for the model."""
    if not model or not (input_tokens or output_tokens):
        return 0.0 if model else None
    try:
        _load_overrides()
    except Exception:
        logger.warning("price overrides could not be loaded", exc_info=True)
    cost = _override_cost(provider, model, at, input_tokens, output_tokens)
    if cost is None:
        rates = _library_rates(provider, model)
        if rates is None:
            return None
        cost = rates[0] * input_tokens + rates[1] * output_tokens
    return float(round(cost, 10))
