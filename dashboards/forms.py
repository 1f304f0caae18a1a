"""The filters every dashboard page takes from its querystring, so any view can be linked to."""

from __future__ import annotations

from django import forms

from dashboards.selectors import DEFAULT_RANGE, LogFilters, UsageFilters, Window, window_from

RANGE_CHOICES = [
    ("24h", "Last 24 hours"),
    ("7d", "Last 7 days"),
    ("30d", "Last 30 days"),
    ("90d", "Last 90 days"),
    ("custom", "Custom"),
]
STATUS_CHOICES = [("", "Any status"), ("success", "Success"), ("error", "Error")]


class UsageFilterForm(forms.Form):
    range = forms.ChoiceField(choices=RANGE_CHOICES, required=False)
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    provider = forms.CharField(required=False, max_length=64)
    model = forms.CharField(required=False, max_length=200)
    status = forms.ChoiceField(choices=STATUS_CHOICES, required=False)
    experiment = forms.CharField(required=False, max_length=200)

    def __init__(self, data, *args, **kwargs):
        super().__init__(data, *args, **kwargs)
        # Without valid input a page still shows the default view rather than an error.
        self.is_valid()

    def value(self, name: str):
        """A cleaned value, or None when it is missing or invalid."""
        return self.cleaned_data.get(name) if hasattr(self, "cleaned_data") else None

    def window(self) -> Window:
        range_key = self.value("range") or DEFAULT_RANGE
        return window_from(range_key=range_key, start=self.value("start"), end=self.value("end"))

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
            search=self.value("q") or "",
        )
