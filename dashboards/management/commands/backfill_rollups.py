from datetime import date

from django.core.management.base import BaseCommand, CommandError

from dashboards import services
from dashboards.progress import ProgressBar


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as error:
        raise CommandError(f"not a date (YYYY-MM-DD): {value!r}") from error


class Command(BaseCommand):
    help = "Rebuild the dashboard rollups from the raw request log, one UTC day at a time (both days included)."

    def add_arguments(self, parser):
        parser.add_argument("--since", required=True, help="first day, YYYY-MM-DD")
        parser.add_argument("--until", required=True, help="last day, YYYY-MM-DD")
        parser.add_argument(
            "--derived-only",
            action="store_true",
            help="keep the hourly per-user rollup and sum every other one from it, without reading the raw log "
            "(fills a rollup table added after the log filled up)",
        )

        parser.add_argument(
            "--threads-only",
            action="store_true",
            help="rebuild only the sessions (per-thread) rollup, for the threads active in the range",
        )

    def handle(self, *args, since, until, derived_only, threads_only, **options):
        first, last = _day(since), _day(until)
        if last < first:
            raise CommandError("--until is before --since")
        if threads_only:
            threads = services.threads_rebuild(since=first, until=last)
            self.stdout.write(self.style.SUCCESS(f"Rebuilt {threads} thread(s) active from {first} to {last}."))
            return
        days = services.rollups_rebuild(
            since=first, until=last, from_raw=not derived_only, progress=ProgressBar("rollups", stream=self.stderr)
        )
        source = "the hourly rollup" if derived_only else "the request log"
        self.stdout.write(self.style.SUCCESS(f"Rebuilt rollups for {days} day(s), {first} to {last}, from {source}."))
