from django.core.management.base import BaseCommand, CommandError

from budgets import services
from proxy.models import Organisation


class Command(BaseCommand):
    help = (
        "Set every budget's counter for its current period to the spend in the Postgres request logs "
        "(after a Redis flush or loss). Reservations in flight are kept."
    )

    def add_arguments(self, parser):
        parser.add_argument("--org", help="Only this org's budgets (its slug)")
        parser.add_argument(
            "--release-reservations",
            action="store_true",
            help="Also release every reservation, such as those a killed worker left counted. Requests in "
            "flight lose theirs too: until they end, their budgets may admit up to their worst case more.",
        )

    def handle(self, *args, org=None, release_reservations=False, **options):
        organisation = None
        if org:
            organisation = Organisation.objects.filter(slug=org).first()
            if organisation is None:
                raise CommandError(f"No org {org!r}")
        for rebuilt in services.budgets_rebuild(org=organisation, release_reservations=release_reservations):
            self.stdout.write(
                f"{rebuilt.budget}: ${rebuilt.spent_usd:.6f} spent this period ({rebuilt.counters} counter(s))"
            )
