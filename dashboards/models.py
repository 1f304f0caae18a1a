"""Rollups of the request log: what every chart and breakdown reads, so pages never scan raw logs.

One row per time bucket and combination of who (org, project, user, experiment), what
(model, provider) and outcome (status, error type), hourly and daily; and the same again
without the end user, several times fewer rows, for everything that is not about one user.
Every measure is additive, so any coarser view is a SUM over rows, and latency percentiles
come from summed histograms (see `dashboards.histograms`). Rows are written only by
`dashboards.rollups`.

Dimensions are never NULL: a missing value is stored as "", so that the unique key (which
the incremental upsert conflicts on) treats it as one value on every database.

Org and project pages (and the overview across orgs) without filters show each dimension on its
own, never a combination of them. The facet rollups hold just that: one row per bucket, project
and value of one dimension, tens of rows per project and day where the combinations run to
hundreds, and per end user to thousands. Per hour they hold only what charts per hour read (the
totals and error types); hourly breakdowns cover a day or two at most, where the combinations are
few enough.
"""

from django.conf import settings
from django.db import models

from dashboards.histograms import LATENCY_COLUMNS, TTFB_COLUMNS
from telemetry import schema

# The dimensions of the finest rollups; the project-level ones leave out the end user.
DIMENSIONS = schema.ROLLUP_DIMENSIONS
PROJECT_DIMENSIONS = tuple(name for name in DIMENSIONS if name != "user_id")
ADDITIVE_MEASURES = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cost",
    "latency_sum",
    "latency_count",
    "ttfb_sum",
    "ttfb_count",
    *LATENCY_COLUMNS,
    *TTFB_COLUMNS,
)


class Usage(models.Model):
    bucket = models.DateTimeField(help_text="Start of the hour or day (UTC).")
    org_id = models.TextField()

    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0, db_default=0, help_text="Input tokens read from a cache")
    cost = models.DecimalField(max_digits=24, decimal_places=10, default=0)
    latency_sum = models.BigIntegerField(default=0, help_text="ms, over the requests with a latency")
    latency_count = models.BigIntegerField(default=0)
    ttfb_sum = models.BigIntegerField(default=0, help_text="ms, over the requests with a TTFB")
    ttfb_count = models.BigIntegerField(default=0)

    # The columns a row is keyed on besides its bucket, org first.
    dimensions: tuple[str, ...] = ("org_id",)

    class Meta:
        abstract = True


# Forty histogram buckets each for latency and TTFB, as plain integer columns: summing columns
# works the same on PostgreSQL and SQLite, which an array or JSON value would not.
for _name in (*LATENCY_COLUMNS, *TTFB_COLUMNS):
    Usage.add_to_class(_name, models.IntegerField(default=0))


class CombinationUsage(Usage):
    """Usage per combination of project, experiment, model, provider and outcome."""

    project_id = models.TextField()
    experiment_id = models.TextField()
    model = models.TextField()
    provider = models.TextField()
    status = models.TextField()
    error_type = models.TextField(help_text="Empty unless the status is error.")

    dimensions = PROJECT_DIMENSIONS

    class Meta:
        abstract = True

    def __str__(self):
        return f"{self.bucket:%Y-%m-%d %H:00} {self.org_id}/{self.project_id} {self.model}"


class UserUsage(CombinationUsage):
    """Usage down to the end user: what user pages and per-user breakdowns read."""

    user_id = models.TextField()

    dimensions = DIMENSIONS

    class Meta:
        abstract = True
        constraints = [
            # Led by org and bucket: it is also the index every org-wide read goes through.
            models.UniqueConstraint(fields=["org_id", "bucket", *DIMENSIONS[1:]], name="%(class)s_key"),
        ]
        indexes = [models.Index(fields=["org_id", "user_id", "bucket"], name="%(class)s_user")]


class ProjectUsage(CombinationUsage):
    """Usage without the end user, several times fewer rows: what every other chart and table reads."""

    class Meta:
        abstract = True
        constraints = [
            models.UniqueConstraint(fields=["org_id", "bucket", *PROJECT_DIMENSIONS[1:]], name="%(class)s_key"),
        ]
        indexes = [models.Index(fields=["org_id", "project_id", "bucket"], name="%(class)s_project")]


class HourlyUsage(UserUsage):
    class Meta(UserUsage.Meta):
        db_table = "dashboards_usage_hourly"
        verbose_name = "hourly usage by user"
        verbose_name_plural = "hourly usage by user"
        ordering = ["-bucket"]


class DailyUsage(UserUsage):
    class Meta(UserUsage.Meta):
        db_table = "dashboards_usage_daily"
        verbose_name = "daily usage by user"
        verbose_name_plural = "daily usage by user"
        ordering = ["-bucket"]


