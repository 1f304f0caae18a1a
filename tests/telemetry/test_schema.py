"""The record's schema is the one field list: the table, the mapping, the rollups and the loader
follow it, and telemetry's read API is what reads the rows back."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from dashboards import demo, rollups
from dashboards.models import DIMENSIONS
from telemetry import read, schema, services
from telemetry.exporters.elasticsearch import record_template
from telemetry.models import RequestLog
from tests.telemetry.conftest import documents

pytestmark = pytest.mark.django_db


def mapped_type(properties: dict, path: tuple[str, ...]) -> dict:
    for key in path[:-1]:
        properties = properties[key]["properties"]
    return properties[path[-1]]


def test_every_copied_column_is_a_field_of_the_schema_and_back():
    columns = {field.column for field in RequestLog._meta.concrete_fields}
    assert columns == set(schema.COLUMNS)
    for column, field in schema.BY_COLUMN.items():
        model_field = RequestLog._meta.get_field(column)
        assert model_field.null == (field.default is None if field.null is None else field.null), column
        if field.max_length:
            assert model_field.max_length == field.max_length, column


def test_the_elasticsearch_mapping_types_every_field_of_the_schema():
    properties = record_template("logs")["mappings"]["properties"]
    for field in schema.FIELDS:
        mapped = mapped_type(properties, field.path)
        expected = {"type": "object", "enabled": False} if field.es == "disabled" else {"type": field.es}
        assert mapped == expected, field.dotted
    assert mapped_type(properties, ("attributes", "metadata", "deployment")) == {"type": "keyword"}


def test_the_rollups_key_on_the_schemas_dimensions_and_sum_its_measures():
    assert DIMENSIONS == schema.ROLLUP_DIMENSIONS
    assert set(rollups._SOURCE_COLUMNS) == {"timestamp", *schema.ROLLUP_DIMENSIONS, *schema.ROLLUP_MEASURES}
    assert {"latency", "ttfb", "input_tokens", "output_tokens", "cache_read_tokens", "cost"} == set(
        schema.ROLLUP_MEASURES
    )


def test_a_row_copies_the_documents_fields():
    [document] = documents(1)
    document["attributes"]["metadata"]["deployment"] = "openai-eu"
    del document["attributes"]["metadata"]["tokens"]["total"]
    values = schema.row_values(document)
    metadata = document["attributes"]["metadata"]
    assert values["id"] == document["attributes"]["id"]
    assert values["deployment"] == "openai-eu"
    assert values["total_tokens"] == values["input_tokens"] + values["output_tokens"]
    assert values["status"] == metadata["status"] and values["log_data"] is document
    bad = copy.deepcopy(document)
    bad["attributes"]["metadata"]["ttfb"] = "soon"
    with pytest.raises(ValueError, match=r"metadata\.ttfb is not a number"):
        schema.row_values(bad)


def test_demo_documents_load_through_telemetry_once_however_often(db):
    end = datetime.now(UTC)
    plan = demo.plan_demo(org_count=2, count=300, days=2, end=end)
    loaded = list(demo.generate_documents(plan=plan, hours=range(len(plan.counts))))
    assert services.request_logs_load(documents=loaded).stored == len(loaded)
    assert services.request_logs_load(documents=loaded[:50]).stored == 50
    assert RequestLog.objects.count() == len(loaded)
    stored = RequestLog.objects.get(pk=loaded[0]["attributes"]["id"])
    expected = schema.row_values(loaded[0])
    for column in schema.BY_COLUMN:
        assert getattr(stored, column) == expected[column], column
    assert stored.deployment and stored.deployment.startswith(stored.provider)


def test_a_document_that_does_not_fit_is_refused_and_the_rest_stored(db):
    good, bad = documents(2)
    bad["attributes"]["metadata"]["latency"] = "about two seconds"
    result = services.request_logs_load(documents=[good, bad])
    assert result.stored == 1 and list(result.refused) == [bad["attributes"]["id"]]
    assert "metadata.latency is not a number" in result.refused[bad["attributes"]["id"]]


def test_reads_keep_to_the_org_they_name(db):
    at = datetime.now(UTC) - timedelta(minutes=5)
    mine, theirs = documents(1, org_id="acme")[0], documents(1, org_id="globex")[0]
    for document in (mine, theirs):
        document["timestamp"] = at.isoformat()
    services.request_logs_load(documents=[mine, theirs])
    assert read.request_log_get(org_id="acme", request_id=mine["attributes"]["id"]).pk == mine["attributes"]["id"]
    assert read.request_log_get(org_id="acme", request_id=theirs["attributes"]["id"]) is None
    window = type("Window", (), {"since": at - timedelta(hours=1), "until": at + timedelta(hours=1)})
    page = read.request_log_search(org_id="acme", window=window)
    assert [row.pk for row in page.rows] == [mine["attributes"]["id"]]
    assert read.request_log_find(org_ids=["acme"], request_id=theirs["attributes"]["id"]) is None
    assert read.request_log_find(org_ids=None, request_id=theirs["attributes"]["id"]).org_id == "globex"
