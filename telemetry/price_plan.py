"""genai-prices' usage extraction and price calculation, precompiled once per extractor and price.

`ModelPrice.calc_price` re-resolves and re-validates the price's units and decomposes the usage
through lazily inferred `Usage` attributes on every call (most of a millisecond). The price's
units, their order and their descendants only depend on the resolved price, so they are worked
out once per price object (`get_prices` is still asked per request, so a price that changes with
the date or the time of day is honoured). The per-request part is then the same integer
subtractions and `calc_unit_price` calls in the same order, giving the same Decimal.

Anything off the plain path (a float or out-of-range count, an inferred value, an invalid usage,
a provider special case) is handed to genai-prices itself, so errors and edge cases stay its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache

from genai_prices.data_snapshot import find_provider_by_id, get_snapshot
from genai_prices.decompose import is_descendant_or_self
from genai_prices.types import (
    ModelInfo,
    ModelPrice,
    Provider,
    TieredPrices,
    Usage,
    UsageExtractor,
    _collect_resolved_model_prices,
    calc_unit_price,
)
from genai_prices.units import _get_registry
from genai_prices.validation import validate_priced_units

_SLOW = object()  # "genai-prices decides this one"


class _Identity:
    """A genai-prices object as a cache key by identity (its dataclasses are unhashable); holding it
    keeps its id from being reused while the entry lives."""

    __slots__ = ("obj",)

    def __init__(self, obj) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Identity) and other.obj is self.obj


def find_model(model_ref: str, provider_id: str | None) -> tuple[Provider, ModelInfo] | None:
    """`DataSnapshot.find_provider_model` without its per-name caches, which grow with every name asked."""
    snapshot = get_snapshot()
    model_ref = model_ref.lower()
    if provider_id is not None:
        if provider_id.lower() == "litellm":
            return _library_find_model(model_ref, provider_id)
        provider = find_provider_by_id(snapshot.providers, provider_id)
    else:
        provider = next(
            (p for p in snapshot.providers if p.model_match is not None and p.model_match.is_match(model_ref)), None
        )
    if provider is None:
        return None
    model = provider.find_model(model_ref, all_providers=snapshot.providers)
    return None if model is None else (provider, model)


def _library_find_model(model_ref: str, provider_id: str) -> tuple[Provider, ModelInfo] | None:
    try:
        return get_snapshot().find_provider_model(model_ref, None, provider_id, None)
    except LookupError:
        return None


# --- Usage extraction ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Mapping:
    steps: tuple[str, ...]
    last: str
    dest: str
    required: bool


@lru_cache(maxsize=64)
def _extraction_plan(key: _Identity) -> tuple[_Mapping, ...] | None:
    """The extractor's supported mappings as plain key paths; None when one needs genai-prices' own walk."""
    extractor: UsageExtractor = key.obj
    if extractor.root != "usage":
        return None
    mappings = []
    for mapping in extractor.mappings:
        if mapping.dest not in extractor._reported_usage_keys:
            continue
        path = [mapping.path] if isinstance(mapping.path, str) else list(mapping.path)
        if not all(isinstance(step, str) for step in path):
            return None
        mappings.append(_Mapping(tuple(path[:-1]), path[-1], mapping.dest, mapping.required))
    return tuple(mappings) if mappings else None


def extract_usage(provider: Provider, usage: dict, api_flavor: str) -> dict[str, int]:
    """What `provider.extract_usage({"usage": usage}, api_flavor=...)[1].__dict__` holds; raises as it does."""
    extractor = next((e for e in provider.extractors or () if e.api_flavor == api_flavor), None)
    plan = _extraction_plan(_Identity(extractor)) if extractor is not None else None
    values = _SLOW if plan is None else _plain_extract(plan, usage)
    if values is _SLOW:
        return dict(provider.extract_usage({"usage": usage}, api_flavor=api_flavor)[1].__dict__)
    return values


def _plain_extract(plan: tuple[_Mapping, ...], usage) -> dict[str, int] | object:
    """genai-prices' path walk for dicts of non-negative ints; _SLOW wherever it might raise or coerce."""
    if type(usage) is not dict:
        return _SLOW
    values: dict[str, int] = {}
    for mapping in plan:
        data = usage
        for step in mapping.steps:
            if type(data) is not dict:
                return _SLOW
            if step not in data:
                if mapping.required:
                    return _SLOW
                data = None
                break
            data = data[step]
        if data is None and not mapping.required:
            continue
        if type(data) is not dict:
            return _SLOW
        value = data.get(mapping.last)
        if value is None and not mapping.required:
            continue  # absent, or null: genai-prices skips an optional count either way
        if type(value) is not int or value < 0:
            return _SLOW
        values[mapping.dest] = values.get(mapping.dest, 0) + value
    return values if values else _SLOW


