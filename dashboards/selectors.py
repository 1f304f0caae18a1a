"""Reads for the dashboards. Charts and breakdowns read the rollups only; the raw request log is
read through telemetry's read API (`telemetry.read`), one page or one row at a time."""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Context, Decimal
from zoneinfo import ZoneInfo

from django.db import connection, transaction
from django.utils import timezone

from dashboards import demo, histograms
from dashboards.models import (
    ADDITIVE_MEASURES,
    DailyFacetUsage,
    DailyProjectUsage,
    DailyUsage,
    FacetUsage,
    HourlyFacetUsage,
    HourlyProjectUsage,
    HourlyUsage,
)
from proxy.models import Organisation, Project

# Beyond a week the charts are per day and read the daily rollups.
HOURLY_MAX_SPAN = timedelta(days=7)
RANGES = {"24h": ("Last 24 hours", timedelta(hours=24)), "7d": ("Last 7 days", timedelta(days=7))}
DAY_RANGES = {"30d": ("Last 30 days", 30), "90d": ("Last 90 days", 90)}
DEFAULT_RANGE = "7d"
BREAKDOWNS = ("org_id", "project_id", "user_id", "model", "provider", "experiment_id", "error_type")
BREAKDOWN_LIMIT = 50


# --- Windows, scopes and filters ------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A time range cut to whole buckets of its granularity, so rollups cover it exactly.

    Hours are UTC hours (shown in the viewer's time zone); days are the days of `zone`, each
    starting at its local midnight (on the hour before it, in a zone whose offset is not whole
    hours: the rollups count by the hour).
    """

    key: str
    label: str
    since: datetime
    until: datetime
    granularity: str  # "hour" or "day"
    zone: str = "UTC"

    @property
    def tzinfo(self) -> ZoneInfo:
        return ZoneInfo(self.zone)

    @property
    def step(self) -> timedelta:
        """A bucket's nominal length (a local day around a clock change is an hour off it)."""
        return timedelta(hours=1) if self.granularity == "hour" else timedelta(days=1)

    def buckets(self) -> list[datetime]:
        # The last bucket may be cut short by `until` (now): it is still a bucket of the window.
        if self.granularity == "hour":
            count = -((self.since - self.until) // timedelta(hours=1))
            return [self.since + index * timedelta(hours=1) for index in range(count)]
        return [start for _, start in self.days()]

    def days(self) -> list[tuple[date, datetime]]:
        """Each local day of the window with the start of its bucket."""
        days = []
        day = _local_day_of(self.since, self.tzinfo)
        while (start := _local_day_start(day, self.tzinfo)) < self.until:
            days.append((day, max(start, self.since)))
            day += timedelta(days=1)
        return days

    @property
    def days_are_utc_days(self) -> bool:
        """Whether every day bucket is a UTC day, which the daily rollups hold."""
        return all(bucket.astimezone(UTC).hour == 0 for bucket in self.buckets())


def _hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _local_day_start(day: date, zone: tzinfo) -> datetime:
    """The UTC hour holding the local midnight that starts `day` in `zone`."""
    return _hour_floor(datetime.combine(day, time.min, tzinfo=zone))


# An hourly bucket belongs to the local day whose (hour-floored) start it is at or after: the
# day of its last moment, for a midnight falling within the hour.
_HOUR_END = timedelta(seconds=3599)


def _local_day_of(bucket: datetime, zone: tzinfo) -> date:
    return (bucket + _HOUR_END).astimezone(zone).date()


def _local_day_sql(zone: str) -> str:
    """SQL for the local day (a midnight without zone) of a rollup row's hourly `bucket`, as `_local_day_of`."""
    if zone not in time_zone_names():
        raise ValueError(f"not a time zone: {zone!r}")
    return f"date_trunc('day', (bucket + interval '3599 seconds') AT TIME ZONE '{zone}')"


def window_from(
    *,
    range_key: str = DEFAULT_RANGE,
    start: date | None = None,
    end: date | None = None,
    now: datetime | None = None,
    zone: tzinfo | None = None,
) -> Window:
    """The window for a range choice ("24h", "7d", "30d", "90d", or "custom" with dates).

    It starts on a bucket boundary and never ends in the future: a window reaching today ends
    now, within the current hour's (or day's) bucket. Days and dates are those of `zone`
    (default: the current time zone, the viewer's).
    """
    now = now or timezone.now()
    zone = zone or timezone.get_current_timezone()
    name = str(getattr(zone, "key", None) or zone)
    if range_key == "custom" and start and end:
        start, end = min(start, end), max(start, end)
        since = _local_day_start(start, zone)
        until = min(_local_day_start(end + timedelta(days=1), zone), now)
        granularity = "hour" if until - since <= HOURLY_MAX_SPAN else "day"
        return Window("custom", f"{start:%Y-%m-%d} to {end:%Y-%m-%d}", since, max(since, until), granularity, name)
    if range_key in DAY_RANGES:
        label, days = DAY_RANGES[range_key]
        # The day whose bucket holds now: in a zone off the hour, the bucket of the local day about to
        # start already holds the minutes before its midnight (see _local_day_of).
        today = _local_day_of(_hour_floor(now), zone)
        since = _local_day_start(today + timedelta(days=1 - days), zone)
        return Window(range_key, label, since, now, "day", name)
    if range_key not in RANGES:
        range_key = DEFAULT_RANGE
    label, span = RANGES[range_key]
    next_hour = _hour_floor(now) + timedelta(hours=1)
    return Window(range_key, label, next_hour - span, now, "hour", name)


@dataclass(frozen=True)
class Scope:
    """Whose usage: one or more orgs (by slug), optionally narrowed to a project or an end user."""

    org_ids: tuple[str, ...]
    project_id: str | None = None
    user_id: str | None = None
    # The overview: every visible org side by side, however many there are.
    across_orgs: bool = False


@dataclass(frozen=True)
class UsageFilters:
    provider: str = ""
    model: str = ""
    status: str = ""
    experiment_id: str = ""


# --- Usage numbers --------------------------------------------------------------


@dataclass
class UsageStats:
    """Summed rollup measures for one group (an org, a bucket, a model...), with derived numbers."""

    key: object = None
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cost: Decimal = Decimal(0)
    latency_sum: int = 0
    latency_count: int = 0
    ttfb_sum: int = 0
    ttfb_count: int = 0
    latency_histogram: list[int] = field(default_factory=lambda: [0] * histograms.BUCKET_COUNT)
    ttfb_histogram: list[int] = field(default_factory=lambda: [0] * histograms.BUCKET_COUNT)
    label: str = ""

    @classmethod
    def from_sums(cls, sums: dict, *, key=None) -> UsageStats:
        """From summed rollup columns by name; a histogram not among them stays empty."""

        def value(name):
            # PostgreSQL sums BIGINT columns as NUMERIC.
            return int(sums.get(name) or 0)

        get = sums.get
        return cls(
            key=key,
            requests=value("requests"),
            errors=value("errors"),
            input_tokens=value("input_tokens"),
            output_tokens=value("output_tokens"),
            cache_read_tokens=value("cache_read_tokens"),
            cost=_decimal(sums.get("cost")),
            latency_sum=value("latency_sum"),
            latency_count=value("latency_count"),
            ttfb_sum=value("ttfb_sum"),
            ttfb_count=value("ttfb_count"),
            # INTEGER columns, summed as BIGINT: already ints.
            latency_histogram=[get(name) or 0 for name in histograms.LATENCY_COLUMNS],
            ttfb_histogram=[get(name) or 0 for name in histograms.TTFB_COLUMNS],
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def latency_avg(self) -> float | None:
        return self.latency_sum / self.latency_count if self.latency_count else None

    @property
    def ttfb_avg(self) -> float | None:
        return self.ttfb_sum / self.ttfb_count if self.ttfb_count else None

    @property
    def latency_p50(self) -> float | None:
        return histograms.percentile(self.latency_histogram, 0.50)

    @property
    def latency_p95(self) -> float | None:
        return histograms.percentile(self.latency_histogram, 0.95)

    @property
    def latency_p99(self) -> float | None:
        return histograms.percentile(self.latency_histogram, 0.99)

    @property
    def ttfb_p50(self) -> float | None:
        return histograms.percentile(self.ttfb_histogram, 0.50)

    @property
    def ttfb_p95(self) -> float | None:
        return histograms.percentile(self.ttfb_histogram, 0.95)

    def merge(self, other: UsageStats) -> None:
        """Add another group's measures to this one: every measure is additive."""
        for name in _SCALAR_MEASURES:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latency_histogram = [a + b for a, b in zip(self.latency_histogram, other.latency_histogram, strict=True)]
        self.ttfb_histogram = [a + b for a, b in zip(self.ttfb_histogram, other.ttfb_histogram, strict=True)]


_HISTOGRAM_COLUMNS = frozenset((*histograms.LATENCY_COLUMNS, *histograms.TTFB_COLUMNS))
_SCALAR_MEASURES = [name for name in ADDITIVE_MEASURES if name not in _HISTOGRAM_COLUMNS]
# Breakdown tables show TTFB as an average: its histogram would nearly double the work of every
# breakdown query, while the charts above them carry the TTFB percentiles.
_BREAKDOWN_MEASURES = tuple(name for name in ADDITIVE_MEASURES if name not in histograms.TTFB_COLUMNS)
# SQLite sums NUMERIC columns as floats, good to 15 significant digits (as Django reads them).
_FLOAT_DIGITS = Context(prec=15)


def _decimal(value) -> Decimal:
    if isinstance(value, Decimal):
        return value
    return _FLOAT_DIGITS.create_decimal_from_float(value or 0)


def _moment(value) -> datetime:
    # SQLite hands back naive UTC, as Django writes it (as text from an expression); PostgreSQL
    # an aware datetime.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class _Segment:
    granularity: str
    since: datetime
    until: datetime


def _segments(window: Window) -> list[_Segment]:
    """The window as whole days read from daily rollups, plus any partial days from hourly ones.

    A week of hourly buckets holds many times the rows of its six or seven days, and only the
    charts need hours; totals and breakdowns can sum days.
    """
    if window.granularity == "day" and window.since == _day_start(window.since.astimezone(UTC).date()):
        return [_Segment("day", window.since, window.until)]
    # Otherwise (hours, or days starting at a local midnight that is not a UTC one) the UTC days
    # in between are read from daily rollups.
    first_day = _day_start(window.since.astimezone(UTC).date())
    if first_day < window.since:
        first_day += timedelta(days=1)
    last_day = _day_start(window.until.astimezone(UTC).date())
    if last_day <= first_day:
        return [_Segment("hour", window.since, window.until)]
    segments = [_Segment("day", first_day, last_day)]
    if window.since < first_day:
        segments.insert(0, _Segment("hour", window.since, first_day))
    if last_day < window.until:
        segments.append(_Segment("hour", last_day, window.until))
    return segments


@dataclass(frozen=True)
class _Part:
    """Rows of one rollup table, the conditions that pick them, and what a question's columns
    are called in that table where the names differ (a facet's `value`)."""

    table: str
    conditions: tuple[str, ...]
    params: tuple
    renamed: tuple[tuple[str, str], ...] = ()

    def where(self, condition: str, *params) -> _Part:
        return replace(self, conditions=(*self.conditions, condition), params=(*self.params, *params))

    def select(self, columns: Sequence[str]) -> str:
        names = dict(self.renamed)
        listed = ", ".join(f"{names[name]} AS {name}" if name in names else name for name in columns)
        return f"SELECT {listed} FROM {self.table} WHERE {' AND '.join(self.conditions)}"


@dataclass(frozen=True)
class _Rows:
    """The rollup rows a question reads: from one table, or for whole days from a daily one and
    for the hours around them from an hourly one.

    Usage reads are plain SQL: building a query of fifty SUMs through the ORM costs more than the
    database takes to answer it from the facet rollup.
    """

    parts: tuple[_Part, ...]

    def fetch(
        self,
        select: str,
        *,
        columns: Sequence[str],
        group_by: str = "",
        order_by: str = "",
        limit: int | None = None,
    ) -> list[tuple]:
        """`select` over the `columns` of every part's rows, as one query."""
        sql = f"SELECT {select} FROM ({' UNION ALL '.join(part.select(columns) for part in self.parts)}) AS usage_rows"
        if group_by:
            sql += f" GROUP BY {group_by}"
        if order_by:
            sql += f" ORDER BY {order_by}"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with transaction.atomic(savepoint=False), connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # Rollup reads pick their rows by org and time through an index: starting parallel
                # workers costs more than they save, but the planner (pricing every page read as
                # a disk seek) often plans them, and a Parallel Append for every read of days and
                # hours together.
                cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")
            cursor.execute(sql, [param for part in self.parts for param in part.params])
            return cursor.fetchall()

    def sums(
        self,
        *,
        key: str,
        measures: Sequence[str],
        by_cost: bool = False,
        limit: int | None = None,
        key_sql: str | None = None,
    ) -> list[UsageStats]:
        """The measures summed per value of the column `key` (or of `key_sql`, an expression over
        it), one `UsageStats` each."""
        select = ", ".join((key_sql or key, *(f"SUM({name})" for name in measures)))
        # Biggest spenders first, then most requests: the order of every breakdown.
        order_by = f"{2 + measures.index('cost')} DESC, {2 + measures.index('requests')} DESC, 1" if by_cost else ""
        rows = self.fetch(select, columns=(key, *measures), group_by="1", order_by=order_by, limit=limit)
        return [UsageStats.from_sums(dict(zip(measures, sums, strict=True)), key=value) for value, *sums in rows]


def _in_segment(model, *, scope: Scope, segment: Window | _Segment) -> _Part:
    since, until = (connection.ops.adapt_datetimefield_value(moment) for moment in (segment.since, segment.until))
    part = _Part(model._meta.db_table, ("bucket >= %s", "bucket < %s"), (since, until))
    # A single org is an equality, which PostgreSQL plans better than IN with one item.
    if len(scope.org_ids) == 1:
        return part.where("org_id = %s", scope.org_ids[0])
    return part.where(f"org_id IN ({', '.join(['%s'] * len(scope.org_ids))})", *scope.org_ids)


def _combinations(*, scope: Scope, segment: Window | _Segment, filters: UsageFilters, by: str | None) -> _Part:
    # Only a question about end users needs the per-user rollups; the others have far fewer rows.
    if scope.user_id is not None or by == "user_id":
        model = HourlyUsage if segment.granularity == "hour" else DailyUsage
    else:
        model = HourlyProjectUsage if segment.granularity == "hour" else DailyProjectUsage
    part = _in_segment(model, scope=scope, segment=segment)
    if scope.project_id is not None:
        part = part.where("project_id = %s", scope.project_id)
    if scope.user_id is not None:
        part = part.where("user_id = %s", scope.user_id)
    for name in ("provider", "model", "status", "experiment_id"):
        if value := getattr(filters, name):
            part = part.where(f"{name} = %s", value)
    if by == "error_type":
        part = part.where("status = 'error'")
    return part


def _facets(model, *, scope: Scope, segment: Window | _Segment, dimensions: Sequence[str], renamed=()) -> _Part:
    part = replace(_in_segment(model, scope=scope, segment=segment), renamed=renamed)
    if len(dimensions) == 1:
        part = part.where("dimension = %s", dimensions[0])
    else:
        part = part.where(f"dimension IN ({', '.join(['%s'] * len(dimensions))})", *dimensions)
    if scope.project_id is not None:
        part = part.where("project_id = %s", scope.project_id)
    return part


def _answers_from_facets(
    *, scope: Scope, filters: UsageFilters, segment: Window | _Segment, dimensions: Sequence[str]
) -> type[FacetUsage] | None:
    """The facet rollup that answers a question about these buckets' `dimensions`, or None.

    A facet row holds one dimension's value and nothing else, so an end user or a filter needs
    the combinations; so do hourly breakdowns, which cover a day or two (where they are few).
    """
    model = HourlyFacetUsage if segment.granularity == "hour" else DailyFacetUsage
    if scope.user_id is not None or any(dimension not in model.facets for dimension in dimensions):
        return None
    if any(getattr(filters, name) for name in ("provider", "model", "status", "experiment_id")):
        return None
    return model


# The facet (see `dashboards.models.FacetUsage`) each question reads: series, org and project
# breakdowns sum the projects' totals, the other breakdowns their dimension's values.
_FACET_OF = {None: "", "org_id": "", "project_id": "", "error_type": "error_type"} | {
    name: name for name in ("user_id", "model", "provider", "experiment_id")
}


def _usage_rows(
    *, scope: Scope, window: Window, filters: UsageFilters, by: str | None = None, whole_days: bool = False
) -> _Rows:
    """The rows for totals (`by` None) or a breakdown by `by`, with its values in the column `by`.

    Over the window's own buckets, or with `whole_days` over its whole days from daily rollups
    and only the hours around them from hourly ones.
    """
    parts = []
    dimension = _FACET_OF[by]
    renamed = ((by, "value"),) if dimension else ()
    for segment in _segments(window) if whole_days else [window]:
        facets = _answers_from_facets(scope=scope, filters=filters, segment=segment, dimensions=(dimension,))
        if facets is not None:
            parts.append(_facets(facets, scope=scope, segment=segment, dimensions=(dimension,), renamed=renamed))
        else:
            parts.append(_combinations(scope=scope, segment=segment, filters=filters, by=by))
    return _Rows(tuple(parts))


def usage_series(*, scope: Scope, window: Window, filters: UsageFilters) -> list[UsageStats]:
    """One `UsageStats` per bucket of the window, zero where there was no traffic."""
    buckets = window.buckets()
    found: dict[datetime, UsageStats] = {}
    if scope.org_ids:
        read = _as_read(window)
        rows = _usage_rows(scope=scope, window=read, filters=filters)
        to_bucket = _bucket_mapper(window, read)
        key_sql = _local_day_sql(window.zone) if read is not window and connection.vendor == "postgresql" else None
        for stats in rows.sums(key="bucket", measures=ADDITIVE_MEASURES, key_sql=key_sql):
            stats.key = to_bucket(stats.key, summed_by_day=key_sql is not None)
            if stats.key in found:
                found[stats.key].merge(stats)
            else:
                found[stats.key] = stats
    return [found.get(bucket) or UsageStats(key=bucket) for bucket in buckets]


def _bucket_mapper(window: Window, read: Window):
    """What turns a key read from the rollups into the window's bucket: an hour's bucket, or a
    local day's (from an hour, or from a day PostgreSQL summed)."""
    if read is window:
        return lambda key, summed_by_day: _moment(key)
    starts = dict(window.days())

    def to_bucket(key, *, summed_by_day: bool) -> datetime:
        day = key.date() if summed_by_day else _local_day_of(_moment(key), window.tzinfo)
        return starts.get(day) or window.since

    return to_bucket


def _as_read(window: Window) -> Window:
    """The window as its rollups are read: days that are not UTC days are summed from hours."""
    if window.granularity == "day" and not window.days_are_utc_days:
        return replace(window, granularity="hour")
    return window


def first_traffic(*, scope: Scope, window: Window, filters: UsageFilters) -> datetime | None:
    """The first bucket of the window with any traffic in the scope, or None."""
    if not scope.org_ids:
        return None
    [(first,)] = _usage_rows(scope=scope, window=window, filters=filters).fetch("MIN(bucket)", columns=("bucket",))
    return None if first is None else _moment(first)


def default_range_key(*, scope: Scope, filters: UsageFilters, now: datetime | None = None) -> str:
    """The range a page shows when none is asked for: the last 24 hours while all of the scope's
    traffic is that recent (a new org, project or user), so that its first hours fill the
    charts rather than a sliver at the end of a week."""
    now = now or timezone.now()
    first = first_traffic(scope=scope, window=window_from(range_key=DEFAULT_RANGE, now=now), filters=filters)
    if first is not None and first >= window_from(range_key="24h", now=now).since:
        return "24h"
    return DEFAULT_RANGE


def usage_breakdown(
    *, scope: Scope, window: Window, filters: UsageFilters, by: str, limit: int | None = BREAKDOWN_LIMIT
) -> list[UsageStats]:
    """Usage grouped by one dimension, biggest spenders first (then most requests).

    Rows carry latency percentiles and the TTFB average, not TTFB percentiles.
    """
    if by not in BREAKDOWNS:
        raise ValueError(f"cannot break usage down by {by!r}")
    if not scope.org_ids:
        return []
    rows = _usage_rows(scope=scope, window=window, filters=filters, by=by, whole_days=True)
    groups = rows.sums(key=by, measures=_BREAKDOWN_MEASURES, by_cost=True, limit=limit)
    # Again in Python, whose string order (unlike the database's collation) every page shares.
    return sorted(groups, key=lambda stats: (-stats.cost, -stats.requests, stats.key))


def error_type_series(*, scope: Scope, window: Window, filters: UsageFilters) -> dict[str, list[int]]:
    """Errors per bucket for each error type, aligned with `window.buckets()`."""
    if not scope.org_ids:
        return {}
    read = _as_read(window)
    rows = _usage_rows(scope=scope, window=read, filters=filters, by="error_type")
    position = {bucket: index for index, bucket in enumerate(window.buckets())}
    to_bucket = _bucket_mapper(window, read)
    key_sql = _local_day_sql(window.zone) if read is not window and connection.vendor == "postgresql" else None
    series: dict[str, list[int]] = {}
    columns = ("bucket", "error_type", "errors")
    select = f"{key_sql or 'bucket'}, error_type, SUM(errors)"
    for key, error_type, count in rows.fetch(select, columns=columns, group_by="1, 2"):
        counts = series.setdefault(error_type, [0] * len(position))
        if (index := position.get(to_bucket(key, summed_by_day=key_sql is not None))) is not None:
            counts[index] += int(count)
    return dict(sorted(series.items(), key=lambda item: -sum(item[1])))


# The menus of the usage pages' filters; the explorer's add end users and error types.
USAGE_CHOICES = ("provider", "model", "experiment_id")
EXPLORER_CHOICES = (*USAGE_CHOICES, "user_id", "error_type")


def filter_choices(*, scope: Scope, window: Window, dimensions: Sequence[str] = USAGE_CHOICES) -> dict[str, list[str]]:
    """The values of `dimensions` seen in the scope over the window, for filter menus.

    From the facet rollups wherever they hold the dimensions (whole days), else from the
    combinations (per user where end users are asked for).
    """
    choices: dict[str, set[str]] = {name: set() for name in dimensions}
    by = "user_id" if "user_id" in choices else None
    facets, combinations = [], []
    for segment in _segments(window) if scope.org_ids else []:
        model = _answers_from_facets(scope=scope, filters=UsageFilters(), segment=segment, dimensions=tuple(choices))
        if model is not None:
            facets.append(_facets(model, scope=scope, segment=segment, dimensions=tuple(choices)))
        else:
            combinations.append(_combinations(scope=scope, segment=segment, filters=UsageFilters(), by=by))
    if facets:
        for name, value in _Rows(tuple(facets)).fetch("DISTINCT dimension, value", columns=("dimension", "value")):
            choices[name].add(value)
    if combinations:
        for values in _Rows(tuple(combinations)).fetch(f"DISTINCT {', '.join(choices)}", columns=tuple(choices)):
            for name, value in zip(choices, values, strict=True):
                choices[name].add(value)
    return {name: sorted(value for value in values if value) for name, values in choices.items()}


def project_names(*, org_ids: Iterable[str]) -> dict[tuple[str, str], str]:
    return {
        (org_slug, slug): name
        for org_slug, slug, name in Project.objects.filter(org__slug__in=list(org_ids)).values_list(
            "org__slug", "slug", "name"
        )
    }


def org_names(*, org_ids: Iterable[str]) -> dict[str, str]:
    return dict(Organisation.objects.filter(slug__in=list(org_ids)).values_list("slug", "name"))


def breakdown_dimensions(*, scope: Scope) -> Sequence[str]:
    """The breakdown tables a page shows: every dimension below the page's own level."""
    if scope.across_orgs:
        return ("org_id", "model", "provider")
    if scope.user_id is not None:
        return ("project_id", "model", "provider", "experiment_id", "error_type")
    if scope.project_id is not None:
        return ("user_id", "model", "provider", "experiment_id", "error_type")
    return ("project_id", "user_id", "model", "provider", "experiment_id", "error_type")


def user_time_zone(*, user) -> ZoneInfo | None:
    """The time zone `user` saved, or None (anonymous, or none saved yet: UTC)."""
    if not user.is_authenticated:
        return None
    from dashboards.models import DashboardPreference

    name = DashboardPreference.objects.filter(user=user).values_list("time_zone", flat=True).first()
    if not name or name not in time_zone_names():
        return None
    return ZoneInfo(name)


@functools.cache
def time_zone_names() -> frozenset[str]:
    """Every IANA time zone name this system knows."""
    return frozenset(zoneinfo.available_timezones())


def demo_org_slugs() -> list[str]:
    """The demo orgs `seed_demo_logs` created and nobody removed."""
    candidates = Organisation.objects.filter(slug__startswith=demo.DEMO_SLUG_PREFIX).values_list("slug", flat=True)
    return [slug for slug in candidates if demo.is_demo_slug(slug)]
