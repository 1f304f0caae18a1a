"""Admin for request logs, dead letters and exporter settings. Every write goes through `telemetry.services`."""

from __future__ import annotations

import copy

import orjson
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import connections
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from gateway_project.admin_mixins import ReadOnlyAdminMixin
from telemetry import (
    pricing_admin,  # noqa: F401  (registers the pricing admin)
    services,
)
from telemetry.exporters import ExportError
from telemetry.models import (
    REQUEST_CONTENT_PERMISSION,
    DeadLetter,
    ExporterSetting,
    RequestLog,
    document_without_content,
)

# Below this many rows an exact count is cheap enough to be worth having.
_ESTIMATE_FROM = 100_000


class EstimatedCountPaginator(Paginator):
    """On PostgreSQL, the planner's row estimate instead of COUNT(*) for the unfiltered log table."""

    @cached_property
    def count(self):
        queryset = self.object_list
        connection = connections[queryset.db]
        if connection.vendor == "postgresql" and not queryset.query.where:
            with connection.cursor() as cursor:
                table = queryset.model._meta.db_table
                # A partitioned table's own estimate is empty: its partitions hold the rows.
                cursor.execute(
                    "SELECT sum(greatest(reltuples, 0))::bigint FROM pg_class"
                    " WHERE oid IN (SELECT relid FROM pg_partition_tree(to_regclass(%s)) WHERE isleaf)",
                    [table],
                )
                row = cursor.fetchone()
            if row and row[0] >= _ESTIMATE_FROM:
                return row[0]
        return super().count


class StatusFilter(admin.SimpleListFilter):
    # Fixed choices: the default filter would run SELECT DISTINCT over the whole log table.
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return (("success", "Success"), ("error", "Error"))

    def queryset(self, request, queryset):
        return queryset.filter(status=self.value()) if self.value() else queryset


@admin.register(RequestLog)
class RequestLogAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # Rows feed the dashboards' rollups; deleting one here would leave them counting it.
    list_display = (
        "id",
        "timestamp",
        "org_id",
        "project_id",
        "provider",
        "model",
        "status",
        "status_code",
        "latency",
        "total_tokens",
        "cost",
    )
    list_filter = (StatusFilter, "stream")
    # Exact matches only, each served by an index.
    search_fields = ("=id", "=org_id")
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    list_per_page = 50
    exclude = ("log_data",)
    readonly_fields = ("document",)

    def get_readonly_fields(self, request, obj=None):
        # Staff see every org's metadata; the prompts and replies only with the permission.
        if request.user.has_perm(REQUEST_CONTENT_PERMISSION):
            return ("document",)
        return ("document_without_content",)

    @admin.display(description="Document")
    def document(self, obj):
        return _pretty_document(obj.log_data)

    @admin.display(description="Document (request and response hidden)")
    def document_without_content(self, obj):
        return _pretty_document(document_without_content(obj.log_data))


