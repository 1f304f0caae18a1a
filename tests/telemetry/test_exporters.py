"""The exporters, settings and dead letters, exercised in-process against real PostgreSQL and osmem."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import connection
from django.urls import reverse
from prometheus_client import REGISTRY

from telemetry import selectors, services, tasks
from telemetry.exporters import ExporterConfig, build_exporter, exporters
from telemetry.exporters.base import Exporter
from telemetry.exporters.elasticsearch import ElasticsearchExporter
from telemetry.exporters.postgres import PostgresExporter
from telemetry.models import DeadLetter, ExporterSetting, RequestLog
from tests.telemetry.conftest import (
    configure_exporters,
    documents,
    es_has_exactly,
    es_hits,
    hook_counts,
    ids_of,
    plain_record,
    requires_postgres,
    streaming_record,
)

requires_sqlite = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="the embedded mode's SQLite path (run without DATABASE_URL)"
)


def poisoned(document: dict) -> dict:
    bad = copy.deepcopy(document)
    bad["attributes"]["metadata"]["latency"] = "about two seconds"
    return bad


def sample(name: str, labels: dict) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- Exact documents, idempotence --------------------------------------------------


@requires_postgres
def test_postgres_and_elasticsearch_store_the_exact_documents(direct_exporters, osmem_clone):
    configure_exporters(es_url=osmem_clone.url)
    plain = plain_record(provider="openai").to_document()
    streamed = streaming_record().to_document()
    assert streamed["attributes"]["response"]["streamed_data"]

    for name in ("postgres", "elasticsearch"):
        outcome = services.batch_export(exporter_name=name, documents=[plain, streamed])
        assert outcome.exported == 2

    for document in (plain, streamed):
        row = RequestLog.objects.get(pk=document["attributes"]["id"])
        assert row.log_data == document
        assert row.org_id == "acme"
        assert row.stream is document["attributes"]["metadata"]["stream"]
        assert row.total_tokens == 16
        assert row.latency == document["attributes"]["metadata"]["latency"]
    hits = es_hits(osmem_clone.url, ids_of([plain, streamed]))
    assert hits[plain["attributes"]["id"]] == [plain]
    assert hits[streamed["attributes"]["id"]] == [streamed]
    assert RequestLog.objects.get(pk=plain["attributes"]["id"]).cost is not None


@requires_postgres
def test_the_same_batch_exported_twice_is_stored_once(direct_exporters, osmem_clone):
    configure_exporters(es_url=osmem_clone.url)
    batch = documents(30)
    for _ in range(2):
        for name in ("postgres", "elasticsearch"):
            services.batch_export(exporter_name=name, documents=batch)

    ids = ids_of(batch)
    assert RequestLog.objects.filter(pk__in=ids).count() == 30
    # The after-insert hook saw each row once: the second export inserted nothing.
    assert hook_counts(ids) == {rid: 1 for rid in ids}
    assert es_has_exactly(osmem_clone.url, ids)


@requires_postgres
def test_a_partly_stored_batch_adds_only_the_missing_records(direct_exporters):
    configure_exporters()
    batch = documents(10)
    services.batch_export(exporter_name="postgres", documents=batch[2:6])

    outcome = services.batch_export(exporter_name="postgres", documents=batch)

    assert outcome.exported == 10
    ids = ids_of(batch)
    assert RequestLog.objects.filter(pk__in=ids).count() == 10
    assert hook_counts(ids) == {rid: 1 for rid in ids}


@requires_postgres
def test_content_is_searchable_without_changing_the_stored_record(direct_exporters, osmem_clone):
    exporter = ElasticsearchExporter("elasticsearch", url=osmem_clone.url, plain_json=True)
    document = plain_record(
        request_json={"model": "m", "messages": [{"role": "user", "content": "tell me about marmalade"}]}
    ).to_document()
    assert exporter.export([document]).succeeded == [document["attributes"]["id"]]
    client = exporter.client
    client.indices.refresh(index=f"{exporter.search_index}-*")
    found = client.search(
        index=f"{exporter.search_index}-*",
        query={
            "simple_query_string": {"query": "marmalade", "fields": ["attributes.request*", "attributes.response*"]}
        },
    )
    assert [hit["_source"]["attributes"]["id"] for hit in found["hits"]["hits"]] == [document["attributes"]["id"]]
    assert es_hits(osmem_clone.url, [document["attributes"]["id"]])[document["attributes"]["id"]] == [document]
    exporter.shutdown()


# --- Failures --------------------------------------------------------------------------


@requires_postgres
def test_a_refused_record_becomes_a_dead_letter_and_the_rest_is_stored(direct_exporters, osmem_clone):
    configure_exporters(es_url=osmem_clone.url)
    batch = documents(9)
    poison = poisoned(plain_record().to_document())
    before = sample("telemetry_dead_letters_total", {"exporter": "elasticsearch"})

    for name in ("postgres", "elasticsearch"):
        outcome = services.batch_export(exporter_name=name, documents=[*batch[:4], poison, *batch[4:]])
        assert (outcome.exported, outcome.dead_lettered) == (9, 1)

    good = ids_of(batch)
    assert es_has_exactly(osmem_clone.url, good)
    assert RequestLog.objects.filter(pk__in=good).count() == 9
    letters = DeadLetter.objects.filter(record_id=poison["attributes"]["id"])
    assert {letter.exporter for letter in letters} == {"postgres", "elasticsearch"}
    assert "latency" in letters.get(exporter="elasticsearch").error
    assert letters.get(exporter="postgres").document == poison
    assert sample("telemetry_dead_letters_total", {"exporter": "elasticsearch"}) == before + 1

    # Refused again (a retried batch): still one dead letter per exporter, one more attempt.
    services.batch_export(exporter_name="elasticsearch", documents=[poison])
    assert DeadLetter.objects.get(exporter="elasticsearch").attempts == 2


@requires_postgres
def test_a_nul_character_postgres_cannot_store_is_replaced_and_its_record_kept(direct_exporters):
    configure_exporters()
    batch = documents(7)
    broken = plain_record().to_document()
    broken["attributes"]["request"]["messages"][0]["content"] = "nul \x00 inside"

    outcome = services.batch_export(exporter_name="postgres", documents=[*batch, broken])

    assert (outcome.exported, outcome.dead_lettered) == (8, 0)
    stored = RequestLog.objects.get(pk=broken["attributes"]["id"]).log_data
    assert stored["attributes"]["request"]["messages"][0]["content"] == "nul \N{REPLACEMENT CHARACTER} inside"


def test_an_unreachable_store_leaves_the_batch_to_be_retried(direct_exporters):
    configure_exporters(es_url="http://127.0.0.1:9")
    batch = documents(3)

    with pytest.raises(services.ExportRetry) as raised:
        services.batch_export(exporter_name="elasticsearch", documents=batch)

    assert raised.value.documents == batch
    assert not DeadLetter.objects.exists()


def test_the_compatibility_media_type_is_refused_by_osmem_and_retried_not_dead_lettered(osmem_clone, transactional_db):
    compatible = ElasticsearchExporter("elasticsearch", url=osmem_clone.url)
    plain = ElasticsearchExporter("elasticsearch", url=osmem_clone.url, plain_json=True)
    document = plain_record().to_document()

    refused = compatible.export([document])
    stored = plain.export([document])

    assert refused.retry == [document["attributes"]["id"]] and "406" in refused.transient_error
    assert stored.succeeded == [document["attributes"]["id"]]
    compatible.shutdown()
    plain.shutdown()


@requires_postgres
def test_dead_letters_are_exported_again_once_corrected(direct_exporters, osmem_clone):
    configure_exporters(es_url=osmem_clone.url)
    poison = poisoned(plain_record().to_document())
    for name in ("postgres", "elasticsearch"):
        services.batch_export(exporter_name=name, documents=[poison])
    assert DeadLetter.objects.count() == 2

    # Retried unchanged, it is refused again and says why.
    outcome = services.dead_letter_retry(dead_letters=DeadLetter.objects.all())
    assert (outcome.exported, outcome.failed) == (0, 2)
    assert all(letter.attempts == 2 and letter.retried_at for letter in DeadLetter.objects.all())

    fixed = copy.deepcopy(poison)
    fixed["attributes"]["metadata"]["latency"] = 2000
    for letter in DeadLetter.objects.all():
        services.dead_letter_update_document(dead_letter=letter, document=fixed)
    outcome = services.dead_letter_retry(dead_letters=DeadLetter.objects.all())

    assert (outcome.exported, outcome.failed) == (2, 0)
    assert all(letter.resolved for letter in DeadLetter.objects.all())
    assert RequestLog.objects.get(pk=fixed["attributes"]["id"]).log_data == fixed
    assert es_hits(osmem_clone.url, [fixed["attributes"]["id"]])[fixed["attributes"]["id"]] == [fixed]


@requires_postgres
def test_a_failing_after_insert_hook_rolls_the_batch_back(direct_exporters):
    exporter = PostgresExporter("postgres", after_insert=["tests.telemetry.test_exporters.failing_hook"])
    batch = documents(3)

    result = exporter.export(batch)

    assert result.retry == ids_of(batch) and "hook" in result.transient_error
    assert not RequestLog.objects.filter(pk__in=ids_of(batch)).exists()


def failing_hook(cursor, table):
    raise RuntimeError("rollup table is missing")


# --- Configuration ---------------------------------------------------------------------


def test_backends_are_built_from_dotted_paths_and_bad_configuration_is_explained(transactional_db):
    with pytest.raises(ImproperlyConfigured, match="could not import"):
        build_exporter(ExporterConfig(name="x", backend="telemetry.exporters.nowhere.Exporter"))
    with pytest.raises(ImproperlyConfigured, match="unknown option"):
        build_exporter(
            ExporterConfig(name="x", backend="telemetry.exporters.postgres.PostgresExporter", options={"colour": 1})
        )
    with pytest.raises(ImproperlyConfigured, match="not an Exporter"):
        build_exporter(ExporterConfig(name="x", backend="telemetry.services.batch_export"))
    exporter = build_exporter(
        ExporterConfig(name="custom", backend="tests.telemetry.test_exporters.ListExporter", options={"label": "a"})
    )
    assert isinstance(exporter, ListExporter) and exporter.label == "a"


class ListExporter(Exporter):
    def __init__(self, name, *, label: str = ""):
        super().__init__(name)
        self.label = label


@requires_postgres
def test_exporter_is_rebuilt_when_its_settings_change(direct_exporters, osmem_clone):
    configure_exporters(es_url=osmem_clone.url)
    first = exporters.get(selectors.exporter_config(name="elasticsearch"))
    assert exporters.get(selectors.exporter_config(name="elasticsearch")) is first

    setting = ExporterSetting.objects.get(name="elasticsearch")
    services.exporter_setting_update(setting=setting, batch_size=50)

    second = exporters.get(selectors.exporter_config(name="elasticsearch"))
    assert second is not first and second.batch_size == 50


def test_rows_are_seeded_from_the_environment_with_secrets_encrypted(transactional_db, settings):
    settings.ENABLED_EXPORTERS = ["postgres", "elasticsearch"]
    settings.TELEMETRY_EXPORTERS = copy.deepcopy(settings.TELEMETRY_EXPORTERS)
    settings.TELEMETRY_EXPORTERS["elasticsearch"]["OPTIONS"] |= {
        "url": "https://search.internal:9200",
        "username": "elastic",
        "password": "s3cret-pass",
        "ca_certs": "/etc/ssl/es.pem",
    }
    selectors.exporter_configs_forget()

    configs = selectors.exporter_configs()

    row = ExporterSetting.objects.get(name="elasticsearch")
    assert (row.url, row.username, row.index_or_table) == (
        "https://search.internal:9200",
        "elastic",
        "ai-gateway-metrics",
    )
    assert row.options["ca_certs"] == "/etc/ssl/es.pem" and "password" not in row.options
    assert "s3cret-pass" not in row.password_encrypted and row.password == "s3cret-pass"
    assert configs["elasticsearch"].password == "s3cret-pass"
    assert ExporterSetting.objects.get(name="postgres").index_or_table == settings.POSTGRES_LOG_TABLE


def test_an_invalid_setting_is_refused_before_it_is_saved(transactional_db):
    configure_exporters()
    setting = ExporterSetting.objects.get(name="postgres")
    with pytest.raises(ValidationError, match="unknown option"):
        services.exporter_setting_update(setting=setting, options={"colour": "red"})
    assert ExporterSetting.objects.get(name="postgres").options == {}


def test_a_disabled_exporter_receives_no_tasks(transactional_db, settings):
    from telemetry.tasks import enqueue_batch

    settings.CELERY_TASK_ALWAYS_EAGER = True
    configure_exporters()
    ExporterSetting.objects.filter(name="postgres").update(enabled=False)
    selectors.exporter_configs_forget()
    batch = documents(2)
    enqueue_batch(batch)
    assert not RequestLog.objects.filter(pk__in=ids_of(batch)).exists()


# --- Admin -----------------------------------------------------------------------------


@pytest.fixture
def admin_client_logged_in(client, transactional_db):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-for-tests-only")
    client.force_login(user)
    return client


@requires_postgres
def test_admin_tests_connections_and_retries_dead_letters(direct_exporters, osmem_clone, admin_client_logged_in):
    configure_exporters(es_url=osmem_clone.url)
    client = admin_client_logged_in
    settings_url = reverse("admin:telemetry_exportersetting_changelist")
    response = client.post(
        settings_url,
        {"action": "test_connection", "_selected_action": list(ExporterSetting.objects.values_list("pk", flat=True))},
        follow=True,
    )
    text = response.content.decode().lower()
    assert "elasticsearch: connected to opensearch" in text and "postgres: connected to postgresql" in text

    poison = poisoned(plain_record().to_document())
    services.batch_export(exporter_name="elasticsearch", documents=[poison])
    letter = DeadLetter.objects.get()
    fixed = copy.deepcopy(poison)
    fixed["attributes"]["metadata"]["latency"] = 5
    change_url = reverse("admin:telemetry_deadletter_change", args=[letter.pk])
    response = client.post(change_url, {"document_json": json.dumps(fixed)}, follow=True)
    assert response.status_code == 200
    response = client.post(
        reverse("admin:telemetry_deadletter_changelist"),
        {"action": "retry_export", "_selected_action": [letter.pk]},
        follow=True,
    )
    assert "1 record(s) exported." in response.content.decode()
    assert es_hits(osmem_clone.url, [fixed["attributes"]["id"]])[fixed["attributes"]["id"]] == [fixed]


def test_admin_never_shows_stored_secrets(admin_client_logged_in):
    configure_exporters(es_url="http://127.0.0.1:9")
    setting = ExporterSetting.objects.get(name="elasticsearch")
    services.exporter_setting_update(setting=setting, password="hunter2-hunter2")

    response = admin_client_logged_in.get(reverse("admin:telemetry_exportersetting_change", args=[setting.pk]))

    assert response.status_code == 200
    assert "hunter2" not in response.content.decode()
    assert ExporterSetting.objects.get(pk=setting.pk).password == "hunter2-hunter2"


@requires_sqlite
def test_sqlite_stores_each_record_once_and_reports_only_new_rows_to_hooks(direct_exporters):
    exporter = PostgresExporter("postgres")
    batch = documents(8)
    exporter.export(batch[:3])
    poison = poisoned(batch[0])
    poison["attributes"]["id"] = "x1"

    result = exporter.export([*batch, poison])

    ids = ids_of(batch)
    assert sorted(result.succeeded) == sorted(ids) and list(result.failed) == ["x1"]
    assert RequestLog.objects.get(pk=ids[5]).log_data == batch[5]
    assert hook_counts(ids) == {rid: 1 for rid in ids}


@requires_sqlite
def test_sqlite_keeps_a_plain_log_table_and_partition_upkeep_does_nothing(direct_exporters, settings):
    settings.POSTGRES_RETENTION_DAYS = 1
    old = plain_record().to_document()
    old["timestamp"] = "2020-01-01T10:00:00.000Z"
    assert PostgresExporter("postgres").export([old]).succeeded == ids_of([old])

    assert services.log_partitions_maintain() is None
    assert tasks.maintain_log_partitions.apply().get() is None
    assert RequestLog.objects.get(pk=old["attributes"]["id"]).log_data == old


@requires_postgres
def test_without_ilm_old_daily_indices_are_pruned_past_retention(osmem_clone, transactional_db):
    exporter = ElasticsearchExporter("elasticsearch", url=osmem_clone.url, plain_json=True, retention_days=7)
    old, recent = plain_record().to_document(), plain_record().to_document()
    old["timestamp"] = "2025-01-01T10:00:00.000Z"
    recent["timestamp"] = "2025-01-20T10:00:00.000Z"
    assert len(exporter.export([old, recent]).succeeded) == 2

    pruned = exporter.prune_expired_indices(now=datetime(2025, 1, 21, tzinfo=UTC))

    assert sorted(pruned) == ["ai-gateway-metrics-2025.01.01", "text-ai-gateway-metrics-2025.01.01"]
    assert list(es_hits(osmem_clone.url, ids_of([old, recent]))) == [recent["attributes"]["id"]]
    exporter.shutdown()


def test_changing_an_exporters_url_without_the_secret_clears_the_stored_secrets(admin_client_logged_in):
    configure_exporters(es_url="http://127.0.0.1:9")
    setting = ExporterSetting.objects.get(name="elasticsearch")
    services.exporter_setting_update(setting=setting, password="hunter2-hunter2", api_key="es-api-key-123456")
    change_url = reverse("admin:telemetry_exportersetting_change", args=[setting.pk])
    form = {
        "enabled": "on",
        "backend": setting.backend,
        "url": "http://attacker.example:9200",
        "index_or_table": setting.index_or_table,
        "username": "elastic",
        "password": "",
        "api_key": "",
        "options": json.dumps(setting.options),
        "batch_size": "100",
        "flush_interval": "1.0",
    }

    response = admin_client_logged_in.post(change_url, form, follow=True)

    assert response.status_code == 200
    stored = ExporterSetting.objects.get(pk=setting.pk)
    assert stored.url == "http://attacker.example:9200"
    assert (stored.password_encrypted, stored.api_key_encrypted) == ("", "")
    assert "URL changed" in response.content.decode()

    # Re-entered with the new URL, the secret is kept.
    response = admin_client_logged_in.post(
        change_url, form | {"url": "http://127.0.0.1:9201", "password": "new-pass-for-new-host"}, follow=True
    )
    stored = ExporterSetting.objects.get(pk=setting.pk)
    assert (stored.url, stored.password) == ("http://127.0.0.1:9201", "new-pass-for-new-host")
    # An edit that keeps the URL keeps the secret.
    admin_client_logged_in.post(change_url, form | {"url": "http://127.0.0.1:9201", "batch_size": "50"})
    stored = ExporterSetting.objects.get(pk=setting.pk)
    assert (stored.batch_size, stored.password) == (50, "new-pass-for-new-host")


# --- The exporter settings page ----------------------------------------------------------------


def exporter_change_form(setting: ExporterSetting, **overrides) -> dict:
    return {
        "enabled": "on" if setting.enabled else "",
        "backend": setting.backend,
        "url": setting.url,
        "index_or_table": setting.index_or_table,
        "username": setting.username,
        "password": "",
        "api_key": "",
        "options": json.dumps(setting.options),
        "batch_size": str(setting.batch_size),
        "flush_interval": str(setting.flush_interval),
    } | overrides


def test_the_backend_is_chosen_from_the_installed_exporters(admin_client_logged_in):
    configure_exporters(es_url="http://127.0.0.1:9")
    setting = ExporterSetting.objects.get(name="elasticsearch")
    change_url = reverse("admin:telemetry_exportersetting_change", args=[setting.pk])

    page = admin_client_logged_in.get(change_url).content.decode()

    assert '<select name="backend"' in page
    for backend in (
        "telemetry.exporters.elasticsearch.ElasticsearchExporter",
        "telemetry.exporters.postgres.PostgresExporter",
    ):
        assert f'value="{backend}"' in page
    response = admin_client_logged_in.post(
        change_url, exporter_change_form(setting, backend="telemetry.exporters.base.Exporter")
    )
    assert response.status_code == 200
    assert "backend" in response.context["adminform"].form.errors
    assert ExporterSetting.objects.get(pk=setting.pk).backend == setting.backend


def test_the_edit_page_tests_the_saved_connection_and_a_failure_names_the_url_and_reason(admin_client_logged_in):
    configure_exporters(es_url="http://127.0.0.1:9")
    setting = ExporterSetting.objects.get(name="elasticsearch")
    change_url = reverse("admin:telemetry_exportersetting_change", args=[setting.pk])
    test_url = reverse("admin:telemetry_exportersetting_test_connection", args=[setting.pk])

    page = admin_client_logged_in.get(change_url).content.decode()
    assert f'formaction="{test_url}"' in page
    assert admin_client_logged_in.get(test_url).status_code == 405

    response = admin_client_logged_in.post(test_url, exporter_change_form(setting, url="http://ignored.example"))

    assert response.status_code == 302 and response["Location"] == change_url
    messages = [str(message) for message in response.wsgi_request._messages]
    [message] = messages
    assert message.startswith("elasticsearch: cannot connect to http://127.0.0.1:9: ")
    assert len(message) > len("elasticsearch: cannot connect to http://127.0.0.1:9: ") + 5  # the reason
    assert ExporterSetting.objects.get(pk=setting.pk).url == "http://127.0.0.1:9"


@requires_postgres
def test_the_edit_page_reports_a_working_postgres_connection(admin_client_logged_in):
    configure_exporters()
    setting = ExporterSetting.objects.get(name="postgres")
    test_url = reverse("admin:telemetry_exportersetting_test_connection", args=[setting.pk])

    response = admin_client_logged_in.post(test_url, follow=True)

    assert "postgres: connected to postgresql database" in response.content.decode().lower()


@requires_sqlite
def test_a_postgres_exporter_on_sqlite_says_so(admin_client_logged_in):
    configure_exporters()
    setting = ExporterSetting.objects.get(name="postgres")
    test_url = reverse("admin:telemetry_exportersetting_test_connection", args=[setting.pk])

    response = admin_client_logged_in.post(test_url, follow=True)

    text = response.content.decode().lower()
    assert "postgres: connected to sqlite database" in text
    assert "sqlite, not postgresql" in text


# --- A disabled exporter keeps what was queued for it -------------------------------------------


@requires_postgres
def test_records_queued_for_an_exporter_that_is_then_disabled_become_dead_letters(direct_exporters):
    configure_exporters()
    ExporterSetting.objects.filter(name="postgres").update(enabled=False)
    selectors.exporter_configs_forget()
    batch = documents(3)

    outcome = services.batch_export(exporter_name="postgres", documents=batch)

    assert outcome.dead_lettered == 3
    letters = DeadLetter.objects.filter(exporter="postgres")
    assert sorted(letters.values_list("record_id", flat=True)) == sorted(ids_of(batch))
    assert all("disabled" in letter.error for letter in letters)
    assert not RequestLog.objects.filter(pk__in=ids_of(batch)).exists()

    # Retried while still disabled, they stay; once it is enabled again, they are exported.
    assert services.dead_letter_retry(dead_letters=letters).failed == 3
    assert "disabled" in DeadLetter.objects.filter(exporter="postgres").first().error
    ExporterSetting.objects.filter(name="postgres").update(enabled=True)
    selectors.exporter_configs_forget()
    assert services.dead_letter_retry(dead_letters=DeadLetter.objects.filter(exporter="postgres")).exported == 3
    assert RequestLog.objects.filter(pk__in=ids_of(batch)).count() == 3


def test_the_exporter_page_labels_the_url_and_says_when_changes_apply(admin_client_logged_in, settings):
    configure_exporters(es_url="http://127.0.0.1:9")
    setting = ExporterSetting.objects.get(name="elasticsearch")

    page = admin_client_logged_in.get(reverse("admin:telemetry_exportersetting_change", args=[setting.pk]))

    assert '<label for="id_url">URL:</label>' in page.content.decode()
    assert f"within {settings.TELEMETRY_EXPORTER_SETTINGS_TTL:g} s" in page.content.decode()
