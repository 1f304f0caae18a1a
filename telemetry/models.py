"""Where exported request logs, refused records and exporter settings live in the database."""

from __future__ import annotations

import orjson
from django.conf import settings
from django.db import models
from django.utils import timezone

from gateway_project import crypto
from telemetry import schema


class RequestLog(models.Model):
    """One request's `ai_gateway_request_log` document, as written by the Postgres exporter.

    `log_data` is the exact document; the other columns are copies of its fields, extracted
    at export time so that dashboards filter and aggregate without reading the JSON.
    Rows are only ever inserted, by `telemetry.exporters.postgres`. On PostgreSQL the table is
    partitioned by month with primary key (id, timestamp) (`telemetry.partitions`); `id`
    stays the model's primary key, since an id is unique on its own.
    """

    # The record id. Every other column but the document is a copy of one of its fields,
    # added below from `telemetry.schema`, which says how each is read from the document.
    id = models.CharField(primary_key=True, max_length=64)
    log_data = models.JSONField()

    class Meta:
        db_table = settings.POSTGRES_LOG_TABLE
        ordering = ["-timestamp"]
        # Staff see every org's metadata; prompts and replies only with this permission
        # (superusers have it implicitly; an org's own owners and members always see theirs).
        permissions = [("view_request_content", "Can see the request and response content of any org")]
        # The dashboards read an org's (or project's, or user's) rows over a time window.
        # The plain timestamp index serves cross-org scans and the admin's newest-first list;
        # a btree rather than a BRIN, because only a btree can hand rows out in order.
        indexes = [
            models.Index(fields=["org_id", "timestamp"], name="request_log_org_time"),
            models.Index(fields=["org_id", "project_id", "timestamp"], name="request_log_project_time"),
            models.Index(fields=["org_id", "user_id", "timestamp"], name="request_log_user_time"),
            models.Index(fields=["timestamp"], name="request_log_time"),
            # A thread page reads one thread's requests in order; most records have no thread.
            models.Index(
                fields=["org_id", "thread_id", "timestamp"],
                name="request_log_thread_time",
                condition=models.Q(thread_id__isnull=False),
            ),
        ]

    def __str__(self):
        return f"{self.id} {self.timestamp:%Y-%m-%d %H:%M:%S} {self.org_id}"


for _column, _field in schema.BY_COLUMN.items():
    if _column != "id":
        RequestLog.add_to_class(_column, _field.model_field())


REQUEST_CONTENT_PERMISSION = "telemetry.view_request_content"
CONTENT_HIDDEN = "[hidden: needs the telemetry.view_request_content permission]"


def document_without_content(document) -> dict:
    """The request log document with its request and response (streamed chunks included) hidden."""
    if not isinstance(document, dict):
        return {}
    attributes = document.get("attributes")
    if not isinstance(attributes, dict):
        return dict(document)
    hidden = {key: CONTENT_HIDDEN for key in ("request", "response") if key in attributes}
    return {**document, "attributes": {**attributes, **hidden}}


class DeadLetter(models.Model):
    """A record an exporter refused for good, kept with its document until it is re-exported.

    One row per (exporter, record): a record refused again updates its row, so retried
    batches never pile up copies.
    """

    record_id = models.CharField(max_length=64)
    exporter = models.CharField(max_length=64)
    error = models.TextField()
    # JSON text rather than a JSON column: a document PostgreSQL's jsonb refuses (a NUL
    # character in a string, say) is exactly the kind that ends up here.
    document_json = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    retried_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True, help_text="When a retry exported it")
    attempts = models.PositiveIntegerField(default=1, help_text="Export attempts that failed")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["exporter", "record_id"], name="dead_letter_unique_per_exporter"),
        ]
        indexes = [models.Index(fields=["exporter", "resolved_at"], name="dead_letter_pending")]

    def __str__(self):
        return f"{self.record_id} ({self.exporter})"

    @property
    def document(self):
        return orjson.loads(self.document_json)

    @document.setter
    def document(self, value) -> None:
        self.document_json = orjson.dumps(value).decode()

    @property
    def resolved(self) -> bool:
        return self.resolved_at is not None


