"""Dashboard pages. Each view starts from `dashboards.access`, then reads through selectors."""

from __future__ import annotations

import csv
import json

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_POST

from dashboards import access, pages, selectors, services, sessions
from dashboards.forms import LogFilterForm, SessionFilterForm, TimeZoneForm, UsageFilterForm
from dashboards.selectors import Scope
from telemetry import read

CSV_COLUMNS = (
    ("requests", "requests"),
    ("errors", "errors"),
    ("error_rate", "error_rate"),
    ("input_tokens", "input_tokens"),
    ("output_tokens", "output_tokens"),
    ("cached_input_tokens", "cache_read_tokens"),
    ("cost_usd", "cost"),
    ("latency_p50_ms", "latency_p50"),
    ("latency_p95_ms", "latency_p95"),
    ("latency_p99_ms", "latency_p99"),
    ("ttfb_avg_ms", "ttfb_avg"),
)
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection); the quote
# makes it text. Only text cells are touched: numbers stay numbers.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _status(form) -> int:
    # Invalid filters still get the page, with the default view and the errors shown.
    return 400 if form.errors else 200


def _usage_view(request, *, scope: Scope, template: str, context: dict):
    form = UsageFilterForm(request.GET)
    params = pages.usage_params(request.GET)
    filters = form.usage_filters()
    if form.range_chosen and not form.errors:
        default = selectors.DEFAULT_RANGE
    else:
        default = selectors.default_range_key(scope=scope, filters=filters)
    page = pages.usage_page(scope=scope, window=form.window(default=default), filters=filters, params=params)
    return render(
        request,
        template,
        {
            **context,
            "form": form,
            "page": page,
            "params": params,
            "export_url": pages.export_url(scope=scope),
            **_logs_link(scope=scope, params=params),
        },
        status=_status(form),
    )


def _logs_link(*, scope: Scope, params: dict) -> dict:
    if scope.across_orgs:
        return {}
    narrowing = {"project": scope.project_id, "user": scope.user_id}
    return {"logs_url": pages.logs_url(org=scope.org_ids[0], params=params, **narrowing)}


@require_GET
@login_required
def overview(request):
    orgs = list(access.visible_orgs(user=request.user))
    scope = Scope(org_ids=tuple(org.slug for org in orgs), across_orgs=True)
    return _usage_view(request, scope=scope, template="dashboards/overview.html", context={"orgs": orgs})


@require_GET
@login_required
def org_dashboard(request, org_slug):
    org = access.org_for_user(user=request.user, org_slug=org_slug)
    return _usage_view(request, scope=Scope(org_ids=(org.slug,)), template="dashboards/org.html", context={"org": org})


@require_GET
@login_required
def project_dashboard(request, org_slug, project_slug):
    org, project = access.project_for_user(user=request.user, org_slug=org_slug, project_slug=project_slug)
    scope = Scope(org_ids=(org.slug,), project_id=project.slug)
    context = {"org": org, "project": project}
    return _usage_view(request, scope=scope, template="dashboards/project.html", context=context)


@require_GET
@login_required
def user_dashboard(request, org_slug, user_id):
    org = access.org_for_user(user=request.user, org_slug=org_slug)
    scope = Scope(org_ids=(org.slug,), user_id=user_id)
    context = {"org": org, "end_user": user_id}
    return _usage_view(request, scope=scope, template="dashboards/user.html", context=context)


def _export(request, *, scope: Scope, name: str):
    form = UsageFilterForm(request.GET)
    dimension = request.GET.get("by") or selectors.breakdown_dimensions(scope=scope)[0]
    if dimension not in selectors.BREAKDOWNS:
        raise Http404("No such breakdown")
    if form.errors:
        problems = "; ".join(f"{name}: {' '.join(errors)}" for name, errors in form.errors.items())
        return HttpResponseBadRequest(f"Invalid filters: {problems}", content_type="text/plain; charset=utf-8")
    window = form.window()
    rows = selectors.usage_breakdown(scope=scope, window=window, filters=form.usage_filters(), by=dimension, limit=None)
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    # The window's bounds in the viewer's time zone, with its offset, on every row.
    since, until = (moment.astimezone(window.tzinfo) for moment in (window.since, window.until))
    filename = f"{slugify(name)}-by-{dimension.removesuffix('_id')}-{since:%Y%m%d}-{until:%Y%m%d}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    writer.writerow([dimension, *(header for header, _ in CSV_COLUMNS), "window_start", "window_end"])
    bounds = [since.isoformat(timespec="seconds"), until.isoformat(timespec="seconds")]
    for stats in rows:
        values = [getattr(stats, attribute) for _, attribute in CSV_COLUMNS]
        cells = ("" if value is None else _csv_cell(value) for value in values)
        writer.writerow([_csv_cell(stats.key), *cells, *bounds])
    return response


