from django.core.management.base import BaseCommand, CommandError

from dashboards import services
from dashboards.progress import ProgressBar
from telemetry.models import RequestLog


class Command(BaseCommand):
    help = (
        "Load realistic demo request logs (several orgs, projects, users, models and providers, with errors "
        "and streams) straight into the log store, create their orgs and projects, and build their rollups."
    )

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=10_000, help="request logs to create")
        parser.add_argument("--orgs", type=int, default=5, help="organisations to spread them over")
        parser.add_argument("--days", type=int, default=90, help="days of history, ending now")
        parser.add_argument("--if-empty", action="store_true", help="do nothing when the log store has any row")

    def handle(self, *args, count, orgs, days, if_empty, **options):
        if count <= 0 or orgs <= 0 or days <= 0:
            raise CommandError("--count, --orgs and --days must be positive")
        if if_empty and RequestLog.objects.exists():
            self.stdout.write("The request log is not empty; no demo logs added.")
            return
        result = services.demo_logs_seed(
            count=count,
            org_count=orgs,
            days=days,
            progress=ProgressBar("logs   ", stream=self.stderr),
            rollup_progress=ProgressBar("rollups", stream=self.stderr),
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Added {result.rows:,} demo request logs for {', '.join(result.orgs)} "
                f"from {result.since:%Y-%m-%d %H:%M} to {result.until:%Y-%m-%d %H:%M} UTC."
            )
        )
