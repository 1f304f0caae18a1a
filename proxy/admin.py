"""Admin for tenants, keys, credentials and routing. Writes that carry secrets go through `proxy.services`."""

from functools import cache

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ImproperlyConfigured, PermissionDenied, ValidationError
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template import engines
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from gateway_project import crypto
from proxy import services
from proxy.forms import DeploymentForm, GatewayKeyIssueForm, ProviderCredentialForm
from proxy.models import (
    Deployment,
    Fallback,
    GatewayKey,
    Membership,
    ModelGroup,
    ModelRoute,
    Organisation,
    Project,
    ProviderCredential,
)
from telemetry import selectors as telemetry_selectors

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


class ProjectInlineForm(forms.ModelForm):
    """A saved project's slug is shown but not editable: its logs and rollups are kept under it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.fields["slug"].disabled = True


class ProjectInline(admin.TabularInline):
    model = Project
    form = ProjectInlineForm
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
        # The slug keys the org's logs and rollups (see proxy.models.TenantKeyFields).
        return ("slug", "dashboard_link") if obj is not None else ()

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

    def get_readonly_fields(self, request, obj=None):
        # The org and slug key the project's logs and rollups (see proxy.models.TenantKeyFields).
        return ("org", "slug") if obj is not None else ()


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


# The plaintext goes from the add request to the page after it in the session, encrypted, and is popped
# there: reloading that page shows it no more and never issues another key (post/redirect/get).
_ISSUED_SESSION_KEY = "proxy_issued_gateway_key"

_KEY_ISSUED_TEMPLATE = """{% extends "admin/base_site.html" %}
{% block breadcrumbs %}<div class="breadcrumbs"><a href="{% url 'admin:index' %}">Home</a>
&rsaquo; <a href="{{ changelist_url }}">{{ opts.verbose_name_plural|capfirst }}</a>
&rsaquo; Key issued</div>{% endblock %}
{% block content %}<div id="content-main">
{% if plaintext %}
<p>The key for {{ scope }} has been issued. Copy it now: it is shown only this once and cannot be recovered.
If it is lost, revoke it and issue a new one.</p>
<p><input type="text" readonly size="64" value="{{ plaintext }}" id="issued-key" aria-label="Gateway key"></p>
{% else %}
<p id="key-already-shown">The key for {{ scope }} was shown once, when it was issued, and cannot be shown again.
If it was lost, revoke it and issue a new one.</p>
{% endif %}
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
    list_display = ("prefix", "name", "org", "project", "created_at", "expires_at", "last_used_at", "active")
    list_filter = (RevokedFilter, "org")
    search_fields = ("prefix", "name", "org__slug", "project__slug")
    list_select_related = ("org", "project__org")
    autocomplete_fields = ("org",)
    date_hierarchy = "created_at"
    actions = ("revoke_keys",)
    change_form_template = "admin/proxy/gatewaykey/change_form.html"
    readonly_fields = ("prefix", "scope", "created_at", "expires_at", "last_used_at", "spend", "active", "revoked_at")
    add_fieldsets = ((None, {"fields": ("org", "project", "name", "expires_at")}),)
    fieldsets = (
        (None, {"fields": ("prefix", "org", "project", "scope", "name")}),
        ("State", {"fields": ("created_at", "expires_at", "last_used_at", "spend", "active", "revoked_at")}),
    )

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else ()

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = GatewayKeyIssueForm
        return super().get_form(request, obj, **kwargs)

    def has_change_permission(self, request, obj=None):
        # An issued key is immutable; revoking it is the only change, and that has its own button.
        if obj is not None:
            return False
        return super().has_change_permission(request, obj)

    def get_urls(self):
        info = (self.opts.app_label, self.opts.model_name)
        own = [
            path("<int:pk>/issued/", self.admin_site.admin_view(self.issued_view), name="{}_{}_issued".format(*info)),
            path("<int:pk>/revoke/", self.admin_site.admin_view(self.revoke_view), name="{}_{}_revoke".format(*info)),
        ]
        return own + super().get_urls()

    def save_model(self, request, obj, form, change):
        issued = services.gateway_key_issue(org=obj.org, project=obj.project, name=obj.name, expires_at=obj.expires_at)
        obj.pk = issued.key.pk
        obj.refresh_from_db()
        request.session[_ISSUED_SESSION_KEY] = {"pk": obj.pk, "plaintext": crypto.encrypt(issued.plaintext)}

    def response_add(self, request, obj, post_url_continue=None):
        if request.session.get(_ISSUED_SESSION_KEY, {}).get("pk") != obj.pk:
            return super().response_add(request, obj, post_url_continue)
        return HttpResponseRedirect(self._url("issued", obj.pk))

    def issued_view(self, request, pk):
        key = get_object_or_404(GatewayKey.objects.select_related("org", "project__org"), pk=pk)
        if not self.has_view_permission(request, key):
            raise PermissionDenied
        stashed = request.session.get(_ISSUED_SESSION_KEY) or {}
        plaintext = None
        if stashed.get("pk") == key.pk:
            del request.session[_ISSUED_SESSION_KEY]
            plaintext = crypto.decrypt(stashed["plaintext"])
        context = {
            **self.admin_site.each_context(request),
            "title": "Gateway key issued",
            "opts": self.opts,
            "key": key,
            "scope": _key_scope(key),
            "plaintext": plaintext,
            "change_url": self._url("change", key.pk),
            "add_url": self._url("add"),
            "changelist_url": self._url("changelist"),
        }
        # admin_view's never_cache keeps this response, the one that carries the key, out of caches.
        return TemplateResponse(request, _key_issued_template(), context)

    @method_decorator(require_POST)
    def revoke_view(self, request, pk):
        key = get_object_or_404(GatewayKey, pk=pk)
        if not super().has_change_permission(request):
            raise PermissionDenied
        if key.revoked_at is None:
            services.gateway_key_revoke(key=key)
            self.log_change(request, key, "Revoked.")
            self.message_user(request, f"Revoked key {key.prefix}…; it stops working at once.", messages.SUCCESS)
        else:
            self.message_user(request, f"Key {key.prefix}… was already revoked.", messages.WARNING)
        return HttpResponseRedirect(self._url("change", key.pk))

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["can_revoke"] = obj.revoked_at is None and super().has_change_permission(request)
            context["revoke_url"] = self._url("revoke", obj.pk)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _url(self, view: str, *args) -> str:
        return reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_{view}", args=args)

    @admin.display(description="Scope")
    def scope(self, obj):
        return _key_scope(obj)

    @admin.display(description="Spend (USD)")
    def spend(self, obj):
        total = telemetry_selectors.gateway_key_spend(org_id=obj.org.slug, key_id=obj.pk)
        return f"{total:.4f}"

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
        if not change:
            credential = services.provider_credential_set(
                org=obj.org, provider=obj.provider, api_key=form.cleaned_data["api_key"], base_url=obj.base_url
            )
        else:
            credential, dropped = services.provider_credential_update(
                credential=obj, base_url=obj.base_url, api_key=form.cleaned_data["api_key"] or None
            )
            if dropped:
                self.message_user(
                    request,
                    "The base URL changed, so the stored API key was removed: enter the key for the new URL.",
                    messages.WARNING,
                )
        obj.pk = credential.pk
        obj.refresh_from_db()

    @admin.display(description="Key")
    def key_hint(self, obj):
        return key_hint(obj, missing="(none: enter a key)")


