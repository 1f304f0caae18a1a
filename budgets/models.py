"""Budgets (USD over a period) and rate limits (requests and tokens per minute), and the alerts sent for budgets.

A row targets one scope: an org, a project, a gateway key, or end users (the `x-user-id` a
caller sends). End-user rows with an empty `user_id` are the default for every user of their
project (or org); a row naming a user overrides that default for that user.
"""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from proxy.models import APPLIES_AT_ONCE, GatewayKey, Organisation, Project


class Scope(models.TextChoices):
    ORG = "org", "Organisation"
    PROJECT = "project", "Project"
    KEY = "key", "Gateway key"
    USER = "user", "End user (x-user-id)"


class Period(models.TextChoices):
    DAY = "day", "Day (UTC)"
    WEEK = "week", "Week (from Monday, UTC)"
    MONTH = "month", "Month (UTC)"
    TOTAL = "total", "Total (never resets)"


class Targeted(models.Model):
    """Which requests a row applies to."""

    scope = models.CharField(max_length=16, choices=Scope.choices)
    org = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    project = models.ForeignKey(
        Project,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text="For project scope; for end users, the project whose users this applies to (empty: the org's).",
    )
    key = models.ForeignKey(GatewayKey, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    user_id = models.CharField(
        max_length=256,
        blank=True,
        help_text="For end users: one user's x-user-id; empty is the default for every user.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    def clean(self):
        super().clean()
        if self.scope == Scope.PROJECT and self.project_id is None:
            raise ValidationError({"project": "A project budget or limit names its project."})
        if self.scope == Scope.KEY and self.key_id is None:
            raise ValidationError({"key": "A key budget or limit names its key."})
        if self.scope != Scope.USER and self.user_id:
            raise ValidationError({"user_id": "Only end-user budgets and limits name a user."})
        if self.project_id and self.org_id and self.project.org_id != self.org_id:
            raise ValidationError({"project": "The project belongs to another organisation."})
        if self.key_id and self.org_id and self.key.org_id != self.org_id:
            raise ValidationError({"key": "The key belongs to another organisation."})

    @property
    def target(self) -> str:
        if self.scope == Scope.PROJECT:
            return f"project {self.project.slug}"
        if self.scope == Scope.KEY:
            return f"key {self.key.prefix}…"
        if self.scope == Scope.USER:
            within = f" of project {self.project.slug}" if self.project_id else ""
            return f"user {self.user_id}{within}" if self.user_id else f"each user{within}"
        return f"org {self.org.slug}"


def _target_constraint(name: str, *extra: str) -> models.UniqueConstraint:
    return models.UniqueConstraint(
        fields=["scope", "org", "project", "key", "user_id", *extra], name=name, nulls_distinct=False
    )


class Budget(Targeted):
    """Spend allowed over a period. A hard budget refuses requests that could exceed it; a soft one only alerts."""

    amount_usd = models.DecimalField(
        "Amount (USD)", max_digits=20, decimal_places=10, validators=[MinValueValidator(Decimal(0))]
    )
    period = models.CharField(max_length=8, choices=Period.choices, default=Period.MONTH)
    hard = models.BooleanField(default=True, help_text="Refuse requests (429) once spent; off: alert only.")

    class Meta:
        ordering = ["org__slug", "scope", "id"]
        constraints = [_target_constraint("budget_target_unique")]

    def __str__(self):
        return f"{self.target}: ${self.amount_usd} per {self.period}{'' if self.hard else ' (soft)'}"


class RateLimit(Targeted):
    """Requests and tokens (input plus output) per minute, over a moving one-minute window.

    With `model` set the limit counts only requests for that model (within the row's scope).
    """

    model = models.CharField(max_length=200, blank=True, help_text="Empty: every model.")
    rpm = models.PositiveIntegerField("Requests per minute", null=True, blank=True, help_text=APPLIES_AT_ONCE)
    tpm = models.PositiveIntegerField("Tokens per minute", null=True, blank=True, help_text=APPLIES_AT_ONCE)

    class Meta:
        ordering = ["org__slug", "scope", "id"]
        constraints = [_target_constraint("rate_limit_target_unique", "model")]

    def __str__(self):
        parts = [f"{self.rpm} rpm" if self.rpm else "", f"{self.tpm} tpm" if self.tpm else ""]
        model = f" for {self.model}" if self.model else ""
        return f"{self.target}{model}: {', '.join(p for p in parts if p) or 'no limit'}"

    def clean(self):
        super().clean()
        if self.model and self.scope != Scope.ORG:
            raise ValidationError({"model": "Model limits are org-wide: choose the organisation scope."})
        if self.rpm is None and self.tpm is None:
            raise ValidationError("Set requests per minute, tokens per minute, or both.")


class BudgetAlert(models.Model):
    """One alert: a budget's spend crossed a threshold (percent) in one period. Sent once."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    user_id = models.CharField(max_length=256, blank=True, help_text="The end user, for a per-user budget.")
    period_start = models.DateTimeField()
    threshold = models.PositiveSmallIntegerField(help_text="Percent of the budget")
    spent_usd = models.DecimalField(max_digits=18, decimal_places=10)
    limit_usd = models.DecimalField(max_digits=20, decimal_places=10)
    created_at = models.DateTimeField(default=timezone.now)
    webhook_status = models.CharField(max_length=200, blank=True)
    email_status = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "user_id", "period_start", "threshold"], name="budget_alert_once_per_period"
            )
        ]

    def __str__(self):
        return f"{self.budget.target}: {self.threshold}% on {self.period_start:%Y-%m-%d}"
