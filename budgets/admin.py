from django.contrib import admin

from budgets.models import Budget, BudgetAlert, RateLimit


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = ("__str__", "org", "scope", "amount_usd", "period", "hard", "updated_at")
    list_filter = ("scope", "period", "hard")
    list_select_related = ("org", "project", "key")
    search_fields = ("org__slug", "project__slug", "user_id")
    autocomplete_fields = ("org",)
    raw_id_fields = ("project", "key")


@admin.register(RateLimit)
class RateLimitAdmin(admin.ModelAdmin):
    list_display = ("__str__", "org", "scope", "model", "rpm", "tpm", "updated_at")
    list_filter = ("scope",)
    list_select_related = ("org", "project", "key")
    search_fields = ("org__slug", "project__slug", "user_id", "model")
    autocomplete_fields = ("org",)
    raw_id_fields = ("project", "key")


@admin.register(BudgetAlert)
class BudgetAlertAdmin(admin.ModelAdmin):
    """The alerts sent: read-only, the record of what was sent and how it went."""

    list_display = (
        "created_at",
        "budget",
        "user_id",
        "threshold",
        "spent_usd",
        "limit_usd",
        "webhook_status",
        "email_status",
    )
    list_filter = ("threshold",)
    list_select_related = ("budget__org", "budget__project", "budget__key")
    search_fields = ("budget__org__slug", "user_id")
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