def key_hint(obj, *, missing: str) -> str:
    """The last four characters of a stored key behind a mask, or what stands in for it."""
    try:
        api_key = obj.api_key
    except ImproperlyConfigured:
        return "(cannot be decrypted with the configured key)"
    if not api_key:
        return missing
    if len(api_key) < KEY_HINT_MIN_LENGTH:
        return KEY_HINT_MASK
    return KEY_HINT_MASK + api_key[-4:]


@admin.register(ModelRoute)
class ModelRouteAdmin(admin.ModelAdmin):
    list_display = ("model_name", "provider", "upstream_model")
    list_filter = ("provider",)
    search_fields = ("model_name", "upstream_model")


class DeploymentInline(admin.StackedInline):
    model = Deployment
    form = DeploymentForm
    extra = 0
    readonly_fields = ("key_hint",)
    fieldsets = (
        (None, {"fields": (("name", "enabled"), ("provider", "upstream_model"), "base_url", "weight")}),
        ("Key", {"fields": ("key_hint", "api_key", "clear_api_key", "api_key_env")}),
        ("Limits", {"fields": (("rpm", "tpm"), "max_output_tokens")}),
    )

    @admin.display(description="Stored key")
    def key_hint(self, obj):
        return key_hint(obj, missing="(none: uses the key variable, else the org's or the provider's key)")


class FallbackFormSet(forms.BaseInlineFormSet):
    """A group falls back only to another group its org may use: a shared one or one of its own org's."""

    def clean(self):
        super().clean()
        group = self.instance
        for form in self.forms:
            to_group = form.cleaned_data.get("to_group") if form.cleaned_data else None
            if to_group is None or form.cleaned_data.get("DELETE"):
                continue
            if group.pk is not None and to_group.pk == group.pk:
                form.add_error("to_group", "A group cannot fall back to itself.")
            elif to_group.org_id is not None and to_group.org_id != group.org_id:
                form.add_error("to_group", "Choose a shared group or one of this group's organisation.")
        if any(form.errors for form in self.forms):
            raise ValidationError("Correct the fallbacks below.")


class FallbackInline(admin.TabularInline):
    model = Fallback
    fk_name = "group"
    formset = FallbackFormSet
    fields = ("trigger", "to_group", "position")
    extra = 0


def _deployment_count() -> Coalesce:
    counts = (
        Deployment.objects.filter(group=OuterRef("pk"), enabled=True)
        .order_by()
        .values("group")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counts, output_field=IntegerField()), 0)


@admin.register(ModelGroup)
class ModelGroupAdmin(admin.ModelAdmin):
    list_display = ("name", "org", "strategy", "num_retries", "allowed_fails", "cooldown_seconds", "deployment_count")
    list_filter = ("strategy", "org")
    search_fields = ("name", "org__slug", "deployments__name", "deployments__upstream_model")
    list_select_related = ("org",)
    autocomplete_fields = ("org",)
    fields = ("org", "name", "strategy", "num_retries", "allowed_fails", "cooldown_seconds")
    inlines = (DeploymentInline, FallbackInline)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(deployment_count=_deployment_count())

    @admin.display(description="Enabled deployments", ordering="deployment_count")
    def deployment_count(self, obj):
        return obj.deployment_count
