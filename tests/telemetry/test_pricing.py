"""Every token priced as genai-prices prices it: cache reads and writes, audio, reasoning, long context."""

from __future__ import annotations

import json

import pytest
from genai_prices import Usage, calc_price

from telemetry.record import RequestRecord
from tests.telemetry.conftest import plain_record

pytestmark = pytest.mark.django_db


def library_price(model: str, provider: str, **usage) -> float:
    return float(round(calc_price(Usage(**usage), model, provider_id=provider).total_price, 10))


def anthropic_record(usage: dict, model: str = "claude-sonnet-4-5") -> RequestRecord:
    record = plain_record(provider="anthropic", path="/v1/messages")
    record.model = model
    record.response_json = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "Paris."}],
        "usage": usage,
    }
    return record


def metadata_of(record: RequestRecord) -> dict:
    return record.to_document()["attributes"]["metadata"]


def test_anthropic_cache_reads_and_writes_are_priced_at_their_own_rates():
    record = anthropic_record(
        {
            "input_tokens": 100,
            "cache_read_input_tokens": 100_000,
            "cache_creation_input_tokens": 5_000,
            "output_tokens": 2_000,
        }
    )

    metadata = metadata_of(record)

    expected = library_price(
        "claude-sonnet-4-5",
        "anthropic",
        input_tokens=105_100,
        cache_read_tokens=100_000,
        cache_write_tokens=5_000,
        output_tokens=2_000,
    )
    assert metadata["cost"] == pytest.approx(expected)
    # The flat input rate on every token would be several times that.
    assert metadata["cost"] < (105_100 * 3 + 2_000 * 15) / 1_000_000 / 2
    assert metadata["tokens"] == {
        "input": 105_100,
        "output": 2_000,
        "total": 107_100,
        "cache_read": 100_000,
        "cache_write": 5_000,
    }
    assert metadata["cost_unknown"] is False


def test_openai_cached_prompt_and_reasoning_tokens_are_kept_and_priced():
    record = plain_record(provider="openai")
    record.model = "gpt-4o"
    record.response_json["usage"] = {
        "prompt_tokens": 10_000,
        "completion_tokens": 500,
        "total_tokens": 10_500,
        "prompt_tokens_details": {"cached_tokens": 8_000},
        "completion_tokens_details": {"reasoning_tokens": 120},
    }

    metadata = metadata_of(record)

    assert metadata["tokens"] == {
        "input": 10_000,
        "output": 500,
        "total": 10_500,
        "cache_read": 8_000,
        "reasoning": 120,
    }
    expected = library_price(
        "gpt-4o", "openai", input_tokens=10_000, cache_read_tokens=8_000, output_tokens=500, output_reasoning_tokens=120
    )
    assert metadata["cost"] == pytest.approx(expected)


def test_audio_tokens_are_priced_at_the_audio_rate():
    record = plain_record(provider="openai")
    record.model = "gpt-4o-audio-preview"
    record.response_json["usage"] = {
        "prompt_tokens": 2_000,
        "completion_tokens": 1_000,
        "total_tokens": 3_000,
        "prompt_tokens_details": {"audio_tokens": 1_500},
        "completion_tokens_details": {"audio_tokens": 900},
    }

    metadata = metadata_of(record)

    expected = library_price(
        "gpt-4o-audio-preview",
        "openai",
        input_tokens=2_000,
        input_audio_tokens=1_500,
        output_tokens=1_000,
        output_audio_tokens=900,
    )
    assert metadata["cost"] == pytest.approx(expected)
    assert metadata["tokens"]["input_audio"] == 1_500


def test_long_context_requests_pay_the_tiered_price():
    record = anthropic_record({"input_tokens": 300_000, "output_tokens": 1_000})

    metadata = metadata_of(record)

    expected = library_price("claude-sonnet-4-5", "anthropic", input_tokens=300_000, output_tokens=1_000)
    assert metadata["cost"] == pytest.approx(expected)
    assert metadata["cost"] > (300_000 * 3 + 1_000 * 15) / 1_000_000


def test_anthropic_streams_keep_cache_counts():
    record = anthropic_record({})
    record.stream = True
    record.stream_dialect = "anthropic"
    record.response_json = None
    record.stream_events = []
    start_usage = {"input_tokens": 20, "cache_read_input_tokens": 50_000, "cache_creation_input_tokens": 0}
    events = [
        ("message_start", {"type": "message_start", "message": {"id": "msg_2", "model": "claude-sonnet-4-5",
                                                                "usage": {**start_usage, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hi"}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                           "usage": {"output_tokens": 300}}),
    ]  # fmt: skip
    for name, payload in events:
        record.capture_stream_event(f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())

    metadata = metadata_of(record)

    assert metadata["tokens"]["input"] == 50_020
    assert metadata["tokens"]["cache_read"] == 50_000
    assert metadata["tokens"]["output"] == 300
    expected = library_price(
        "claude-sonnet-4-5",
        "anthropic",
        input_tokens=50_020,
        cache_read_tokens=50_000,
        cache_write_tokens=0,
        output_tokens=300,
    )
    assert metadata["cost"] == pytest.approx(expected)


def test_a_model_without_a_known_price_is_flagged_not_billed_zero():
    record = plain_record(provider="openai")
    record.model = "totally-unknown-model-9000"

    metadata = metadata_of(record)

    assert metadata["cost"] is None
    assert metadata["cost_unknown"] is True


def test_a_request_without_tokens_costs_nothing_and_is_not_flagged():
    record = plain_record(provider="openai")
    record.response_json = {"error": {"message": "bad", "type": "invalid_request_error"}}

    metadata = metadata_of(record)

    assert metadata["cost"] == 0.0
    assert metadata["cost_unknown"] is False
