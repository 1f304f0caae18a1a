"""Admin for tenants, keys, credentials and routing. Writes that carry secrets go through `proxy.services`."""

from functools import cache

from django.contrib import admin, messages
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.template import engines
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from proxy import services
from proxy.forms import GatewayKeyIssueForm, ProviderCredentialForm
from proxy.models import (
    GatewayKey,
    Membership,
    ModelRoute,
    Organisation,
    Project,
    ProviderCredential,
)

KEY_HINT_MASK = "••••"
# Below this length the last four characters would give away too much of the key.
KEY_HINT_MIN_LENGTH = 12


def org_dashboard_url(slug: str) -> str:
    try:
        return reverse("dashboards:org", args=[slug])
    except NoReverseMatch:
        return f"/dashboards/orgs/{slug}/"


def _count_per_org(model) -> Coalesce:
    # A correlated subquery per count, so that projects and keys are not joined into one cross product.
    counts = model.objects.filter(org=OuterRef("pk")).order_by().values("org").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counts, output_field=IntegerField()), 0)


class ProjectInline(admin.TabularInline):
    model = Project
    fields = ("slug", "name", "content_logging", "created_at")
    extra = 0
    show_change_link = True


class MembershipInline(admin.TabularInline):
    model = Membership
    fields = ("user", "role")
    autocomplete_fields = ("user",)
    extra = 0


@admin.register(Organisation)
class OrganisationAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "created_at", "project_count", "key_count", "dashboard_link")
    search_fields = ("slug", "name")
    inlines = (ProjectInline, MembershipInline)

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(project_count=_count_per_org(Project), key_count=_count_per_org(GatewayKey))
        )

    def get_readonly_fields(self, request, obj=None):
        return ("dashboard_link",) if obj is not None else ()

    @admin.display(description="Projects", ordering="project_count")
    def project_count(self, obj):
        return obj.project_count

    @admin.display(description="Keys", ordering="key_count")
    def key_count(self, obj):
        return obj.key_count

    @admin.display(description="Dashboard")
    def dashboard_link(self, obj):
        return format_html('<a href="{}">Open dashboard</a>', org_dashboard_url(obj.slug))


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("slug", "org", "name", "content_logging", "created_at")
    list_filter = ("content_logging", "org")
    search_fields = ("slug", "name", "org__slug", "org__name")
    list_select_related = ("org",)
    autocomplete_fields = ("org",)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "org", "role")
    list_filter = ("role", "org")
    search_fields = ("user__username", "user__email", "org__slug", "org__name")
    list_select_related = ("user", "org")
    autocomplete_fields = ("org", "user")


class RevokedFilter(admin.SimpleListFilter):
    title = "revoked"
    parameter_name = "revoked"

    def lookups(self, request, model_admin):
        return (("no", "Active"), ("yes", "Revoked"))

    def queryset(self, request, queryset):
        if self.value() == "no":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


# Rendered in place of the usual redirect after adding a key: the plaintext lives only in this one response,
# never in the database, the session or a message cookie.
_KEY_ISSUED_TEMPLATE = """{% extends "admin/base_site.html" %}
{% block breadcrumbs %}<div class="breadcrumbs"><a href="{% url 'admin:index' %}">Home</a>
&rsaquo; <a href="{{ changelist_url }}">{{ opts.verbose_name_plural|capfirst }}</a>
&rsaquo; Key issued</div>{% endblock %}
{% block content %}<div id="content-main">
<p>The key for {{ scope }} has been issued. Copy it now: it is shown only this once and cannot be recovered.
If it is lost, revoke it and issue a new one.</p>
<p><input type="text" readonly size="64" value="{{ plaintext }}" id="issued-key" aria-label="Gateway key"></p>
<ul>
<li><a href="{{ change_url }}">View key {{ key.prefix }}…</a></li>
<li><a href="{{ add_url }}">Issue another key</a></li>
<li><a href="{{ changelist_url }}">All keys</a></li>
</ul></div>{% endblock %}"""


@cache
def _key_issued_template():
    return engines["django"].from_string(_KEY_ISSUED_TEMPLATE)


