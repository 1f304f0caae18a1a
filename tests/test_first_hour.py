"""The first hour: the README's commands work as written, `/` leads somewhere, start-up says what is missing."""

import re
import subprocess

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.core.management import get_commands

from proxy.models import GatewayKey, Organisation, ProviderCredential, hash_gateway_key
from proxy.providers.configuration import configuration_notes
from proxy.providers.registry import PROVIDERS
from tests.test_deployment import subprocess_database_url
from tests.test_make_run import ROOT, embedded_environment, make_command

README = (ROOT / "README.md").read_text()


def run_make(*targets: str, environment: dict | None = None, **variables: str) -> subprocess.CompletedProcess:
    environment = environment or embedded_environment(ROOT / "var", DATABASE_URL=subprocess_database_url())
    return subprocess.run(
        make_command(*targets, **variables), cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )


def test_every_make_command_in_the_readme_is_a_target():
    commands = set(re.findall(r"^make [^#\n]*?(?=\s*(?:#|$))", README, re.MULTILINE))
    commands |= set(re.findall(r"`(make [^`]+)`", README))
    assert {"make run", "make test", "make superuser"} <= commands
    assert any(command.startswith("make key ORG=") for command in commands)
    for command in commands:
        targets = [word for word in command.split()[1:] if "=" not in word]
        variables = dict(word.split("=", 1) for word in command.split()[1:] if "=" in word)
        dry_run = run_make("-n", *targets, **variables)
        assert dry_run.returncode == 0, (command, dry_run.stderr)


def test_every_management_command_in_the_readme_exists():
    named = set(re.findall(r"manage\.py (\w+)", README))
    assert {"remove_demo_data", "seed_demo_logs", "backfill_rollups"} <= named
    assert named <= set(get_commands())


@pytest.mark.django_db(transaction=True)
def test_make_key_prints_a_working_key_last(caller):
    result = run_make("key", ORG="acme", PROJECT="search")
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    stored = GatewayKey.objects.select_related("org", "project").get(key_hash=hash_gateway_key(key))
    assert (stored.org.slug, stored.project.slug) == ("acme", "search")
    response = httpx.post(
        caller.openai_base_url + "/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {key}", "x-project-id": "search"},
    )
    assert response.status_code == 200


@pytest.mark.django_db(transaction=True)
def test_make_key_without_an_org_says_how_to_call_it():
    result = run_make("key")
    assert result.returncode != 0
    assert "usage: make key ORG=" in result.stderr
    assert not Organisation.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_make_superuser_takes_its_details_from_the_environment():
    environment = embedded_environment(
        ROOT / "var",
        DATABASE_URL=subprocess_database_url(),
        DJANGO_SUPERUSER_USERNAME="admin",
        DJANGO_SUPERUSER_EMAIL="admin@example.com",
        DJANGO_SUPERUSER_PASSWORD="a long enough password",
    )
    result = run_make("superuser", environment=environment)
    assert result.returncode == 0, result.stderr
    user = get_user_model().objects.get(username="admin")
    assert user.is_superuser and user.check_password("a long enough password")


def test_the_root_url_leads_to_the_dashboards(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["location"] == "/dashboards/"


@pytest.fixture
def no_provider_settings(monkeypatch):
    for spec in PROVIDERS.values():
        monkeypatch.delenv(f"{spec.env_prefix}_BASE_URL", raising=False)
        monkeypatch.delenv(f"{spec.env_prefix}_API_KEY", raising=False)
    return monkeypatch


@pytest.mark.django_db
def test_with_nothing_configured_only_the_default_provider_gets_a_warning(no_provider_settings):
    notes = configuration_notes(default_provider="openai")
    warnings = [note for note in notes if note.startswith("WARNING")]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING openai, the default provider, has no key")
    assert "OPENAI_API_KEY" in warnings[0]
    (summary,) = [note for note in notes if note.startswith("Providers not configured")]
    assert set(summary.split(": ", 1)[1].split(", ")) == set(PROVIDERS) - {"openai"}


@pytest.mark.django_db
def test_each_provider_someone_configured_is_checked_for_what_it_still_lacks(no_provider_settings):
    no_provider_settings.setenv("OPENAI_API_KEY", "sk-deployment")
    no_provider_settings.setenv("AZURE_API_KEY", "azure-key")  # but no AZURE_BASE_URL
    no_provider_settings.setenv("GROQ_BASE_URL", "http://127.0.0.1:9/v1")  # but no GROQ_API_KEY
    no_provider_settings.setenv("CUSTOM_BASE_URL", "http://127.0.0.1:11434/v1")  # Ollama needs no key
    org = Organisation.objects.create(slug="acme", name="Acme")
    credential = ProviderCredential(org=org, provider="anthropic")
    credential.api_key = "sk-ant-org"
    credential.save()

    notes = configuration_notes(default_provider="openai")

    warnings = [note for note in notes if note.startswith("WARNING")]
    assert len(warnings) == 2, notes
    assert any(note.startswith("WARNING azure has no base URL") and "AZURE_BASE_URL" in note for note in warnings)
    assert any(note.startswith("WARNING groq has no key") and "GROQ_API_KEY" in note for note in warnings)
    assert "Providers ready: openai, anthropic, custom" in notes
    (summary,) = [note for note in notes if note.startswith("Providers not configured")]
    assert not {"openai", "azure", "anthropic", "groq", "custom"} & set(summary.split(": ", 1)[1].split(", "))
    assert all("sk-" not in note for note in notes)


@pytest.mark.django_db
def test_a_default_provider_without_base_url_or_key_gets_both_warnings(no_provider_settings):
    warnings = [note for note in configuration_notes(default_provider="azure") if note.startswith("WARNING")]
    assert [note.split(":")[0] for note in warnings] == [
        "WARNING azure, the default provider, has no base URL",
        "WARNING azure, the default provider, has no key",
    ]
