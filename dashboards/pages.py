"""What a usage page shows: selector results turned into charts, tables and drill-down links.

Kept apart from the views so that every page (overview, org, project, user) and the CSV
export build the same numbers and links the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

from django.urls import reverse

from dashboards import selectors
from dashboards.selectors import Scope, UsageFilters, UsageStats, Window

# The querystring keys that describe a usage view; drill-down links carry them along.
USAGE_PARAMS = ("range", "start", "end", "provider", "model", "status", "experiment")
DIMENSION_LABELS = {
    "org_id": "Organisation",
    "project_id": "Project",
    "user_id": "User",
    "model": "Model",
    "provider": "Provider",
    "experiment_id": "Experiment",
    "error_type": "Error type",
}
# Breakdowns that narrow the current page by a filter rather than leading to another page.
_FILTER_PARAM = {"model": "model", "provider": "provider", "experiment_id": "experiment"}
_ERROR_COLORS = ["#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#7f7f7f"]
# "Errors by type" shows the commonest types and sums the rest, so that its legend stays a line or two.
ERROR_TYPES_SHOWN = 7


def with_params(url: str, params: dict) -> str:
    kept = {key: value for key, value in params.items() if value not in (None, "")}
    return f"{url}?{urlencode(kept)}" if kept else url


def add_params(url: str, **extra) -> str:
    path, _, query = url.partition("?")
    return with_params(path, dict(parse_qsl(query)) | extra)


def usage_params(query) -> dict:
    return {key: query.get(key, "") for key in USAGE_PARAMS if query.get(key)}


@dataclass
class BreakdownRow:
    stats: UsageStats
    label: str
    url: str | None
    logs_url: str | None

    @property
    def errors_url(self) -> str | None:
        return add_params(self.logs_url, status="error") if self.logs_url else None


@dataclass
class Breakdown:
    dimension: str
    title: str
    rows: list[BreakdownRow]
    export_url: str


@dataclass
class UsagePage:
    window: Window
    filters: UsageFilters
    totals: UsageStats
    charts: dict
    breakdowns: list[Breakdown] = field(default_factory=list)
    choices: dict = field(default_factory=dict)


def _dashboard_url(*, scope: Scope) -> str:
    if scope.across_orgs:
        return reverse("dashboards:overview")
    org = scope.org_ids[0]
    if scope.project_id is not None:
        return reverse("dashboards:project", args=[org, scope.project_id])
    if scope.user_id is not None:
        return reverse("dashboards:user", args=[org, scope.user_id])
    return reverse("dashboards:org", args=[org])


def export_url(*, scope: Scope) -> str:
    if scope.across_orgs:
        return reverse("dashboards:overview_export")
    org = scope.org_ids[0]
    if scope.project_id is not None:
        return reverse("dashboards:project_export", args=[org, scope.project_id])
    if scope.user_id is not None:
        return reverse("dashboards:user_export", args=[org, scope.user_id])
    return reverse("dashboards:org_export", args=[org])


def logs_url(*, org: str, params: dict, **narrowing) -> str:
    """The explorer for `org` with the page's filters and a row's own narrowing."""
    query = {key: value for key, value in params.items() if key in USAGE_PARAMS}
    query.update({key: value for key, value in narrowing.items() if value})
    return with_params(reverse("dashboards:logs", args=[org]), query)


def _row_links(*, scope: Scope, dimension: str, key: str, params: dict, names: dict) -> tuple[str | None, str | None]:
    """Where a breakdown row leads: the page one level down, and the explorer narrowed to the row."""
    if dimension == "org_id":
        return with_params(reverse("dashboards:org", args=[key]), params), logs_url(org=key, params=params)
    org = scope.org_ids[0]
    narrowing = {"project": scope.project_id, "user": scope.user_id}
    url = None
    if dimension == "project_id":
        narrowing["project"] = key
        # Logs may name a project that has since been deleted; it has no page of its own.
        if (org, key) in names:
            url = with_params(reverse("dashboards:project", args=[org, key]), params)
    elif dimension == "user_id":
        narrowing["user"] = key
        if key:
            url = with_params(reverse("dashboards:user", args=[org, key]), params)
    elif dimension == "error_type":
        narrowing |= {"status": "error", "error_type": key}
    else:
        param = _FILTER_PARAM[dimension]
        narrowing[param] = key
        if key:
            url = with_params(_dashboard_url(scope=scope), params | {param: key})
    # A row without a value (no user, no experiment) cannot be narrowed to in the explorer.
    logs = logs_url(org=org, params=params, **narrowing) if key or dimension == "error_type" else None
    return url or logs, logs


def _label(*, dimension: str, key: str, scope: Scope, names: dict) -> str:
    if dimension == "org_id":
        return names.get(key) or key
    if dimension == "project_id" and key:
        name = names.get((scope.org_ids[0], key))
        return f"{name} ({key})" if name and name != key else key
    return key or "(none)"


def breakdown(*, scope: Scope, window: Window, filters: UsageFilters, dimension: str, params: dict, limit=None):
    rows = selectors.usage_breakdown(
        scope=scope, window=window, filters=filters, by=dimension, limit=limit or selectors.BREAKDOWN_LIMIT
    )
    if dimension == "org_id":
        names = selectors.org_names(org_ids=[row.key for row in rows])
    elif dimension == "project_id":
        names = selectors.project_names(org_ids=scope.org_ids)
    else:
        names = {}
    built = []
    for stats in rows:
        url, logs = _row_links(scope=scope, dimension=dimension, key=stats.key, params=params, names=names)
        label = _label(dimension=dimension, key=stats.key, scope=scope, names=names)
        built.append(BreakdownRow(stats=stats, label=label, url=url, logs_url=logs))
    return Breakdown(
        dimension=dimension,
        title=DIMENSION_LABELS[dimension],
        rows=built,
        export_url=with_params(export_url(scope=scope), params | {"by": dimension}),
    )


def _round(value, digits=1):
    return None if value is None else round(value, digits)


def _error_type_counts(errors_by_type: dict[str, list[int]]) -> list[tuple[str, list[int]]]:
    """The commonest error types (`errors_by_type` comes commonest first), then "other" for the rest."""
    shown = [(error_type or "(unspecified)", counts) for error_type, counts in errors_by_type.items()]
    if len(shown) <= ERROR_TYPES_SHOWN + 1:
        return shown
    rest = [sum(counts) for counts in zip(*(counts for _, counts in shown[ERROR_TYPES_SHOWN:]), strict=True)]
    return [*shown[:ERROR_TYPES_SHOWN], ("other", rest)]


def _charts(*, window: Window, series: list[UsageStats], errors_by_type: dict[str, list[int]]) -> dict:
    fmt = "%Y-%m-%d %H:%M" if window.granularity == "hour" else "%Y-%m-%d"
    # Buckets are labelled in the window's time zone, the viewer's.
    labels = [stats.key.astimezone(window.tzinfo).strftime(fmt) for stats in series]

    def line(label, values, color, **extra):
        return {"label": label, "data": values, "borderColor": color, "backgroundColor": color, **extra}

    return {
        "cost": {
            "type": "bar",
            "labels": labels,
            "money": True,
            # Per-request costs are often millionths of a dollar: kept to the precision the log stores.
            "datasets": [line("Cost (USD)", [round(float(s.cost), 10) for s in series], "#2ca02c")],
        },
        "requests": {
            "type": "bar",
            "labels": labels,
            "stacked": True,
            "datasets": [
                line("Succeeded", [s.requests - s.errors for s in series], "#1f77b4"),
                line("Failed", [s.errors for s in series], "#d62728"),
            ],
        },
        "tokens": {
            "type": "line",
            "labels": labels,
            "datasets": [
                line("Input tokens", [s.input_tokens for s in series], "#17becf"),
                line("Output tokens", [s.output_tokens for s in series], "#9467bd"),
                line("Cached input tokens", [s.cache_read_tokens for s in series], "#bcbd22"),
            ],
        },
        "latency": {
            "type": "line",
            "labels": labels,
            "unit": "ms",
            "datasets": [
                line("p50", [_round(s.latency_p50) for s in series], "#1f77b4"),
                line("p95", [_round(s.latency_p95) for s in series], "#ff7f0e"),
                line("p99", [_round(s.latency_p99) for s in series], "#d62728"),
            ],
        },
        "ttfb": {
            "type": "line",
            "labels": labels,
            "unit": "ms",
            "datasets": [
                line("TTFB p50", [_round(s.ttfb_p50) for s in series], "#2ca02c"),
                line("TTFB p95", [_round(s.ttfb_p95) for s in series], "#8c564b"),
            ],
        },
        "error_rate": {
            "type": "line",
            "labels": labels,
            "unit": "%",
            "datasets": [
                line(
                    "Error rate (%)",
                    [_round(s.error_rate * 100, 2) if s.error_rate is not None else None for s in series],
                    "#d62728",
                )
            ],
        },
        "error_types": {
            "type": "bar",
            "labels": labels,
            "stacked": True,
            "datasets": [
                line(error_type, counts, _ERROR_COLORS[index % len(_ERROR_COLORS)])
                for index, (error_type, counts) in enumerate(_error_type_counts(errors_by_type))
            ],
        },
    }


def usage_page(*, scope: Scope, window: Window, filters: UsageFilters, params: dict) -> UsagePage:
    series = selectors.usage_series(scope=scope, window=window, filters=filters)
    errors_by_type = selectors.error_type_series(scope=scope, window=window, filters=filters)
    # Totals are the sum of the series: one query fewer, and the header always agrees with the charts.
    totals = UsageStats()
    for stats in series:
        totals.merge(stats)
    return UsagePage(
        window=window,
        filters=filters,
        totals=totals,
        charts=_charts(window=window, series=series, errors_by_type=errors_by_type),
        breakdowns=[
            breakdown(scope=scope, window=window, filters=filters, dimension=dimension, params=params)
            for dimension in selectors.breakdown_dimensions(scope=scope)
        ],
        choices=selectors.filter_choices(scope=scope, window=window),
    )