class HourlyProjectUsage(ProjectUsage):
    class Meta(ProjectUsage.Meta):
        db_table = "dashboards_project_usage_hourly"
        verbose_name = "hourly usage by project"
        verbose_name_plural = "hourly usage by project"
        ordering = ["-bucket"]


class DailyProjectUsage(ProjectUsage):
    class Meta(ProjectUsage.Meta):
        db_table = "dashboards_project_usage_daily"
        verbose_name = "daily usage by project"
        verbose_name_plural = "daily usage by project"
        ordering = ["-bucket"]


# The dimensions stored in `FacetUsage.dimension`: "" is the project's total (which org and
# project breakdowns group), and error types count only the requests that failed.
FACETS = ("", "user_id", "model", "provider", "experiment_id", "error_type")


class FacetUsage(Usage):
    """Usage per project and value of one dimension: what org and project pages without filters read."""

    project_id = models.TextField()
    dimension = models.TextField(help_text='What `value` is a value of; "" for the project\'s total.')
    value = models.TextField()

    dimensions = ("org_id", "project_id", "dimension", "value")
    # The values of `dimension` this rollup has rows for.
    facets: tuple[str, ...] = FACETS

    class Meta:
        abstract = True
        constraints = [
            # Led by org and dimension: every read asks for one dimension of an org (or of one of
            # its projects) over a range of buckets.
            models.UniqueConstraint(
                fields=["org_id", "dimension", "bucket", "project_id", "value"], name="%(class)s_key"
            ),
        ]

    def __str__(self):
        return f"{self.bucket:%Y-%m-%d %H:00} {self.org_id}/{self.project_id} {self.dimension or 'total'}={self.value}"


class HourlyFacetUsage(FacetUsage):
    facets = ("", "error_type")

    class Meta(FacetUsage.Meta):
        db_table = "dashboards_facet_usage_hourly"
        verbose_name = "hourly usage by project and error type"
        verbose_name_plural = "hourly usage by project and error type"
        ordering = ["-bucket"]


class DailyFacetUsage(FacetUsage):
    class Meta(FacetUsage.Meta):
        db_table = "dashboards_facet_usage_daily"
        verbose_name = "daily usage by dimension"
        verbose_name_plural = "daily usage by dimension"
        ordering = ["-bucket"]


class ThreadUsage(models.Model):
    """One conversation thread (the caller's thread id) of one project: what the sessions list reads.

    Kept by `dashboards.thread_rollups` as records are exported; every measure but `users` is
    additive, and `users` is the count of the thread's `ThreadUser` rows. A record without a
    thread id belongs to no thread; a missing project is stored as "", as in the other rollups.
    """

    org_id = models.TextField()
    project_id = models.TextField()
    thread_id = models.TextField()
    first_at = models.DateTimeField(help_text="The thread's first request.")
    last_at = models.DateTimeField(help_text="The thread's latest request.")
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cost = models.DecimalField(max_digits=24, decimal_places=10, default=0)
    users = models.IntegerField(default=0, help_text="Distinct end users seen in the thread.")

    class Meta:
        db_table = "dashboards_thread_usage"
        verbose_name = "thread usage"
        verbose_name_plural = "thread usage"
        ordering = ["-last_at"]
        constraints = [
            models.UniqueConstraint(fields=["org_id", "project_id", "thread_id"], name="thread_usage_key"),
        ]
        # The list reads an org's (or a project's) threads latest first.
        indexes = [
            models.Index(fields=["org_id", "last_at"], name="thread_usage_org_last"),
            models.Index(fields=["org_id", "project_id", "last_at"], name="thread_usage_project_last"),
        ]

    def __str__(self):
        return f"{self.org_id}/{self.project_id or '-'} {self.thread_id}"


class ThreadUser(models.Model):
    """An end user seen in a thread: the distinct set `ThreadUsage.users` counts, and the user filter."""

    org_id = models.TextField()
    project_id = models.TextField()
    thread_id = models.TextField()
    user_id = models.TextField()

    class Meta:
        db_table = "dashboards_thread_user"
        constraints = [
            models.UniqueConstraint(fields=["org_id", "project_id", "thread_id", "user_id"], name="thread_user_key"),
        ]
        indexes = [models.Index(fields=["org_id", "user_id"], name="thread_user_org_user")]

    def __str__(self):
        return f"{self.thread_id}: {self.user_id}"


class DashboardPreference(models.Model):
    """A dashboard user's own settings: for now the time zone every page, chart and CSV is shown in."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="dashboard_preference")
    # An IANA name ("Europe/Paris"); empty until the browser's own is detected or one is picked.
    time_zone = models.CharField(max_length=64, blank=True)

    def __str__(self):
        return f"{self.user} ({self.time_zone or 'UTC'})"
