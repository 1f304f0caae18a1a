"""No poison record: text PostgreSQL refuses, oversized payloads and oversized batches are all stored."""

from __future__ import annotations

import asyncio
import copy
import json

import orjson
from django.test import override_settings

from telemetry import services
from telemetry.handoff import HandoffPipeline
from telemetry.models import DeadLetter, RequestLog
from tests.telemetry.conftest import (
    configure_exporters,
    documents,
    es_hits,
    ids_of,
    plain_record,
    requires_postgres,
    streaming_record,
)

REPLACEMENT = "\N{REPLACEMENT CHARACTER}"


class RecordingPublisher:
    """Keeps each publish call's documents, to see how the hand-off cut them up."""

    calls: list[list[dict]] = []

    def publish(self, documents: list[dict]) -> None:
        type(self).calls.append(list(documents))


@requires_postgres
def test_nul_characters_become_replacement_characters_and_the_record_is_stored(direct_exporters):
    configure_exporters()
    batch = documents(3, provider="openai")
    poisoned = batch[1]
    poisoned["attributes"]["request"]["messages"][0]["content"] = "before\u0000after"
    poisoned["attributes"]["user_id"] = "user\u0000-1"

    outcome = services.batch_export(exporter_name="postgres", documents=batch)

    assert outcome.exported == 3
    assert not DeadLetter.objects.exists()
    row = RequestLog.objects.get(pk=poisoned["attributes"]["id"])
    assert row.log_data["attributes"]["request"]["messages"][0]["content"] == f"before{REPLACEMENT}after"
    assert row.user_id == f"user{REPLACEMENT}-1"
    assert row.cost is not None and row.cost > 0


@requires_postgres
def test_a_lone_surrogate_does_not_take_its_batch_down(direct_exporters):
    configure_exporters()
    batch = documents(3)
    # What Python's json module makes of "\ud83d" without its pair.
    batch[0]["attributes"]["request"]["messages"][0]["content"] = json.loads('"half an emoji \\ud83d"')

    outcome = services.batch_export(exporter_name="postgres", documents=batch)

    assert outcome.exported == 3
    assert not DeadLetter.objects.exists()
    stored = RequestLog.objects.get(pk=batch[0]["attributes"]["id"]).log_data
    assert stored["attributes"]["request"]["messages"][0]["content"] == f"half an emoji {REPLACEMENT}"


def test_the_record_itself_carries_only_storable_text():
    record = plain_record(provider="openai")
    record.request_json["messages"][0]["content"] = "a\u0000b" + json.loads('"\\udc00"')
    record.request_json["seed"] = 2**70

    document = record.to_document()

    orjson.dumps(document)  # no longer refused by any encoder
    assert document["attributes"]["request"]["messages"][0]["content"] == f"a{REPLACEMENT}b{REPLACEMENT}"
    assert document["attributes"]["request"]["seed"] == str(2**70)


@requires_postgres
def test_a_refused_document_is_dead_lettered_alone(direct_exporters, osmem_clone):
    configure_exporters(es_url=osmem_clone.url)
    batch = documents(5)
    refused = copy.deepcopy(batch[2])
    refused["attributes"]["metadata"]["latency"] = "slow"
    batch[2] = refused

    for name in ("postgres", "elasticsearch"):
        outcome = services.batch_export(exporter_name=name, documents=batch)
        assert (outcome.exported, outcome.dead_lettered) == (4, 1), name

    good = [rid for rid in ids_of(batch) if rid != refused["attributes"]["id"]]
    assert set(RequestLog.objects.values_list("pk", flat=True)) == set(good)
    assert set(es_hits(osmem_clone.url, ids_of(batch))) == set(good)
    assert sorted(DeadLetter.objects.values_list("exporter", "record_id")) == [
        ("elasticsearch", refused["attributes"]["id"]),
        ("postgres", refused["attributes"]["id"]),
    ]


@requires_postgres
def test_an_oversized_request_is_truncated_and_marked_not_dropped(direct_exporters, settings):
    configure_exporters()
    record = plain_record(provider="openai")
    long_prompt = "lorem ipsum " * 300_000  # 3.6 MB
    record.request_json["messages"].append({"role": "user", "content": long_prompt})

    document = record.to_document()

    assert len(orjson.dumps(document)) <= settings.TELEMETRY_MAX_DOCUMENT_BYTES
    metadata = document["attributes"]["metadata"]
    assert metadata["truncated_fields"] == ["attributes.request"]
    messages = document["attributes"]["request"]["messages"]
    assert messages[1]["content"].startswith("lorem ipsum") and messages[1]["content"].endswith("[truncated]")
    assert messages[0]["content"].startswith("What is the capital of France?")
    assert metadata["cost"] > 0
    assert services.batch_export(exporter_name="postgres", documents=[document]).exported == 1
    assert RequestLog.objects.get(pk=document["attributes"]["id"]).log_data == document


