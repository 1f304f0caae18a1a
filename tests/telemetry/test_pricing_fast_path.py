"""The precompiled pricing gives exactly genai-prices' own `calc_price` and `extract_usage` results."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from genai_prices import Usage, calc_price
from genai_prices.data_snapshot import get_snapshot

from telemetry import price_plan, pricing

pytestmark = pytest.mark.django_db

AT = datetime(2026, 12, 1, 12, tzinfo=UTC)

USAGES = [
    {"input_tokens": 1_200, "output_tokens": 300},
    {"input_tokens": 105_100, "cache_read_tokens": 100_000, "cache_write_tokens": 5_000, "output_tokens": 2_000},
    {"input_tokens": 6_000, "cache_write_tokens": 5_000, "cache_write_1h_tokens": 2_000, "output_tokens": 10},
    {"input_tokens": 300_000, "output_tokens": 1_000},
    {"input_tokens": 300_000, "cache_read_tokens": 250_000, "output_tokens": 1_000},
    {"input_tokens": 10_000, "cache_read_tokens": 8_000, "output_tokens": 500, "output_reasoning_tokens": 120},
    {"input_tokens": 2_000, "input_audio_tokens": 1_500, "output_tokens": 1_000, "output_audio_tokens": 900},
    {"input_tokens": 2_000, "input_audio_tokens": 1_500, "cache_read_tokens": 1_000, "output_tokens": 1},
    {"input_tokens": 0, "output_tokens": 7},
    {"input_tokens": 10, "cache_read_tokens": 20, "output_tokens": 1},  # invalid: more cached than input
]
MODELS = [
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-sonnet-4-6"),
    ("anthropic", "claude-3-5-haiku-latest"),
    ("anthropic", "claude-opus-4-1"),
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4o-audio-preview"),
    ("openai", "gpt-4.1"),
    ("openai", "o3"),
    ("openai", "gpt-5"),
    ("google", "gemini-2.5-pro"),
    ("deepseek", "deepseek-chat"),
]


def library_total(usage: dict, model: str, provider: str, at: datetime):
    try:
        return calc_price(Usage(**usage), model, provider_id=provider, genai_request_timestamp=at).total_price
    except ValueError as error:
        return type(error)


def fast_total(usage: dict, model: str, provider: str, at: datetime):
    library_provider, library_model = pricing.priced_model(provider, model)
    try:
        return price_plan.total_price(library_model, library_provider, usage, at)
    except ValueError as error:
        return type(error)


@pytest.mark.parametrize(("provider", "model"), MODELS)
def test_the_fast_path_prices_every_usage_exactly_as_calc_price(provider, model):
    library_provider, library_model = pricing.priced_model(provider, model)
    planned = 0
    for usage in USAGES:
        expected = library_total(usage, model, provider, AT)
        assert fast_total(usage, model, provider, AT) == expected, usage
        if expected is not ValueError:
            # a valid usage is priced by the plan, not handed back to genai-prices
            assert price_plan.planned_total(library_model, library_provider, usage, AT) == expected, usage
            planned += 1
    assert planned >= len(USAGES) - 2


@pytest.mark.parametrize(("provider", "model"), [("anthropic", "claude-sonnet-4-5"), ("openai", "gpt-4o")])
def test_request_cost_rounds_the_library_price(provider, model):
    usage = pricing.TokenUsage(input=105_100, output=2_000, details={"cache_read": 100_000, "cache_write": 5_000})
    expected = calc_price(usage.priced_usage(), model, provider_id=provider, genai_request_timestamp=AT)

    assert pricing.request_cost(provider=provider, model=model, at=AT, usage=usage) == float(
        round(expected.total_price, 10)
    )


@pytest.mark.parametrize(
    ("provider", "model", "earlier", "later"),
    [
        # A price introduced on a date
        ("anthropic", "claude-sonnet-4-6", datetime(2026, 3, 12, 23, tzinfo=UTC), datetime(2026, 3, 13, 1, tzinfo=UTC)),
        ("openai", "o3", datetime(2025, 6, 9, tzinfo=UTC), datetime(2025, 6, 11, tzinfo=UTC)),
        # An off-peak price by time of day
        ("deepseek", "deepseek-chat", datetime(2026, 12, 1, 12, tzinfo=UTC), datetime(2026, 12, 1, 20, tzinfo=UTC)),
    ],
)
def test_a_price_that_changes_over_time_is_taken_at_the_request_time(provider, model, earlier, later):
    usage = {"input_tokens": 300_000, "cache_read_tokens": 1_000, "output_tokens": 2_000}

    first = fast_total(usage, model, provider, earlier)
    second = fast_total(usage, model, provider, later)
    again = fast_total(usage, model, provider, earlier)

    assert first == library_total(usage, model, provider, earlier) == again
    assert second == library_total(usage, model, provider, later)
    assert first != second


ANTHROPIC_USAGES = [
    {"input_tokens": 100, "cache_read_input_tokens": 100_000, "cache_creation_input_tokens": 5_000, "output_tokens": 2},
    {"input_tokens": 1, "output_tokens": 2, "cache_creation": {"ephemeral_5m_input_tokens": 3,
                                                               "ephemeral_1h_input_tokens": 4},
     "cache_creation_input_tokens": 7},
    {"input_tokens": 1, "output_tokens": 2, "cache_creation": None, "server_tool_use": {"web_search_requests": 2}},
    {"input_tokens": 1, "output_tokens": 2, "cache_read_input_tokens": None},
    {"input_tokens": 1, "output_tokens": 2.0},
    {"input_tokens": 1, "output_tokens": 2, "cache_read_input_tokens": -5},
    {"input_tokens": 1, "output_tokens": 2, "cache_creation": "bogus"},
]  # fmt: skip
OPENAI_USAGES = [
    {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 2},
     "completion_tokens_details": {"reasoning_tokens": 1, "audio_tokens": 2}},
    {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": None},
    {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": True}},
    {"prompt_tokens": 10, "completion_tokens": 5, "completion_tokens_details": []},
]  # fmt: skip
RESPONSES_USAGES = [
    {"input_tokens": 9, "output_tokens": 4, "input_tokens_details": {"cached_tokens": 2},
     "output_tokens_details": {"reasoning_tokens": 1}},
]  # fmt: skip


def library_extract(provider_id: str, flavor: str, usage: dict):
    provider = get_snapshot().find_provider(None, provider_id, None)
    try:
        return provider.extract_usage({"usage": usage}, api_flavor=flavor)[1].__dict__
    except ValueError as error:
        return type(error)


def fast_extract(provider_id: str, flavor: str, usage: dict):
    provider = get_snapshot().find_provider(None, provider_id, None)
    try:
        return price_plan.extract_usage(provider, usage, flavor)
    except ValueError as error:
        return type(error)


@pytest.mark.parametrize(
    ("provider_id", "flavor", "usage"),
    [("anthropic", "default", u) for u in ANTHROPIC_USAGES]
    + [("openai", "chat", u) for u in OPENAI_USAGES]
    + [("openai", "responses", u) for u in RESPONSES_USAGES],
)
def test_the_fast_extraction_reads_usage_exactly_as_genai_prices(provider_id, flavor, usage):
    expected = library_extract(provider_id, flavor, usage)

    assert fast_extract(provider_id, flavor, usage) == expected
    if usage is ANTHROPIC_USAGES[0] or usage is OPENAI_USAGES[0] or usage is RESPONSES_USAGES[0]:
        extractor = next(e for e in get_snapshot().find_provider(None, provider_id, None).extractors
                         if e.api_flavor == flavor)  # fmt: skip
        plan = price_plan._extraction_plan(price_plan._Identity(extractor))
        assert price_plan._plain_extract(plan, usage) == expected


def test_random_unknown_model_names_grow_no_cache_beyond_its_bound():
    snapshot = get_snapshot()
    pricing.priced_model.cache_clear()
    before = len(snapshot._provider_cache) + len(snapshot._provider_misses) + len(snapshot._lookup_cache)

    for _ in range(300):
        assert pricing.priced_model("openai", f"unknown-{uuid.uuid4().hex}") is None
        pricing.priced_model("openai", f"gpt-4o-{uuid.uuid4().hex}")

    after = len(snapshot._provider_cache) + len(snapshot._provider_misses) + len(snapshot._lookup_cache)
    assert after == before
    assert pricing.priced_model.cache_info().maxsize is not None
    assert pricing.priced_model.cache_info().currsize <= pricing.priced_model.cache_info().maxsize
    assert price_plan._price_plan.cache_info().maxsize is not None
    assert price_plan._inferred_zero.cache_info().maxsize is not None
