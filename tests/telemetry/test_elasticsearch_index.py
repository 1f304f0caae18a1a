"""Elasticsearch as its users query it: one document per request, an alias named as the index, repricing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from telemetry import recomputation, services
from telemetry.exporters.elasticsearch import SEARCH_FIELDS, ElasticsearchExporter
from telemetry.models import CostRecomputation, PriceOverride, RequestLog
from tests.telemetry.conftest import (
    ES_INDEX,
    configure_exporters,
    documents,
    es_hits,
    ids_of,
    plain_record,
    requires_postgres,
)


@pytest.fixture
def exporter(osmem_clone):
    exporter = ElasticsearchExporter("elasticsearch", url=osmem_clone.url, plain_json=True)
    yield exporter
    exporter.shutdown()


def search(exporter, index: str, **body) -> list[dict]:
    exporter.client.indices.refresh(index=f"{ES_INDEX}*")
    return exporter.client.search(index=index, size=100, **body)["hits"]["hits"]


def test_each_request_is_one_document_under_the_index_pattern(exporter):
    batch = documents(3)
    assert len(exporter.export(batch).succeeded) == 3

    hits = search(exporter, f"{ES_INDEX}*", query={"match_all": {}})

    assert sorted(hit["_id"] for hit in hits) == sorted(ids_of(batch))
    by_id = {doc["attributes"]["id"]: doc for doc in batch}
    assert all(hit["_source"] == by_id[hit["_id"]] for hit in hits)


def test_the_index_name_itself_searches_every_day(exporter):
    today, older = plain_record().to_document(), plain_record().to_document()
    older["timestamp"] = "2025-01-01T10:00:00.000Z"
    assert len(exporter.export([today, older]).succeeded) == 2

    hits = search(exporter, ES_INDEX, query={"match_all": {}})

    assert sorted(hit["_id"] for hit in hits) == sorted(ids_of([today, older]))
    aliases = exporter.client.indices.get_alias(index=f"{ES_INDEX}-*")
    assert all(ES_INDEX in entry["aliases"] for entry in aliases.values())
    assert len(aliases) == 2


def test_payload_text_is_searchable_outside_the_index_pattern(exporter):
    document = plain_record(
        request_json={"model": "m", "messages": [{"role": "user", "content": "tell me about marmalade"}]}
    ).to_document()
    exporter.export([document])
    exporter.client.indices.refresh(index=f"{exporter.search_index}-*")
    query = {"multi_match": {"query": "marmalade", "fields": list(SEARCH_FIELDS)}}

    found = search(exporter, f"{exporter.search_index}-*", query=query)

    assert [hit["_id"] for hit in found] == [document["attributes"]["id"]]
    assert not exporter.search_index.startswith(ES_INDEX)
    assert [hit["_source"] for hit in search(exporter, f"{ES_INDEX}*", query={"match_all": {}})] == [document]


def test_indices_from_before_get_the_alias_and_companions_are_removed(exporter):
    exporter.client.indices.create(index=f"{ES_INDEX}-2024.12.31")
    exporter.client.index(index=f"{ES_INDEX}_text-2024.12.31", id="old", document={"attributes": {"id": "old"}})

    exporter.export(documents(1))

    assert f"{ES_INDEX}-2024.12.31" in exporter.client.indices.get_alias(name=ES_INDEX)
    assert not exporter.client.indices.get(index=f"{ES_INDEX}_text-*", allow_no_indices=True)


@requires_postgres
def test_a_recomputation_reprices_the_elasticsearch_copies_too(
    direct_exporters, osmem_clone, settings, django_capture_on_commit_callbacks
):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    configure_exporters(es_url=osmem_clone.url)
    batch = documents(4, provider="openai")
    batch[0]["attributes"]["request"]["messages"][0]["content"] = "a question about quinces"
    for name in ("postgres", "elasticsearch"):
        assert services.batch_export(exporter_name=name, documents=batch).exported == 4
    now = datetime.now(UTC)
    PriceOverride.objects.create(
        provider="openai",
        model="gpt-4o-mini",
        input_per_mtok=Decimal("100"),
        output_per_mtok=Decimal("200"),
        valid_from=now - timedelta(days=1),
    )

    with django_capture_on_commit_callbacks(execute=True):
        job = recomputation.cost_recomputation_start(
            provider="openai", model="gpt-4o-mini", since=now.date(), until=now.date()
        )

    job.refresh_from_db()
    assert (job.status, job.changed) == (CostRecomputation.Status.DONE, 4)
    expected = float((Decimal("100") * 14 + Decimal("200") * 2) / 1_000_000)
    hits = es_hits(osmem_clone.url, ids_of(batch))
    for document in batch:
        row = RequestLog.objects.get(pk=document["attributes"]["id"])
        assert float(row.cost) == pytest.approx(expected)
        (stored,) = hits[document["attributes"]["id"]]
        assert stored == row.log_data
        assert stored["attributes"]["metadata"]["cost"] == pytest.approx(expected)
    # Indexed again whole: the text is still found.
    reader = ElasticsearchExporter("reader", url=osmem_clone.url, plain_json=True)
    reader.client.indices.refresh(index=f"{reader.search_index}-*")
    query = {"multi_match": {"query": "quinces", "fields": list(SEARCH_FIELDS)}}
    found = search(reader, f"{reader.search_index}-*", query=query)
    reader.shutdown()
    assert [hit["_id"] for hit in found] == [batch[0]["attributes"]["id"]]


def test_an_index_already_named_like_the_alias_does_not_block_the_records(exporter):
    exporter.client.indices.create(index=ES_INDEX)
    batch = documents(2)

    assert len(exporter.export(batch).succeeded) == 2

    assert sorted(hit["_id"] for hit in search(exporter, f"{ES_INDEX}-*", query={"match_all": {}})) == sorted(
        ids_of(batch)
    )
