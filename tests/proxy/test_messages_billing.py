"""What a translated Messages call is billed: the OpenAI provider's own counts, cache reads at their own rate.

The adapter's response hook and the stream transform run on a real request record, which is then
priced as the export pipeline prices it. The provider server reports no cached tokens, so the
provider's answers here are written out as OpenAI sends them.
"""

import httpx
import orjson
import pytest
from genai_prices import Usage, calc_price

from proxy.errors import ErrorFormat
from proxy.providers.adapters import MessagesToChatAdapter
from proxy.providers.base import Exchange
from proxy.providers.registry import PROVIDERS
from proxy.streaming import ChatChunksToAnthropic
from telemetry.record import RequestRecord

pytestmark = pytest.mark.django_db

USAGE = {
    "prompt_tokens": 12_000,
    "completion_tokens": 800,
    "total_tokens": 12_800,
    "prompt_tokens_details": {"cached_tokens": 10_240},
    "completion_tokens_details": {"reasoning_tokens": 0},
}

# The record keeps what OpenAI reports beyond Anthropic's fields (reasoning tokens) too.
TOKENS = {"input": 12_000, "output": 800, "total": 12_800, "cache_read": 10_240, "reasoning": 0}


def messages_record(*, stream: bool) -> RequestRecord:
    record = RequestRecord(path="/v1/messages", method="POST")
    record.provider, record.model, record.upstream_model, record.stream = "openai", "gpt-4o-mini", "gpt-4o-mini", stream
    record.request_json = {"model": "gpt-4o-mini", "max_tokens": 1000, "messages": [{"role": "user", "content": "x"}]}
    record.finish(200)
    return record


def expected_cost() -> float:
    usage = Usage(input_tokens=12_000, cache_read_tokens=10_240, output_tokens=800)
    return float(calc_price(usage, "gpt-4o-mini", provider_id="openai").total_price)


def metadata_of(record: RequestRecord) -> dict:
    return record.to_document()["attributes"]["metadata"]


def test_a_plain_answer_is_billed_by_the_providers_counts_with_cache_reads():
    record = messages_record(stream=False)
    adapter = MessagesToChatAdapter(
        PROVIDERS["openai"],
        api_key="",
        base_url="http://127.0.0.1:9",
        exchange=Exchange(record, {}, {}, "", ErrorFormat.ANTHROPIC),
    )
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": USAGE,
    }
    answer = adapter.translated_response(completion, httpx.Response(200))
    record.answered(json=answer)
    assert answer["usage"] == {
        "input_tokens": 1_760,
        "output_tokens": 800,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 10_240,
    }

    metadata = metadata_of(record)
    assert metadata["tokens"] == TOKENS
    assert metadata["cost"] == pytest.approx(expected_cost())
    # Every input token at the uncached rate would cost clearly more.
    assert metadata["cost"] < (12_000 * 0.15 + 800 * 0.60) / 1_000_000 * 0.8


def sse(payload: dict) -> bytes:
    return b"data: " + orjson.dumps(payload)


def test_a_streamed_answer_is_billed_by_the_providers_usage_chunk():
    record = messages_record(stream=True)
    record.stream_events = []
    transform = ChatChunksToAnthropic(model="gpt-4o-mini", stop=[])
    record.stream_dialect = transform.dialect
    base = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "model": "gpt-4o-mini"}
    upstream = [
        sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}], "usage": None}),
        sse({**base, "choices": [{"index": 0, "delta": {"content": "Hi"}}], "usage": None}),
        sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None}),
        sse({**base, "choices": [], "usage": USAGE}),
        b"data: [DONE]",
    ]
    sent = b"".join(transform(event, record) or b"" for event in upstream) + transform.finish(record)
    assert sent.startswith(b"event: message_start\n")
    assert b'"cache_read_input_tokens":10240' in sent

    document = record.to_document()
    metadata = document["attributes"]["metadata"]
    assert document["attributes"]["response"]["content"] == [{"type": "text", "text": "Hi"}]
    assert metadata["tokens"] == TOKENS
    assert metadata["cost"] == pytest.approx(expected_cost())
    assert metadata["usage_estimated"] is False


def test_a_stream_without_the_usage_chunk_is_estimated_not_free():
    record = messages_record(stream=True)
    record.stream_events = []
    transform = ChatChunksToAnthropic(model="gpt-4o-mini", stop=[])
    record.stream_dialect = transform.dialect
    chunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": "A fairly long answer."}}]}
    transform(sse(chunk), record)
    transform.finish(record)  # the client left before the provider's counts came

    metadata = metadata_of(record)
    assert metadata["usage_estimated"] is True
    assert metadata["tokens"]["output"] > 0 and metadata["cost"] > 0