def test_oversized_streams_lose_chunks_first(settings):
    settings.TELEMETRY_MAX_DOCUMENT_BYTES = 2048
    record = streaming_record()
    for _ in range(40):
        record.capture_stream_event(b'data: {"choices": [{"index": 0, "delta": {"content": "more words"}}]}\n\n')

    document = record.to_document()

    assert len(orjson.dumps(document)) <= 2048
    assert document["attributes"]["metadata"]["truncated_fields"][0] == "attributes.response.streamed_data"
    assert document["attributes"]["metadata"]["tokens"]["total"] == 16


def test_the_handoff_publishes_in_byte_bounded_chunks(settings):
    settings.TELEMETRY_PUBLISHER = f"{__name__}.RecordingPublisher"
    settings.TELEMETRY_PUBLISH_MAX_BYTES = 64 * 1024
    RecordingPublisher.calls = []
    pipeline = HandoffPipeline()
    records = []
    for _ in range(30):
        record = plain_record()
        record.request_json["messages"][0]["content"] += " padding" * 1_000  # about 8 KB each
        records.append(record)

    async def serve():
        # Submitted from the event loop, as requests do: the flusher sends them together.
        for record in records:
            pipeline.submit(record)
        await pipeline.aclose()

    asyncio.run(serve())

    calls = RecordingPublisher.calls
    assert len(calls) > 1
    assert all(sum(len(orjson.dumps(doc)) + 1 for doc in call) <= 64 * 1024 for call in calls)
    assert [doc["attributes"]["id"] for call in calls for doc in call] == [record.id for record in records]


class RecordingEncodedPublisher:
    """A publisher that takes the hand-off's JSON of each document, as the Celery one does."""

    takes_encoded = True
    calls: list[tuple[list[dict], list[bytes]]] = []

    def publish(self, documents: list[dict], encoded: list[bytes] | None = None) -> None:
        type(self).calls.append((list(documents), list(encoded)))


def test_the_handoff_publishes_each_documents_json_as_it_was_encoded_and_sizes_chunks_by_it(settings):
    settings.TELEMETRY_PUBLISHER = f"{__name__}.RecordingEncodedPublisher"
    settings.TELEMETRY_PUBLISH_MAX_BYTES = 64 * 1024
    RecordingEncodedPublisher.calls = []
    pipeline = HandoffPipeline()
    records = []
    for index in range(30):
        record = plain_record()
        record.request_json["messages"][0]["content"] += " padding" * 1_000  # about 8 KB each
        if index == 7:  # one that must be cleaned: its published JSON is that of the cleaned document
            record.request_json["messages"][0]["content"] += "\u0000"
        records.append(record)

    async def serve():
        for record in records:
            pipeline.submit(record)
        await pipeline.aclose()

    asyncio.run(serve())

    calls = RecordingEncodedPublisher.calls
    assert len(calls) > 1
    for documents_published, encoded in calls:
        assert [orjson.loads(data) for data in encoded] == documents_published
        assert sum(len(data) + 1 for data in encoded) <= 64 * 1024
    published = [doc for call, _ in calls for doc in call]
    assert [doc["attributes"]["id"] for doc in published] == [record.id for record in records]
    assert REPLACEMENT in published[7]["attributes"]["request"]["messages"][0]["content"]


def test_a_document_encoded_for_storing_is_the_json_of_the_storable_document():
    record = plain_record()
    record.request_json["messages"][0]["content"] = "nul\u0000" + "x" * 4096

    with override_settings(TELEMETRY_MAX_DOCUMENT_BYTES=2048):
        document, encoded = record.to_encoded_document()

    assert orjson.loads(encoded) == document
    assert len(encoded) <= 2048
    assert document["attributes"]["metadata"]["truncated_fields"]


def test_a_payload_nested_past_what_json_writers_accept_is_replaced_and_marked():
    from telemetry import storable

    record = plain_record(provider="openai")
    deep: list = []
    for _ in range(400):
        deep = [deep]
    record.request_json = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": deep}]}

    document = record.to_document()

    orjson.dumps(document)
    assert document["attributes"]["request"] == storable.UNSTORABLE_MARK
    assert document["attributes"]["metadata"]["truncated_fields"] == ["attributes.request"]
    assert document["attributes"]["id"] == record.id
