"""Read-only admin for the usage rollups, linking each row to its dashboard."""

from django.contrib import admin
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from dashboards.models import (
    ADDITIVE_MEASURES,
    DIMENSIONS,
    DailyProjectUsage,
    DailyUsage,
    HourlyProjectUsage,
    HourlyUsage,
)
from gateway_project.admin_mixins import ReadOnlyAdminMixin

EMPTY = "\N{EN DASH}"


class UsageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # Rollups are derived data: they are rebuilt with `backfill_rollups`, never edited by hand.
    list_display = (
        "bucket",
        "org_id",
        "project_id",
        "user_id",
        "model",
        "provider",
        "status",
        "error_type",
        "requests",
        "cost",
        "dashboard",
    )
    list_filter = ("status", "provider")
    search_fields = ("org_id", "project_id", "user_id", "model")
    date_hierarchy = "bucket"
    # The tables grow with traffic: no full COUNT(*) on every changelist page.
    show_full_result_count = False
    # Every dimension and the summed measures; the histogram bucket columns are left to the pages.
    fields = ("bucket", *DIMENSIONS, *ADDITIVE_MEASURES[: ADDITIVE_MEASURES.index("ttfb_count") + 1])

    @admin.display(description="Dashboard")
    def dashboard(self, obj):
        try:
            if obj.project_id:
                url = reverse("dashboards:project", args=[obj.org_id, obj.project_id])
            else:
                url = reverse("dashboards:org", args=[obj.org_id])
        except NoReverseMatch:  # an id that is not a slug, e.g. requests refused before auth
            return EMPTY
        return format_html('<a href="{}">Open</a>', url)


class ProjectUsageAdmin(UsageAdmin):
    list_display = tuple(name for name in UsageAdmin.list_display if name != "user_id")
    search_fields = ("org_id", "project_id", "model")
    fields = tuple(name for name in UsageAdmin.fields if name != "user_id")


admin.site.register(HourlyUsage, UsageAdmin)
admin.site.register(DailyUsage, UsageAdmin)
admin.site.register(HourlyProjectUsage, ProjectUsageAdmin)
admin.site.register(DailyProjectUsage, ProjectUsageAdmin)
