from datetime import timedelta
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from proxy import services


class Command(BaseCommand):
    help = "Issue a gateway key, creating the org and project if they are missing. The key is the last line."

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="The org id callers send as x-organisation-id")
        parser.add_argument("--project", help="Pin the key to this project (created if missing)")
        parser.add_argument("--name", default="", help="A label for the key, shown in admin")
        parser.add_argument("--expires-in-days", type=int, help="The key stops working after this many days")
        parser.add_argument("--budget-usd", type=Decimal, help="A hard budget for the key, in USD")
        parser.add_argument(
            "--budget-period", default="month", choices=["day", "week", "month", "total"], help="The budget's period"
        )
        parser.add_argument("--budget-soft", action="store_true", help="Alert only: never refuse past the budget")
        parser.add_argument("--rpm", type=int, help="Requests per minute the key may make")
        parser.add_argument("--tpm", type=int, help="Tokens (input plus output) per minute the key may use")

    def handle(self, *args, org, project, name, expires_in_days=None, **options):
        organisation = services.organisation_get_or_create(slug=org)
        pinned = services.project_get_or_create(org=organisation, slug=project) if project else None
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        issued = services.gateway_key_issue(org=organisation, project=pinned, name=name, expires_at=expires_at)
        scope = f"project {pinned.slug}" if pinned else "the whole org"
        self.stdout.write(f"Issued key {issued.key.prefix}… for org {organisation.slug}, {scope}.")
        self._limit(issued.key, **options)
        self.stdout.write(issued.plaintext)

    def _limit(self, key, *, budget_usd=None, budget_period="month", budget_soft=False, rpm=None, tpm=None, **options):
        from budgets import services as budgets
        from budgets.models import Scope

        try:
            if budget_usd is not None:
                budget = budgets.budget_set(
                    scope=Scope.KEY, org=key.org, key=key, usd=budget_usd, period=budget_period, hard=not budget_soft
                )
                self.stdout.write(f"Budget: {budget}.")
            if rpm is not None or tpm is not None:
                limit = budgets.rate_limit_set(scope=Scope.KEY, org=key.org, key=key, rpm=rpm, tpm=tpm)
                self.stdout.write(f"Limits: {limit}.")
        except (ValueError, ValidationError) as exc:
            raise CommandError(f"The key {key.prefix}… was issued, but not its limits: {exc}") from None
