"""Explorer search through the Elasticsearch exporter's text indices (osmem-server stands in)."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from telemetry.exporters.elasticsearch import ElasticsearchExporter
from telemetry.read import search
from tests.dashboards.conftest import export_logs, make_log

pytestmark = pytest.mark.django_db


@pytest.fixture
def indexed(osmem_clone, monkeypatch):
    exporter = ElasticsearchExporter("elasticsearch", url=osmem_clone.url, plain_json=True)
    monkeypatch.setattr(search, "search_exporter", lambda: exporter)

    def index(logs):
        export_logs(logs)
        result = exporter.export([log.log_data for log in logs])
        assert not result.failed
        exporter.client.indices.refresh(index=f"{exporter.index}*")
        return logs

    yield index
    exporter.shutdown()


def test_search_goes_through_the_index_and_keeps_to_the_org(tenancy, client_for, indexed):
    now = timezone.now()
    parcel, _password_reset = indexed(
        [
            make_log(org="acme", question="Where is my parcel?", at=now - timedelta(hours=1)),
            make_log(org="acme", question="Reset my password", at=now - timedelta(hours=2)),
        ]
    )
    indexed([make_log(org="globex", question="Where is my parcel?", at=now - timedelta(hours=1))])
    client = client_for(tenancy.member)
    response = client.get(reverse("dashboards:logs", args=["acme"]), {"q": "parcel", "range": "24h"})
    assert [log.pk for log in response.context["log_page"].rows] == [parcel.pk]
    response = client.get(reverse("dashboards:logs", args=["acme"]), {"q": "parcel", "range": "24h", "user": "nobody"})
    assert response.context["log_page"].rows == []


def test_search_through_the_index_pages_on(tenancy, client_for, indexed, monkeypatch):
    monkeypatch.setattr(search, "SEARCH_INDEX_HITS", 2)
    now = timezone.now()
    logs = indexed(
        [make_log(org="acme", answer="refunds take five days", at=now - timedelta(minutes=9 * i)) for i in range(5)]
    )
    client = client_for(tenancy.member)
    url = reverse("dashboards:logs", args=["acme"]) + "?range=24h&q=refunds"
    seen = []
    while url:
        response = client.get(url)
        seen += [log.pk for log in response.context["log_page"].rows]
        url = response.context["next_url"]
    assert seen == [log.pk for log in logs]
