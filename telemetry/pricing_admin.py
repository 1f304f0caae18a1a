"""Admin for pricing: price overrides and their recomputations, and the models no price is known for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Min
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from gateway_project.admin_mixins import ReadOnlyAdminMixin
from telemetry import recomputation, selectors
from telemetry.forms import CostRecomputationForm
from telemetry.models import CostRecomputation, PriceOverride

UNPRICED_DAYS = 30


@admin.register(PriceOverride)
class PriceOverrideAdmin(admin.ModelAdmin):
    list_display = ("provider", "model", "input_per_mtok", "output_per_mtok", "valid_from")
    list_filter = ("provider",)
    search_fields = ("model",)
    date_hierarchy = "valid_from"
    actions = ["recompute_costs"]
    change_list_template = "admin/telemetry/priceoverride/change_list.html"

    def get_urls(self):
        unpriced = path(
            "unpriced/", self.admin_site.admin_view(self.unpriced_view), name="telemetry_priceoverride_unpriced"
        )
        return [unpriced, *super().get_urls()]

    def unpriced_view(self, request):
        """The models whose requests have tokens but no price: each needs an override, or a newer genai-prices."""
        since = datetime.now(UTC) - timedelta(days=UNPRICED_DAYS)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Models without a known price (last {UNPRICED_DAYS} days)",
            "opts": self.model._meta,
            "rows": selectors.unpriced_models(since=since),
            "add_url": reverse("admin:telemetry_priceoverride_add"),
        }
        return TemplateResponse(request, "admin/telemetry/priceoverride/unpriced.html", context)

    @admin.action(description="Recompute costs for a date range", permissions=["change"])
    def recompute_costs(self, request, queryset):
        """Ask for a date range, then reprice the request logs of each selected override's model."""
        if "apply" in request.POST:
            form = CostRecomputationForm(request.POST, overrides=queryset)
            if form.is_valid():
                pairs = sorted(set(queryset.values_list("provider", "model")))
                for provider, model in pairs:
                    recomputation.cost_recomputation_start(
                        provider=provider,
                        model=model,
                        since=form.cleaned_data["since"],
                        until=form.cleaned_data["until"],
                    )
                self.message_user(
                    request,
                    f"Recomputing costs for {len(pairs)} model(s) from {form.cleaned_data['since']:%Y-%m-%d} "
                    f"to {form.cleaned_data['until']:%Y-%m-%d} in the background.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:telemetry_costrecomputation_changelist"))
        else:
            earliest = queryset.aggregate(earliest=Min("valid_from"))["earliest"]
            today = datetime.now(UTC).date()
            since = earliest.astimezone(UTC).date() if earliest else today
            form = CostRecomputationForm(initial={"since": min(since, today), "until": today}, overrides=queryset)
        context = {
            **self.admin_site.each_context(request),
            "title": "Recompute costs for a date range",
            "opts": self.model._meta,
            "form": form,
            "queryset": queryset,
            "action": "recompute_costs",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/telemetry/costrecomputation/start_form.html", context)


@admin.register(CostRecomputation)
class CostRecomputationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Recomputations are started from the price overrides' action and only watched here."""

    list_display = (
        "created_at",
        "provider_display",
        "model_display",
        "since",
        "until",
        "status",
        "progress_display",
        "changed_display",
    )
    list_filter = ("status", "provider")
    search_fields = ("model",)
    date_hierarchy = "created_at"
    readonly_fields = (
        "provider",
        "model",
        "since",
        "until",
        "status",
        "progress_display",
        "changed_display",
        "error",
        "created_at",
        "started_at",
        "finished_at",
    )
    fields = readonly_fields

    @admin.display(description="Provider", ordering="provider")
    def provider_display(self, obj):
        return obj.provider or "all"

    @admin.display(description="Model", ordering="model")
    def model_display(self, obj):
        return obj.model or "all"

    @admin.display(description="Progress")
    def progress_display(self, obj):
        return f"{obj.processed:,} / {obj.total:,} ({obj.progress}%)"

    @admin.display(description="Costs changed", ordering="changed")
    def changed_display(self, obj):
        # A finished pass that changed nothing usually means the override starts after the range.
        if obj.status == CostRecomputation.Status.DONE and not obj.changed and obj.total:
            return format_html('<span title="{}">0 changed</span>', "No price in effect differed in this range")
        return f"{obj.changed:,} changed"
