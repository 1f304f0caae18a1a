from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from gateway_project.config_file.plan import ConfigError
from gateway_project.config_file.services import config_plan_read, gateway_config_apply, gateway_config_export


class Command(BaseCommand):
    help = "Apply a configuration file (the gateway's own or a LiteLLM config.yaml), or export the current one."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        apply = actions.add_parser(
            "apply", help="Create or update orgs, projects, model groups and model routes from FILE"
        )
        apply.add_argument("file", nargs="?", help="The YAML file; default: the GATEWAY_CONFIG_FILE setting")
        apply.add_argument("--dry-run", action="store_true", help="Print what would change and change nothing")
        apply.add_argument(
            "--if-configured", action="store_true", help="Without FILE and GATEWAY_CONFIG_FILE, do nothing"
        )
        export = actions.add_parser("export", help="Write the current configuration as YAML")
        export.add_argument("--output", "-o", help="Write to this file instead of standard output")

    def handle(self, *args, action, **options):
        if action == "apply":
            self.apply(options["file"], dry_run=options["dry_run"], if_configured=options["if_configured"])
        else:
            self.export(options["output"])

    def apply(self, file: str | None, *, dry_run: bool, if_configured: bool) -> None:
        file = file or settings.GATEWAY_CONFIG_FILE
        if not file:
            if if_configured:
                return
            raise CommandError("Name a file, or set GATEWAY_CONFIG_FILE.")
        path = Path(file)
        try:
            text = path.read_text()
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror or exc}") from None
        try:
            result = gateway_config_apply(plan=config_plan_read(text=text), dry_run=dry_run)
        except ConfigError as exc:
            raise CommandError(f"{path} was not applied:\n" + "\n".join(_lines(exc.problems))) from None
        for warning in result.warnings:
            self.stderr.write(f"warning: {warning}")
        prefix = "would be " if dry_run else ""
        for change in result.changes:
            self.stdout.write(f"{prefix}{change}")
        for kind, counts in result.counts.items():
            summary = ", ".join(f"{counts[outcome]} {outcome}" for outcome in ("created", "updated", "unchanged"))
            if counts["deleted"]:
                summary += f", {counts['deleted']} deleted"
            self.stdout.write(f"{kind}: {summary}")
        if dry_run:
            self.stdout.write("Dry run: nothing was changed.")

    def export(self, output: str | None) -> None:
        result = gateway_config_export()
        text = result.yaml()
        if output:
            Path(output).write_text(text)
        else:
            self.stdout.write(text, ending="")
        if result.variables_to_set:
            self.stderr.write(
                "note: keys stored encrypted are exported as os.environ/ references; "
                "set these variables (with the keys) before applying the file elsewhere: "
                + ", ".join(result.variables_to_set)
            )


def _lines(problems):
    return [f"  {path}: {message}" if path else f"  {message}" for path, message in problems]