def _pretty_document(document) -> str:
    return format_html("<pre>{}</pre>", orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


class ResolvedFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return (("pending", "Waiting for a retry"), ("resolved", "Exported by a retry"))

    def queryset(self, request, queryset):
        if self.value() == "pending":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "resolved":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


class DeadLetterForm(forms.ModelForm):
    """The document is editable, so that what made the store refuse it can be corrected before a retry."""

    document_json = forms.CharField(label="Document (JSON)", widget=forms.Textarea(attrs={"rows": 30, "cols": 120}))

    class Meta:
        model = DeadLetter
        fields = ("document_json",)

    def clean_document_json(self):
        try:
            document = orjson.loads(self.cleaned_data["document_json"])
        except orjson.JSONDecodeError as exc:
            raise ValidationError(f"Not valid JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise ValidationError("The document must be a JSON object.")
        self.cleaned_data["document"] = document
        return self.cleaned_data["document_json"]


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    form = DeadLetterForm
    list_display = ("record_id", "exporter", "short_error", "attempts", "created_at", "retried_at", "resolved_at")
    list_filter = (ResolvedFilter, "exporter")
    search_fields = ("=record_id",)
    readonly_fields = ("record_id", "exporter", "error", "attempts", "created_at", "retried_at", "resolved_at")
    fields = (*readonly_fields, "document_json")
    actions = ("retry_export",)

    def has_add_permission(self, request):
        return False

    def get_form(self, request, obj=None, **kwargs):
        if not request.user.has_perm(REQUEST_CONTENT_PERMISSION):
            kwargs["form"] = forms.ModelForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if request.user.has_perm(REQUEST_CONTENT_PERMISSION):
            return self.fields
        return (*self.readonly_fields, "document_without_content")

    def get_readonly_fields(self, request, obj=None):
        if request.user.has_perm(REQUEST_CONTENT_PERMISSION):
            return self.readonly_fields
        # Seeing the document (and so editing it) needs the content permission.
        return (*self.readonly_fields, "document_without_content")

    @admin.display(description="Document (request and response hidden)")
    def document_without_content(self, obj):
        return _pretty_document(document_without_content(obj.document))

    @admin.display(description="Error")
    def short_error(self, obj):
        return obj.error if len(obj.error) <= 120 else obj.error[:119] + "…"

    def save_model(self, request, obj, form, change):
        if "document" in form.cleaned_data:  # only those who may see the document can change it
            services.dead_letter_update_document(dead_letter=obj, document=form.cleaned_data["document"])

    @admin.action(description="Export the selected records again")
    def retry_export(self, request, queryset):
        outcome = services.dead_letter_retry(dead_letters=queryset)
        if outcome.exported:
            self.message_user(request, f"{outcome.exported} record(s) exported.", messages.SUCCESS)
        if outcome.failed:
            self.message_user(
                request, f"{outcome.failed} record(s) still not exported; see their errors.", messages.WARNING
            )
        if not outcome.exported and not outcome.failed:
            self.message_user(request, "Nothing to retry: the selected records were already exported.")


def installed_exporter_choices(current: str = "") -> list[tuple[str, str]]:
    """The exporter classes this installation configures (TELEMETRY_EXPORTERS), and the row's own."""
    backends = {config["BACKEND"] for config in settings.TELEMETRY_EXPORTERS.values()}
    if current:
        backends.add(current)
    return [(path, f"{path.rsplit('.', 1)[-1]} ({path.rsplit('.', 1)[0]})") for path in sorted(backends)]


class ExporterSettingForm(forms.ModelForm):
    """Secrets are write-only: never rendered back; left blank on change, the stored one stays."""

    backend = forms.ChoiceField(help_text="One of the installed exporters.")

    password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted. Leave blank to keep the current password.",
    )
    api_key = forms.CharField(
        label="API key",
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted. Leave blank to keep the current key.",
    )
    clear_secrets = forms.BooleanField(required=False, help_text="Remove the stored password and API key.")

    class Meta:
        model = ExporterSetting
        fields = (
            "name",
            "enabled",
            "backend",
            "url",
            "index_or_table",
            "username",
            "password",
            "api_key",
            "clear_secrets",
            "options",
            "batch_size",
            "flush_interval",
        )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial_secrets = bool(self.instance.password_encrypted or self.instance.api_key_encrypted)
        self.fields["backend"].choices = installed_exporter_choices(self.instance.backend)
        self.fields["url"].label = "URL"
        # Workers re-read these rows on a timer, unlike the proxy's settings, which apply at once.
        self.fields[
            "enabled"
        ].help_text = (
            f"Changes here reach running export workers within {settings.TELEMETRY_EXPORTER_SETTINGS_TTL:g} s."
        )

    def secret_changes(self) -> dict:
        if self.cleaned_data.get("clear_secrets"):
            return {"password": "", "api_key": ""}
        return {
            "password": self.cleaned_data.get("password") or None,
            "api_key": self.cleaned_data.get("api_key") or None,
        }

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        candidate = copy.copy(self.instance)
        for field in ("name", "enabled", "backend", "url", "index_or_table", "username", "options"):
            setattr(candidate, field, cleaned.get(field))
        for field, value in self.secret_changes().items():
            if value is not None:
                setattr(candidate, field, value)
        services.exporter_setting_validate(setting=candidate)
        return cleaned


@admin.register(ExporterSetting)
class ExporterSettingAdmin(admin.ModelAdmin):
    form = ExporterSettingForm
    change_form_template = "admin/telemetry/exportersetting/change_form.html"
    list_display = ("name", "enabled", "backend", "url", "index_or_table", "batch_size", "has_secret", "updated_at")
    list_filter = ("enabled",)
    readonly_fields = ("updated_at",)
    actions = ("test_connection",)

    def get_readonly_fields(self, request, obj=None):
        # The name is what export tasks and queues refer to; renaming would orphan them.
        return (*self.readonly_fields, "name") if obj is not None else self.readonly_fields

    @admin.display(description="Secret set", boolean=True)
    def has_secret(self, obj):
        return bool(obj.password_encrypted or obj.api_key_encrypted)

    def save_model(self, request, obj, form, change):
        changes = {
            field: form.cleaned_data[field]
            for field in ("enabled", "backend", "url", "index_or_table", "username", "options", "batch_size")
        }
        changes |= {"flush_interval": form.cleaned_data["flush_interval"], **form.secret_changes()}
        services.exporter_setting_update(setting=obj, **changes)
        cleared = not (obj.password_encrypted or obj.api_key_encrypted)
        if form.initial_secrets and cleared and not form.cleaned_data.get("clear_secrets"):
            self.message_user(
                request,
                "The URL changed, so the stored password and API key were removed: enter them for the new URL.",
                messages.WARNING,
            )

    def get_urls(self):
        info = (self.opts.app_label, self.opts.model_name)
        test_url = path(
            "<path:object_id>/test-connection/",
            self.admin_site.admin_view(self.test_connection_view),
            name="{}_{}_test_connection".format(*info),
        )
        return [test_url, *super().get_urls()]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            info = (self.opts.app_label, self.opts.model_name)
            context["test_connection_url"] = reverse("admin:{}_{}_test_connection".format(*info), args=[obj.pk])
        return super().render_change_form(request, context, add, change, form_url, obj)

    @method_decorator(require_POST)
    def test_connection_view(self, request, object_id):
        """The edit page's button: tests the saved settings, never the unsaved form (see the template)."""
        setting = self.get_object(request, object_id)
        if setting is None or not self.has_change_permission(request, setting):
            raise PermissionDenied
        self._report_connection(request, setting)
        info = (self.opts.app_label, self.opts.model_name)
        return HttpResponseRedirect(reverse("admin:{}_{}_change".format(*info), args=[setting.pk]))

    @admin.action(description="Test the connection")
    def test_connection(self, request, queryset):
        for setting in queryset:
            self._report_connection(request, setting)

    def _report_connection(self, request, setting: ExporterSetting) -> None:
        try:
            outcome = services.exporter_setting_check(setting=setting)
        except ExportError as exc:
            self.message_user(request, f"{setting.name}: cannot connect to {exc}", messages.ERROR)
            return
        self.message_user(request, f"{setting.name}: connected to {outcome.found}", messages.SUCCESS)
        for warning in outcome.warnings:
            self.message_user(request, f"{setting.name}: {warning}", messages.WARNING)