def _csv_cell(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


@require_GET
@login_required
def overview_export(request):
    scope = Scope(
        org_ids=tuple(access.visible_orgs(user=request.user).values_list("slug", flat=True)), across_orgs=True
    )
    return _export(request, scope=scope, name="organisations")


@require_GET
@login_required
def org_export(request, org_slug):
    org = access.org_for_user(user=request.user, org_slug=org_slug)
    return _export(request, scope=Scope(org_ids=(org.slug,)), name=org.slug)


@require_GET
@login_required
def project_export(request, org_slug, project_slug):
    org, project = access.project_for_user(user=request.user, org_slug=org_slug, project_slug=project_slug)
    scope = Scope(org_ids=(org.slug,), project_id=project.slug)
    return _export(request, scope=scope, name=f"{org.slug}-{project.slug}")


@require_GET
@login_required
def user_export(request, org_slug, user_id):
    org = access.org_for_user(user=request.user, org_slug=org_slug)
    return _export(request, scope=Scope(org_ids=(org.slug,), user_id=user_id), name=f"{org.slug}-{user_id}")


@require_GET
@login_required
def log_explorer(request, org_slug):
    org = access.org_for_user(user=request.user, org_slug=org_slug)
    form = LogFilterForm(request.GET)
    window = form.window()
    filters = form.log_filters()
    text = form.search_text()
    # A request id pasted into the search opens that request.
    if text and not form.value("cursor") and read.looks_like_request_id(text):
        found = read.request_log_find(org_ids=[org.slug], request_id=text)
        if found is not None:
            return redirect("dashboards:log_detail", org.slug, found.pk)
    content_visible = access.may_see_content(user=request.user, org=org)
    if not content_visible:
        # Not run at all: which rows match would tell what the prompts and replies say.
        text = ""
    page = read.request_log_search(
        org_id=org.slug, window=window, text=text, filters=filters, cursor=form.value("cursor")
    )
    query = {key: value for key, value in request.GET.items() if key != "cursor" and value}
    return render(
        request,
        "dashboards/logs.html",
        {
            "org": org,
            "form": form,
            "window": window,
            "filters": filters,
            "search": text,
            "log_page": page,
            "params": pages.usage_params(request.GET),
            "choices": selectors.filter_choices(
                scope=Scope(org_ids=(org.slug,)), window=window, dimensions=selectors.EXPLORER_CHOICES
            ),
            "projects": selectors.project_names(org_ids=[org.slug]),
            "next_url": pages.with_params(request.path, query | {"cursor": page.next_cursor})
            if page.next_cursor
            else None,
            "first_url": pages.with_params(request.path, query),
            "is_first_page": not form.value("cursor"),
            "content_visible": content_visible,
        },
        status=_status(form),
    )


@require_POST
@login_required
def time_zone(request):
    """Save the time zone the user sees every page in: picked in the header, or the browser's own
    sent by the page on a first visit (`detected`, answered with 204 rather than a redirect)."""
    form = TimeZoneForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest("Not a time zone.", content_type="text/plain; charset=utf-8")
    services.user_time_zone_save(user=request.user, time_zone=form.cleaned_data["time_zone"])
    if form.cleaned_data["detected"]:
        return HttpResponse(status=204)
    next_url = form.cleaned_data["next"]
    if not next_url or not url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        next_url = reverse("dashboards:overview")
    return redirect(next_url)


@require_GET
@login_required
def find_request(request):
    """The request with the gateway's (x-request-id) or the provider's request id given as `id`,
    among the orgs the user may see; 404 for any other."""
    found = read.request_log_find(
        org_ids=access.visible_org_slugs(user=request.user), request_id=request.GET.get("id", "")
    )
    if found is None:
        raise Http404("No such request")
    return redirect("dashboards:log_detail", found.org_id, found.pk)


@require_GET
@login_required
def log_detail(request, org_slug, log_id):
    org = access.org_for_user(user=request.user, org_slug=org_slug)
    log = read.request_log_get(org_id=org.slug, request_id=log_id)
    if log is None:
        raise Http404("No such request log")
    document = log.log_data if isinstance(log.log_data, dict) else {}
    content_visible = access.may_see_content(user=request.user, org=org)
    if not content_visible:
        document = read.document_without_content(document)
    attributes = document.get("attributes") or {}
    metadata = attributes.get("metadata") or {}
    response = attributes.get("response")
    streamed = None
    if isinstance(response, dict) and "streamed_data" in response:
        response = dict(response)
        streamed = response.pop("streamed_data")
    conversation = sessions.request_conversation(log, content_visible=content_visible)
    return render(
        request,
        "dashboards/log_detail.html",
        {
            "org": org,
            "log": log,
            "metadata": metadata,
            "redacted": bool(metadata.get("content_redacted")),
            "content_visible": content_visible,
            "request_json": _pretty(attributes.get("request")) if content_visible else "",
            "response_json": _pretty(response) if content_visible else "",
            "streamed": [_pretty(chunk) for chunk in streamed] if streamed is not None else None,
            "document_json": _pretty(document),
            "params": pages.usage_params(request.GET),
            "conversation": conversation,
            "session_url": reverse("dashboards:session", args=[org.slug, log.thread_id]) if log.thread_id else None,
        },
    )


def _pretty(value) -> str:
    if value is None:
        return ""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


@require_GET
@login_required
def session_list(request, org_slug):
    """The org's conversation threads, from the per-thread rollup."""
    org = access.org_for_user(user=request.user, org_slug=org_slug)
    form = SessionFilterForm(request.GET)
    window = form.window()
    filters = form.session_filters()
    page = sessions.session_list(org_id=org.slug, window=window, filters=filters, page=form.value("page") or 1)
    query = {key: value for key, value in request.GET.items() if key != "page" and value}
    return render(
        request,
        "dashboards/sessions.html",
        {
            "org": org,
            "form": form,
            "window": window,
            "filters": filters,
            "session_page": page,
            "projects": sessions.session_projects(org_id=org.slug),
            "next_url": pages.with_params(request.path, query | {"page": page.page + 1}) if page.has_next else None,
            "previous_url": pages.with_params(request.path, query | {"page": page.page - 1}) if page.page > 1 else None,
        },
        status=_status(form),
    )


@require_GET
@login_required
def session_detail(request, org_slug, thread_id):
    """One thread's requests in order, read as one conversation."""
    org = access.org_for_user(user=request.user, org_slug=org_slug)
    project_id = request.GET.get("project")
    summary = sessions.thread_summary(org_id=org.slug, thread_id=thread_id, project_id=project_id)
    after = read.decode_cursor(request.GET.get("after", "")) if request.GET.get("after") else None
    content_visible = access.may_see_content(user=request.user, org=org)
    view = sessions.thread_view(
        org=org, thread_id=thread_id, project_id=project_id, after=after, content_visible=content_visible
    )
    if summary is None and not view.entries:
        raise Http404("No such thread")
    query = {"project": project_id} if project_id is not None else {}
    next_url = None
    if view.after is not None:
        next_url = pages.with_params(request.path, query | {"after": read.encode_cursor(view.entries[-1].log)})
    return render(
        request,
        "dashboards/session.html",
        {
            "org": org,
            "thread_id": thread_id,
            "summary": summary,
            "view": view,
            "content_visible": content_visible,
            "next_url": next_url,
            "first_url": pages.with_params(request.path, query) if after is not None else None,
            "project_id": project_id,
        },
    )
