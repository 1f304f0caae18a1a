"""Admin forms for pricing."""

from __future__ import annotations

from django import forms

from telemetry.recomputation import overrides_starting_after


class CostRecomputationForm(forms.Form):
    """The date range a price change is applied to in the request log (UTC days, both included).

    Overrides that start after the range cannot change its costs; the form says so and asks
    for a confirmation rather than starting a pass that changes nothing.
    """

    since = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    confirm = forms.BooleanField(
        required=False, label="Recompute anyway", help_text="Only shown when an override starts after the range."
    )

    def __init__(self, *args, overrides=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.overrides = list(overrides)
        self.late_overrides = []

    def clean(self):
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since > until:
            raise forms.ValidationError("The first day must not be after the last.")
        if until:
            self.late_overrides = overrides_starting_after(overrides=self.overrides, until=until)
        if self.late_overrides and not cleaned.get("confirm"):
            names = ", ".join(f"{o.provider}/{o.model} from {o.valid_from:%Y-%m-%d}" for o in self.late_overrides)
            raise forms.ValidationError(
                f"These overrides start after the range and will not change its costs: {names}. "
                "Choose a range that reaches them, or tick “Recompute anyway”."
            )
        return cleaned
