from django.core.management.base import BaseCommand

from dashboards import services


class Command(BaseCommand):
    help = (
        "Delete the demo orgs seed_demo_logs created (demo-acme, …) with their projects, keys, request logs "
        "and rollups. Other orgs are left alone."
    )

    def handle(self, *args, **options):
        removed = services.demo_data_remove()
        if not removed.orgs and not removed.logs:
            self.stdout.write("No demo data found.")
            return
        orgs = ", ".join(removed.orgs) or "none left"
        self.stdout.write(self.style.SUCCESS(f"Removed {removed.logs:,} demo request logs and the orgs {orgs}."))