class ExporterSetting(models.Model):
    """An exporter's live configuration, editable in the admin.

    Seeded from TELEMETRY_EXPORTERS (the environment) the first time it is read; from then
    on this row is what workers use, re-read within TELEMETRY_EXPORTER_SETTINGS_TTL.
    Secrets are stored encrypted with the gateway's credential key.
    """

    name = models.SlugField(max_length=64, unique=True, help_text='e.g. "postgres" or "elasticsearch"')
    enabled = models.BooleanField(default=True)
    backend = models.CharField(max_length=255, help_text="Dotted path of the exporter class")
    url = models.CharField(max_length=500, blank=True)
    index_or_table = models.CharField(max_length=200, blank=True)
    username = models.CharField(max_length=200, blank=True)
    password_encrypted = models.TextField(blank=True)
    api_key_encrypted = models.TextField(blank=True)
    options = models.JSONField(default=dict, blank=True, help_text="Further backend options, e.g. ca_certs")
    batch_size = models.PositiveIntegerField(default=500, help_text="Records per export task")
    flush_interval = models.FloatField(
        default=1.0, help_text="Seconds until exported records become visible, where the store has such a setting"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def password(self) -> str:
        return crypto.decrypt(self.password_encrypted) if self.password_encrypted else ""

    @password.setter
    def password(self, plaintext: str) -> None:
        self.password_encrypted = crypto.encrypt(plaintext) if plaintext else ""

    @property
    def api_key(self) -> str:
        return crypto.decrypt(self.api_key_encrypted) if self.api_key_encrypted else ""

    @api_key.setter
    def api_key(self, plaintext: str) -> None:
        self.api_key_encrypted = crypto.encrypt(plaintext) if plaintext else ""


class PriceOverride(models.Model):
    """A price that wins over genai-prices for one provider and model, from `valid_from` on."""

    provider = models.CharField(max_length=32, help_text='The gateway\'s provider name, e.g. "openai"')
    model = models.CharField(max_length=200)
    input_per_mtok = models.DecimalField("input price per 1M tokens (USD)", max_digits=12, decimal_places=6)
    output_per_mtok = models.DecimalField("output price per 1M tokens (USD)", max_digits=12, decimal_places=6)
    valid_from = models.DateTimeField(default=timezone.now)

    class Meta:
        # The table it had before pricing moved to telemetry.
        db_table = "proxy_priceoverride"
        ordering = ["provider", "model", "-valid_from"]

    def __str__(self):
        return f"{self.provider}/{self.model} from {self.valid_from:%Y-%m-%d}"


class CostRecomputation(models.Model):
    """A background pass that reprices the request log over a date range, e.g. after a price override."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    provider = models.CharField(max_length=32, blank=True, help_text="Empty for every provider.")
    model = models.CharField(max_length=200, blank=True, help_text="Empty for every model.")
    since = models.DateField(help_text="First UTC day repriced.")
    until = models.DateField(help_text="Last UTC day repriced (included).")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    total = models.BigIntegerField(default=0, help_text="Request logs in the range.")
    processed = models.BigIntegerField(default=0)
    changed = models.BigIntegerField(default=0, help_text="Request logs whose cost changed.")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        # The table it had before pricing moved to telemetry.
        db_table = "dashboards_costrecomputation"
        ordering = ["-created_at"]

    def __str__(self):
        scope = f"{self.provider or 'all providers'}/{self.model or 'all models'}"
        return f"{scope} {self.since:%Y-%m-%d}..{self.until:%Y-%m-%d}"

    @property
    def progress(self) -> int:
        """Percent of the range's request logs processed so far."""
        if self.status == self.Status.DONE:
            return 100
        if not self.total:
            return 0
        return min(100, self.processed * 100 // self.total)
