from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from dashboards import services
from dashboards.progress import ProgressBar
from proxy.models import Organisation
from telemetry import read

# Records that this embedded database got its demo data once, so that removed demo data stays removed.
SEEDED_MARKER = "demo-seeded"


class Command(BaseCommand):
    help = (
        "Load realistic demo request logs (several orgs, projects, users, models and providers, with errors "
        "and streams) straight into the log store, create their orgs (demo-acme, 'Demo: Acme Corporation', …) "
        "and projects, and build their rollups. `remove_demo_data` takes them out again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=10_000, help="request logs to create (0: none)")
        parser.add_argument("--orgs", type=int, default=5, help="organisations to spread them over")
        parser.add_argument("--days", type=int, default=90, help="days of history, ending now")
        parser.add_argument(
            "--if-empty",
            action="store_true",
            help="do nothing when the database holds any org or request log, or had demo data before",
        )
        parser.add_argument(
            "--embedded-only",
            action="store_true",
            help="do nothing unless the database is the embedded SQLite default (DATABASE_URL unset)",
        )

    def handle(self, *args, count, orgs, days, if_empty, embedded_only, **options):
        if count < 0 or orgs <= 0 or days <= 0:
            raise CommandError("--count must not be negative; --orgs and --days must be positive")
        marker = settings.VAR_DIR / SEEDED_MARKER
        if count == 0:
            self.stdout.write("No demo logs requested.")
            return
        if embedded_only and not settings.DATABASE_IS_EMBEDDED:
            self.stdout.write("DATABASE_URL names a database; no demo logs added to it.")
            return
        if if_empty and (read.request_logs_exist() or Organisation.objects.exists()):
            self.stdout.write("The database already holds orgs or request logs; no demo logs added.")
            return
        if if_empty and settings.DATABASE_IS_EMBEDDED and marker.exists():
            self.stdout.write(f"Demo data was loaded into this database before ({marker}); none added.")
            return
        result = services.demo_logs_seed(
            count=count,
            org_count=orgs,
            days=days,
            progress=ProgressBar("logs   ", stream=self.stderr),
            rollup_progress=ProgressBar("rollups", stream=self.stderr),
        )
        if settings.DATABASE_IS_EMBEDDED:
            marker.touch()
        self.stdout.write(
            self.style.SUCCESS(
                f"Added {result.rows:,} demo request logs for {', '.join(result.orgs)} "
                f"from {result.since:%Y-%m-%d %H:%M} to {result.until:%Y-%m-%d %H:%M} UTC. "
                "`python manage.py remove_demo_data` removes them."
            )
        )
