"""Pricing cost per request record: reading the usage and pricing it, as `to_document()` does.

    .venv/bin/python bench/pricing_bench.py [--records 2000] [--repeat 3]

Prices a mix of Anthropic and OpenAI usages (cache reads and writes, audio, reasoning, long
context, an unknown model) with overrides kept empty, and prints the best µs per record:
for the pricing alone, and for whole `RequestRecord.to_document()` calls.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

CASES = [
    ("anthropic", "claude-sonnet-4-5", True, {"input_tokens": 100, "cache_read_input_tokens": 100_000,
                                              "cache_creation_input_tokens": 5_000, "output_tokens": 2_000}),
    ("anthropic", "claude-sonnet-4-5", True, {"input_tokens": 300_000, "output_tokens": 1_000}),
    ("anthropic", "claude-3-5-haiku-latest", True, {"input_tokens": 1_200, "output_tokens": 300}),
    ("openai", "gpt-4o", False, {"prompt_tokens": 10_000, "completion_tokens": 500, "total_tokens": 10_500,
                                 "prompt_tokens_details": {"cached_tokens": 8_000},
                                 "completion_tokens_details": {"reasoning_tokens": 120}}),
    ("openai", "gpt-4o-mini", False, {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28}),
    ("openai", "gpt-4o-audio-preview", False, {"prompt_tokens": 2_000, "completion_tokens": 1_000,
                                               "prompt_tokens_details": {"audio_tokens": 1_500},
                                               "completion_tokens_details": {"audio_tokens": 900}}),
    ("openai", "gpt-4.1", False, {"input_tokens": 900, "output_tokens": 200,
                                  "input_tokens_details": {"cached_tokens": 100}}),
    ("openai", "totally-unknown-model-9000", False, {"prompt_tokens": 20, "completion_tokens": 8}),
]  # fmt: skip


def price_all(pricing, records: int) -> None:
    at = datetime(2026, 12, 1, 12, tzinfo=UTC)
    for index in range(records):
        provider, model, anthropic, usage = CASES[index % len(CASES)]
        tokens = pricing.token_usage(usage, anthropic=anthropic)
        pricing.request_cost(provider=provider, model=model, at=at, usage=tokens)


def document_all(record_class, records: int) -> None:
    for index in range(records):
        provider, model, anthropic, usage = CASES[index % len(CASES)]
        record = record_class(path="/v1/messages" if anthropic else "/v1/chat/completions", method="POST")
        record.provider, record.model, record.started_at = provider, model, 1_796_126_400.0
        record.request_json = {"model": model, "messages": [{"role": "user", "content": "Hi"}]}
        record.response_json = {"id": "r1", "model": model, "usage": usage}
        record.to_document()


def best_us(run, records: int, repeat: int) -> float:
    run(len(CASES))  # warm the lookups, as a running exporter has them
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run(records)
        best = min(best, time.perf_counter() - started)
    return best / records * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import django

    django.setup()
    from telemetry import pricing
    from telemetry.record import RequestRecord

    pricing._overrides_loaded_at = float("inf")  # no database: an empty override table, never reloaded
    priced = best_us(lambda n: price_all(pricing, n), args.records, args.repeat)
    documented = best_us(lambda n: document_all(RequestRecord, n), args.records, args.repeat)
    print(f"pricing: {priced:.1f} µs per record, to_document: {documented:.1f} µs per record", end=" ")
    print(f"(best of {args.repeat}, {args.records} records)")


if __name__ == "__main__":
    main()
