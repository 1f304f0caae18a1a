"""The filters every dashboard page takes from its querystring, so any view can be linked to."""

from __future__ import annotations

from datetime import date

from django import forms
from django.utils import timezone

from dashboards.selectors import DEFAULT_RANGE, UsageFilters, Window, window_from
from telemetry.read import LogFilters

RANGE_CHOICES = [
    ("24h", "Last 24 hours"),
    ("7d", "Last 7 days"),
    ("30d", "Last 30 days"),
    ("90d", "Last 90 days"),
    ("custom", "Custom"),
]
STATUS_CHOICES = [("", "Any status"), ("success", "Success"), ("error", "Error")]
# A custom range is read from the rollups day by day: beyond this many days a page would take
# seconds and a chart would have more bars than pixels.
CUSTOM_RANGE_MAX_DAYS = 400
# No request log is older than the gateway; dates before it are typing mistakes.
EARLIEST_DATE = date(2000, 1, 1)
# One date format everywhere, whatever the browser's locale.
DATE_FORMAT = "%Y-%m-%d"


def _date_field() -> forms.DateField:
    return forms.DateField(required=False, input_formats=[DATE_FORMAT])


class UsageFilterForm(forms.Form):
    range = forms.ChoiceField(choices=RANGE_CHOICES, required=False)
    start = _date_field()
    end = _date_field()
    provider = forms.CharField(required=False, max_length=64)
    model = forms.CharField(required=False, max_length=200)
    status = forms.ChoiceField(choices=STATUS_CHOICES, required=False)
    experiment = forms.CharField(required=False, max_length=200)

    def __init__(self, data, *args, **kwargs):
        super().__init__(data, *args, **kwargs)
        # Invalid input still gets a page: the default view, with the errors shown above it.
        self.is_valid()

    def clean(self):
        cleaned = super().clean()
        # Dates are the viewer's (the current time zone's).
        today = timezone.localdate()
        for name in ("start", "end"):
            day = cleaned.get(name)
            if day is not None and not EARLIEST_DATE <= day <= today:
                self.add_error(
                    name,
                    f"Enter a date between {EARLIEST_DATE:{DATE_FORMAT}} and {today:{DATE_FORMAT}} "
                    f"({timezone.get_current_timezone_name()}).",
                )
        start, end = cleaned.get("start"), cleaned.get("end")
        if cleaned.get("range") == "custom" and start and end and abs((end - start).days) + 1 > CUSTOM_RANGE_MAX_DAYS:
            self.add_error("end", f"A custom range covers at most {CUSTOM_RANGE_MAX_DAYS} days.")
        return cleaned

    def value(self, name: str):
        """A cleaned value, or None when it is missing or invalid."""
        return self.cleaned_data.get(name) if hasattr(self, "cleaned_data") else None

    @property
    def range_chosen(self) -> bool:
        """Whether the querystring asks for a range, rather than leaving the page to pick one."""
        return bool(self.value("range"))

    def window(self, *, default: str = DEFAULT_RANGE) -> Window:
        """The window asked for; the default one while any filter is invalid, so that a bad date
        never becomes a query."""
        if self.errors:
            return window_from(range_key=default)
        start, end = self.value("start"), self.value("end")
        if self.value("range") == "custom" and (start or end):
            # One date given: that day alone.
            start, end = start or end, end or start
        return window_from(range_key=self.value("range") or default, start=start, end=end)

    def usage_filters(self) -> UsageFilters:
        return UsageFilters(
            provider=self.value("provider") or "",
            model=self.value("model") or "",
            status=self.value("status") or "",
            experiment_id=self.value("experiment") or "",
        )


class LogFilterForm(UsageFilterForm):
    project = forms.CharField(required=False, max_length=100)
    user = forms.CharField(required=False, max_length=256)
    error_type = forms.CharField(required=False, max_length=100)
    thread = forms.CharField(required=False, max_length=200)
    deployment = forms.CharField(required=False, max_length=200)
    q = forms.CharField(required=False, max_length=200, strip=True)
    cursor = forms.CharField(required=False, max_length=400)

    def log_filters(self) -> LogFilters:
        usage = self.usage_filters()
        return LogFilters(
            project_id=self.value("project") or "",
            user_id=self.value("user") or "",
            provider=usage.provider,
            model=usage.model,
            status=usage.status,
            experiment_id=usage.experiment_id,
            error_type=self.value("error_type") or "",
            thread_id=self.value("thread") or "",
            deployment=self.value("deployment") or "",
        )

    def search_text(self) -> str:
        return self.value("q") or ""


SESSION_SORT_CHOICES = [
    ("recent", "Latest activity"),
    ("cost", "Cost"),
    ("requests", "Requests"),
    ("errors", "Errors"),
]


class SessionFilterForm(UsageFilterForm):
    """The sessions list's filters: the usage range, and which threads."""

    project = forms.CharField(required=False, max_length=100)
    user = forms.CharField(required=False, max_length=256)
    errors = forms.BooleanField(required=False)
    q = forms.CharField(required=False, max_length=200, strip=True)
    sort = forms.ChoiceField(choices=SESSION_SORT_CHOICES, required=False)
    page = forms.IntegerField(required=False, min_value=1, max_value=10_000)

    def session_filters(self):
        from dashboards.sessions import SessionFilters

        return SessionFilters(
            project_id=self.value("project") or "",
            user_id=self.value("user") or "",
            errors_only=bool(self.value("errors")),
            search=self.value("q") or "",
            sort=self.value("sort") or "recent",
        )


class TimeZoneForm(forms.Form):
    time_zone = forms.CharField(max_length=64)
    # Sent by the page itself with the browser's zone, on a first visit.
    detected = forms.BooleanField(required=False)
    next = forms.CharField(required=False, max_length=2000)

    def clean_time_zone(self):
        from dashboards.selectors import time_zone_names

        name = self.cleaned_data["time_zone"]
        if name not in time_zone_names():
            raise forms.ValidationError("Not a time zone.")
        return name
