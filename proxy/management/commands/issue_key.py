from datetime import timedelta

from django.core.management.base import BaseCommand
from django.utils import timezone

from proxy import services


class Command(BaseCommand):
    help = "Issue a gateway key, creating the org and project if they are missing. The key is the last line."

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="The org id callers send as x-organisation-id")
        parser.add_argument("--project", help="Pin the key to this project (created if missing)")
        parser.add_argument("--name", default="", help="A label for the key, shown in admin")
        parser.add_argument("--expires-in-days", type=int, help="The key stops working after this many days")

    def handle(self, *args, org, project, name, expires_in_days=None, **options):
        organisation = services.organisation_get_or_create(slug=org)
        pinned = services.project_get_or_create(org=organisation, slug=project) if project else None
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        issued = services.gateway_key_issue(org=organisation, project=pinned, name=name, expires_at=expires_at)
        scope = f"project {pinned.slug}" if pinned else "the whole org"
        self.stdout.write(f"Issued key {issued.key.prefix}… for org {organisation.slug}, {scope}.")
        self.stdout.write(issued.plaintext)