def _key_scope(key: GatewayKey) -> str:
    return f"project {key.project}" if key.project_id else f"the whole organisation {key.org.slug}"


@admin.register(GatewayKey)
class GatewayKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "org", "project", "name", "created_at", "active")
    list_filter = (RevokedFilter, "org")
    search_fields = ("prefix", "name", "org__slug", "project__slug")
    list_select_related = ("org", "project__org")
    autocomplete_fields = ("org", "project")
    date_hierarchy = "created_at"
    actions = ("revoke_keys",)
    readonly_fields = ("prefix", "scope", "created_at", "active", "revoked_at")
    add_fieldsets = ((None, {"fields": ("org", "project", "name")}),)
    fieldsets = (
        (None, {"fields": ("prefix", "org", "project", "scope", "name")}),
        ("State", {"fields": ("created_at", "active", "revoked_at")}),
    )

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = GatewayKeyIssueForm
        return super().get_form(request, obj, **kwargs)

    def has_change_permission(self, request, obj=None):
        # An issued key is immutable; revoking it is the only change, and that is an action.
        if obj is not None:
            return False
        return super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        issued = services.gateway_key_issue(org=obj.org, project=obj.project, name=obj.name)
        obj.pk = issued.key.pk
        obj.refresh_from_db()
        obj._issued_plaintext = issued.plaintext

    def response_add(self, request, obj, post_url_continue=None):
        plaintext = getattr(obj, "_issued_plaintext", None)
        if plaintext is None:
            return super().response_add(request, obj, post_url_continue)
        info = (self.opts.app_label, self.opts.model_name)
        context = {
            **self.admin_site.each_context(request),
            "title": "Gateway key issued",
            "opts": self.opts,
            "key": obj,
            "scope": _key_scope(obj),
            "plaintext": plaintext,
            "change_url": reverse("admin:{}_{}_change".format(*info), args=[obj.pk]),
            "add_url": reverse("admin:{}_{}_add".format(*info)),
            "changelist_url": reverse("admin:{}_{}_changelist".format(*info)),
        }
        return TemplateResponse(request, _key_issued_template(), context)

    @admin.display(description="Scope")
    def scope(self, obj):
        return _key_scope(obj)

    @admin.display(description="Active", boolean=True, ordering="revoked_at")
    def active(self, obj):
        return obj.is_active

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_keys(self, request, queryset):
        keys = list(queryset.active())
        for key in keys:
            services.gateway_key_revoke(key=key)
        self.message_user(request, f"Revoked {len(keys)} key(s).", messages.SUCCESS)


@admin.register(ProviderCredential)
class ProviderCredentialAdmin(admin.ModelAdmin):
    form = ProviderCredentialForm
    list_display = ("org", "provider", "base_url", "key_hint", "updated_at")
    list_filter = ("provider",)
    search_fields = ("org__slug", "org__name", "base_url")
    list_select_related = ("org",)
    autocomplete_fields = ("org",)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("org", "provider", "api_key", "base_url")
        return ("org", "provider", "key_hint", "api_key", "base_url", "updated_at")

    def get_readonly_fields(self, request, obj=None):
        # Moving a credential to another org or provider would silently overwrite that pair's key.
        return ("org", "provider", "key_hint", "updated_at") if obj is not None else ()

    def save_model(self, request, obj, form, change):
        credential = services.provider_credential_set(
            org=obj.org,
            provider=obj.provider,
            api_key=form.cleaned_data["api_key"] or obj.api_key,
            base_url=obj.base_url,
        )
        obj.pk = credential.pk
        obj.refresh_from_db()

    @admin.display(description="Key")
    def key_hint(self, obj):
        try:
            api_key = obj.api_key
        except ImproperlyConfigured:
            return "(cannot be decrypted with the configured key)"
        if len(api_key) < KEY_HINT_MIN_LENGTH:
            return KEY_HINT_MASK
        return KEY_HINT_MASK + api_key[-4:]


@admin.register(ModelRoute)
class ModelRouteAdmin(admin.ModelAdmin):
    list_display = ("model_name", "provider", "upstream_model")
    list_filter = ("provider",)
    search_fields = ("model_name", "upstream_model")