# --- Price calculation ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _PricePlan:
    # (usage key, per, price) in genai-prices' summing order
    prices: tuple[tuple[str, int, Decimal | TieredPrices], ...]
    # (usage key, priced descendant keys) in genai-prices' decomposition order
    leaves: tuple[tuple[str, tuple[str, ...]], ...]
    tiered: bool
    prices_requests: bool


@lru_cache(maxsize=1024)
def _price_plan(key: _Identity) -> _PricePlan | None:
    """The price's resolved units, worked out once; None when genai-prices would refuse the price."""
    model_price: ModelPrice = key.obj
    registry = _get_registry()
    try:
        resolved = _collect_resolved_model_prices(model_price, registry)
        validate_priced_units(tuple(unit for unit, _ in resolved), registry)
    except ValueError:
        return None
    priced = {unit.usage_key: unit for unit, _ in resolved if unit.usage_key != "requests"}
    ordered = sorted(priced.values(), key=lambda unit: (-len(unit.dimensions), unit.usage_key))
    leaves = tuple(
        (
            unit.usage_key,
            tuple(d.usage_key for d in ordered if d is not unit and is_descendant_or_self(unit, d)),
        )
        for unit in ordered
    )
    return _PricePlan(
        prices=tuple((unit.usage_key, unit.per, price) for unit, price in resolved),
        leaves=leaves,
        tiered=any(isinstance(price, TieredPrices) for _, price in resolved),
        prices_requests=any(unit.usage_key == "requests" for unit, _ in resolved),
    )


@lru_cache(maxsize=4096)
def _inferred_zero(usage_key: str, positive: frozenset[str]) -> bool:
    """Whether genai-prices reads an unreported usage key as 0 rather than refusing the usage: that only
    depends on which keys were reported above zero."""
    probe = Usage(**dict.fromkeys(positive, 1))
    try:
        return getattr(probe, usage_key) == 0
    except ValueError:
        return False


def total_price(model: ModelInfo, provider: Provider, usage: dict[str, int], at: datetime | None) -> Decimal:
    """`model.calc_price(Usage(**usage), provider, genai_request_timestamp=at).total_price`, precompiled."""
    total = planned_total(model, provider, usage, at)
    if total is _SLOW:
        return model.calc_price(Usage(**usage), provider, genai_request_timestamp=at).total_price
    return total


def planned_total(model: ModelInfo, provider: Provider, usage: dict[str, int], at: datetime | None):
    """The total from the price's plan, or _SLOW where genai-prices must decide (it may refuse the usage)."""
    if provider.id == "groq" or not all(type(v) is int and v >= 0 for v in usage.values()):
        return _SLOW  # groq bills whisper audio by a minimum duration; other counts need its validation
    plan = _price_plan(_Identity(model.get_prices(at or datetime.now(tz=UTC))))
    if plan is None or (plan.tiered and "input_tokens" not in usage):
        return _SLOW
    positive = None
    counts: dict[str, int] = {}
    for usage_key, descendants in plan.leaves:
        value = usage.get(usage_key)
        if value is None:
            positive = positive if positive is not None else frozenset(k for k, v in usage.items() if v > 0)
            if not _inferred_zero(usage_key, positive):
                return _SLOW
            value = 0
        leaf = value - sum(counts[d] for d in descendants)
        if leaf < 0:
            return _SLOW
        counts[usage_key] = leaf
    if plan.prices_requests:
        counts["requests"] = 1
    total_input_tokens = usage["input_tokens"] if plan.tiered else 0
    total = Decimal(0)
    for usage_key, per, price in plan.prices:
        total += calc_unit_price(price, counts[usage_key], total_input_tokens, per)
    return total
