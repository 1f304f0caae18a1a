"""`manage.py gateway_config apply / export`: the gateway's own format, LiteLLM's, and the section registry."""

from __future__ import annotations

import io
import sqlite3
import textwrap
import threading
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.test import override_settings

from gateway_project.config_file import sections
from proxy.models import Deployment, Fallback, ModelGroup, ModelRoute, Organisation, Project
from tests.test_make_run import MakeRun

pytestmark = pytest.mark.django_db

LITERAL_KEY = "sk-literal-secret-0123456789abcdef"

EXAMPLE = """
orgs:
  - slug: acme
    name: Acme Corporation
    projects:
      - slug: search
        name: Search answers
        content_logging: full
      - slug: support
        name: Support bot
        content_logging: metadata
    model_groups:
      - name: gpt-4o
        strategy: least-busy
        deployments:
          - name: acme-azure
            provider: azure
            upstream_model: acme-gpt-4o
            base_url: https://acme.openai.azure.com
            api_key: os.environ/ACME_AZURE_KEY
  - slug: globex
    name: Globex
model_groups:
  - name: gpt-4o
    strategy: weighted
    num_retries: 1
    allowed_fails: 2
    cooldown_seconds: 30
    deployments:
      - name: openai-main
        provider: openai
        upstream_model: gpt-4o
        api_key: os.environ/OPENAI_API_KEY
        weight: 3
        rpm: 500
        tpm: 200000
        max_output_tokens: 16384
      - name: azure-eu
        provider: azure
        upstream_model: gpt-4o-eu
        base_url: https://eu.openai.azure.com
        api_key: os.environ/AZURE_EU_KEY
        enabled: false
    fallbacks:
      failure: [gpt-4o-mini, claude-sonnet]
      context_window: [claude-sonnet]
  - name: gpt-4o-mini
    deployments:
      - provider: openai
        upstream_model: gpt-4o-mini
  - name: claude-sonnet
    strategy: latency
    deployments:
      - name: anthropic
        provider: anthropic
        upstream_model: claude-sonnet-4-5
        api_key: os.environ/ANTHROPIC_API_KEY
model_routes:
  - model_name: llama-fast
    provider: groq
    upstream_model: llama-3.1-8b-instant
"""


def write(tmp_path, text: str, name: str = "gateway.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def run(*args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("gateway_config", *[str(arg) for arg in args], stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def summary(out: str) -> dict[str, str]:
    lines = [line.split(": ", 1) for line in out.splitlines() if ": " in line]
    return {
        kind: counts
        for kind, counts in lines
        if kind in ("orgs", "projects", "model groups", "deployments", "fallbacks", "model routes")
    }


def snapshot() -> list:
    """Every row the file describes, with the values it sets."""
    return [
        sorted(Organisation.objects.values_list("slug", "name")),
        sorted(Project.objects.values_list("org__slug", "slug", "name", "content_logging")),
        sorted(
            ModelGroup.objects.values_list(
                "org__slug", "name", "strategy", "num_retries", "allowed_fails", "cooldown_seconds"
            ),
            key=str,
        ),
        sorted(
            Deployment.objects.values_list(
                "group__org__slug",
                "group__name",
                "name",
                "provider",
                "upstream_model",
                "base_url",
                "api_key_env",
                "weight",
                "rpm",
                "tpm",
                "max_output_tokens",
                "enabled",
            ),
            key=str,
        ),
        sorted(
            Fallback.objects.values_list("group__org__slug", "group__name", "trigger", "to_group__name", "position"),
            key=str,
        ),
        sorted(ModelRoute.objects.values_list("model_name", "provider", "upstream_model")),
    ]


def test_apply_creates_everything_and_a_second_apply_changes_nothing(tmp_path):
    path = write(tmp_path, EXAMPLE)

    out, err = run("apply", path)

    assert summary(out) == {
        "orgs": "2 created, 0 updated, 0 unchanged",
        "projects": "2 created, 0 updated, 0 unchanged",
        "model groups": "4 created, 0 updated, 0 unchanged",
        "deployments": "5 created, 0 updated, 0 unchanged",
        "fallbacks": "3 created, 0 updated, 0 unchanged",
        "model routes": "1 created, 0 updated, 0 unchanged",
    }
    assert err == ""
    acme_group = ModelGroup.objects.get(org__slug="acme", name="gpt-4o")
    assert acme_group.strategy == "least-busy"
    assert list(acme_group.deployments.values_list("provider", "api_key_env", "api_key_encrypted")) == [
        ("azure", "ACME_AZURE_KEY", "")
    ]
    shared = ModelGroup.objects.get(org=None, name="gpt-4o")
    assert (shared.num_retries, shared.allowed_fails, shared.cooldown_seconds) == (1, 2, 30)
    assert [(f.trigger, f.to_group.name, f.position) for f in shared.fallbacks.order_by("trigger", "position")] == [
        ("context_window", "claude-sonnet", 0),
        ("failure", "gpt-4o-mini", 0),
        ("failure", "claude-sonnet", 1),
    ]
    # An unnamed deployment is named after its provider and model.
    assert ModelGroup.objects.get(name="gpt-4o-mini").deployments.get().name == "openai-gpt-4o-mini"
    assert Deployment.objects.get(name="openai-main").max_output_tokens == 16384
    assert Project.objects.get(slug="support").content_logging == "metadata"
    before = snapshot()

    out, err = run("apply", path)

    assert summary(out) == {
        "orgs": "0 created, 0 updated, 2 unchanged",
        "projects": "0 created, 0 updated, 2 unchanged",
        "model groups": "0 created, 0 updated, 4 unchanged",
        "deployments": "0 created, 0 updated, 5 unchanged",
        "fallbacks": "0 created, 0 updated, 3 unchanged",
        "model routes": "0 created, 0 updated, 1 unchanged",
    }
    assert not [line for line in out.splitlines() if line.startswith(("created", "updated", "deleted"))]
    assert snapshot() == before


def test_a_changed_file_updates_what_changed_and_removes_deployments_it_no_longer_lists(tmp_path):
    run("apply", write(tmp_path, EXAMPLE))
    changed = (
        EXAMPLE.replace("weight: 3", "weight: 5")
        .replace("name: Support bot", "name: Support")
        .replace("upstream_model: llama-3.1-8b-instant", "upstream_model: llama-3.3-70b-versatile")
        .replace("failure: [gpt-4o-mini, claude-sonnet]", "failure: [claude-sonnet, gpt-4o-mini]")
    )
    # The shared gpt-4o group loses its azure-eu deployment.
    start = changed.index("      - name: azure-eu")
    changed = changed[:start] + changed[changed.index("    fallbacks:") :]

    out, _ = run("apply", write(tmp_path, changed, "changed.yaml"))

    assert "updated deployment gpt-4o/openai-main: weight" in out
    assert "updated project acme/support: name" in out
    assert "deleted deployment gpt-4o/azure-eu" in out
    assert "updated model route llama-fast: upstream_model" in out
    assert summary(out)["fallbacks"] == "0 created, 2 updated, 1 unchanged"
    assert not Deployment.objects.filter(name="azure-eu").exists()
    assert Deployment.objects.get(name="openai-main").weight == 5
    failure = Fallback.objects.filter(group__org=None, group__name="gpt-4o", trigger="failure").order_by("position")
    assert [f.to_group.name for f in failure] == ["claude-sonnet", "gpt-4o-mini"]


def test_entries_and_fields_the_file_leaves_out_are_left_alone(tmp_path):
    run("apply", write(tmp_path, EXAMPLE))
    Organisation.objects.create(slug="initech", name="Initech")

    out, _ = run("apply", write(tmp_path, "orgs:\n  - slug: acme\n    projects:\n      - slug: search\n", "small.yaml"))

    assert summary(out)["orgs"] == "0 created, 0 updated, 1 unchanged"
    assert Organisation.objects.get(slug="acme").name == "Acme Corporation"
    assert Organisation.objects.filter(slug="initech").exists()
    assert ModelGroup.objects.count() == 4


def test_dry_run_prints_the_changes_and_writes_nothing(tmp_path):
    out, _ = run("apply", write(tmp_path, EXAMPLE), "--dry-run")

    assert "would be created org acme" in out
    assert "would be created deployment gpt-4o/openai-main" in out
    assert "Dry run: nothing was changed." in out
    assert summary(out)["orgs"] == "2 created, 0 updated, 0 unchanged"
    assert not Organisation.objects.exists()
    assert not ModelGroup.objects.exists()


def test_export_then_apply_round_trips(tmp_path):
    run("apply", write(tmp_path, EXAMPLE))
    before = snapshot()
    exported, err = run("export")
    assert err == ""
    document = yaml.safe_load(exported)
    assert [org["slug"] for org in document["orgs"]] == ["acme", "globex"]
    assert document["orgs"][0]["projects"][1] == {
        "slug": "support",
        "name": "Support bot",
        "content_logging": "metadata",
    }

    out, _ = run("apply", write(tmp_path, exported, "exported.yaml"))
    assert not [line for line in out.splitlines() if line.startswith(("created", "updated", "deleted"))]

    Organisation.objects.all().delete()
    ModelGroup.objects.all().delete()
    ModelRoute.objects.all().delete()
    run("apply", tmp_path / "exported.yaml")
    assert snapshot() == before
    assert run("export")[0] == exported


def test_secrets_are_stored_encrypted_and_never_exported_in_clear(tmp_path):
    config = f"""
    model_groups:
      - name: gpt-4o
        deployments:
          - name: main
            provider: openai
            upstream_model: gpt-4o
            api_key: {LITERAL_KEY}
    """
    out, err = run("apply", write(tmp_path, config))

    assert "model_groups[0].deployments[0].api_key: a key in clear in the file" in err
    assert LITERAL_KEY not in out + err
    deployment = Deployment.objects.get(name="main")
    assert deployment.api_key == LITERAL_KEY
    assert deployment.api_key_env == ""
    assert LITERAL_KEY not in deployment.api_key_encrypted
    # The same literal again is unchanged, though each encryption of it differs.
    assert summary(run("apply", tmp_path / "gateway.yaml")[0])["deployments"] == "0 created, 0 updated, 1 unchanged"

    exported, note = run("export")
    assert LITERAL_KEY not in exported + note
    assert deployment.api_key_encrypted not in exported
    assert yaml.safe_load(exported)["model_groups"][0]["deployments"][0]["api_key"] == "os.environ/GPT_4O_MAIN_API_KEY"
    assert "GPT_4O_MAIN_API_KEY" in note
    output = tmp_path / "out.yaml"
    run("export", "--output", output)
    assert LITERAL_KEY not in output.read_text()
    # Applying the export switches the deployment to the variable and drops the stored key.
    run("apply", output)
    deployment.refresh_from_db()
    assert (deployment.api_key_env, deployment.api_key_encrypted) == ("GPT_4O_MAIN_API_KEY", "")


LITELLM = """
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o-eu
      api_base: https://eu.openai.azure.com/
      api_key: os.environ/AZURE_EU_API_KEY
      api_version: "2024-06-01"
      rpm: 600
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
      weight: 2
    tpm: 100000
    model_info:
      id: openai-direct
      mode: chat
      max_output_tokens: 16384
  - model_name: claude-sonnet
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_key: os.environ/ANTHROPIC_API_KEY
    model_info:
      max_tokens: 64000
  - model_name: gpt-4o-long
    litellm_params:
      model: gpt-4.1
  - model_name: llama
    litellm_params:
      model: hosted_vllm/meta-llama/Llama-3.1-8B-Instruct
      api_base: http://10.0.0.5:8000/v1
  - model_name: local
    litellm_params:
      model: ollama_chat/llama3.2
      api_base: http://localhost:11434
router_settings:
  routing_strategy: latency-based-routing
  num_retries: 4
  allowed_fails: 1
  cooldown_time: 15
  redis_host: localhost
  content_policy_fallbacks: [{"gpt-4o": ["claude-sonnet"]}]
litellm_settings:
  drop_params: true
  fallbacks: [{"gpt-4o": ["claude-sonnet", "llama"]}]
  context_window_fallbacks: [{"gpt-4o": ["gpt-4o-long"]}, {"claude-sonnet": ["gpt-4o-long"]}]
general_settings:
  master_key: sk-1234
environment_variables:
  GROQ_API_KEY: gsk-environment-secret
"""


def test_a_litellm_config_applies_with_its_groups_keys_policies_and_fallbacks(tmp_path):
    out, err = run("apply", write(tmp_path, LITELLM, "config.yaml"))

    group = ModelGroup.objects.get(org=None, name="gpt-4o")
    assert (group.strategy, group.num_retries, group.allowed_fails, group.cooldown_seconds) == ("latency", 4, 1, 15)
    deployments = {d.name: d for d in group.deployments.all()}
    assert set(deployments) == {"azure-gpt-4o-eu", "openai-direct"}
    azure = deployments["azure-gpt-4o-eu"]
    assert (azure.provider, azure.upstream_model, azure.base_url) == (
        "azure",
        "gpt-4o-eu",
        "https://eu.openai.azure.com",
    )
    assert (azure.api_key_env, azure.api_key_encrypted, azure.rpm) == ("AZURE_EU_API_KEY", "", 600)
    direct = deployments["openai-direct"]
    assert (direct.provider, direct.upstream_model, direct.weight, direct.tpm) == ("openai", "gpt-4o", 2, 100000)
    assert (direct.max_output_tokens, azure.max_output_tokens) == (16384, None)
    assert ModelGroup.objects.get(name="claude-sonnet").deployments.get().max_output_tokens == 64000
    assert ModelGroup.objects.get(name="gpt-4o-long").deployments.get().provider == "openai"
    llama = ModelGroup.objects.get(name="llama").deployments.get()
    assert (llama.provider, llama.upstream_model) == ("custom", "meta-llama/Llama-3.1-8B-Instruct")
    local = ModelGroup.objects.get(name="local").deployments.get()
    assert (local.provider, local.upstream_model, local.base_url) == ("custom", "llama3.2", "http://localhost:11434/v1")
    assert sorted(group.fallbacks.values_list("trigger", "to_group__name", "position")) == [
        ("content_policy", "claude-sonnet", 0),
        ("context_window", "gpt-4o-long", 0),
        ("failure", "claude-sonnet", 0),
        ("failure", "llama", 1),
    ]
    assert list(ModelGroup.objects.get(name="claude-sonnet").fallbacks.values_list("trigger", "to_group__name")) == [
        ("context_window", "gpt-4o-long")
    ]
    for ignored in (
        "general_settings",
        "router_settings.redis_host",
        "litellm_settings.drop_params",
        "model_list[0].litellm_params.api_version",
        "model_list[1].model_info.mode",
    ):
        assert f"warning: {ignored}: ignored" in err
    assert "sk-1234" not in out + err
    assert "environment_variables: ignored; set GROQ_API_KEY in the gateway's environment" in err
    assert "gsk-environment-secret" not in out + err
    assert summary(out)["deployments"] == "6 created, 0 updated, 0 unchanged"

    again, _ = run("apply", tmp_path / "config.yaml")
    assert summary(again)["deployments"] == "0 created, 0 updated, 6 unchanged"
    assert summary(again)["fallbacks"] == "0 created, 0 updated, 5 unchanged"


def test_litellm_strategies_without_an_equivalent_fall_back_to_weighted_with_a_warning(tmp_path):
    config = "model_list:\n  - model_name: m\n    litellm_params: {model: groq/llama-3.1-8b-instant}\n"
    config += "router_settings:\n  routing_strategy: usage-based-routing-v2\n"
    _, err = run("apply", write(tmp_path, config))
    assert "router_settings.routing_strategy: 'usage-based-routing-v2' has no equivalent" in err
    group = ModelGroup.objects.get(name="m")
    assert group.strategy == "weighted"
    assert group.deployments.get().provider == "groq"


def test_a_litellm_provider_prefix_the_gateway_does_not_serve_is_an_error(tmp_path):
    config = "model_list:\n  - model_name: m\n    litellm_params:\n      model: bedrock/anthropic.claude-v2\n"
    with pytest.raises(CommandError) as raised:
        run("apply", write(tmp_path, config))
    assert "model_list[0].litellm_params.model: unknown provider prefix 'bedrock'" in str(raised.value)
    assert not ModelGroup.objects.exists()


def test_a_litellm_fallback_to_an_unknown_model_name_is_an_error(tmp_path):
    config = "model_list:\n  - model_name: m\n    litellm_params: {model: openai/gpt-4o}\n"
    config += "litellm_settings:\n  fallbacks: [{m: [nowhere]}]\n"
    with pytest.raises(CommandError) as raised:
        run("apply", write(tmp_path, config))
    assert "no shared model group is named 'nowhere'" in str(raised.value)
    assert not ModelGroup.objects.exists()


def test_validation_errors_name_the_path_of_every_bad_key_and_nothing_is_written(tmp_path):
    config = """
    orgs:
      - slug: acme
        projects:
          - slug: search
          - slug: support
            content_logging: everything
      - slug: globex
        budgett: 10
    model_groups:
      - name: gpt-4o
        strategy: fastest
        num_retries: many
        deployments:
          - provider: openia
            upstream_model: gpt-4o
          - provider: openai
            upstream_model: gpt-4o
            base_url: not a url
            api_key: os.environ/not-a-name
            max_output_tokens: 0
        fallbacks:
          sometimes: [x]
    """
    with pytest.raises(CommandError) as raised:
        run("apply", write(tmp_path, config))

    message = str(raised.value)
    for expected in (
        "orgs[0].projects[1].content_logging: must be one of full, metadata, not 'everything'",
        "orgs[1].budgett: unknown key 'budgett' in org 'globex'",
        "model_groups[0].strategy: must be one of weighted, least-busy, latency",
        "model_groups[0].num_retries: must be an integer, not a string",
        "model_groups[0].deployments[0].provider: must be one of",
        "model_groups[0].deployments[1].base_url: 'not a url' is not an http(s) URL",
        "model_groups[0].deployments[1].api_key: os.environ/not-a-name does not name an environment variable",
        "model_groups[0].deployments[1].max_output_tokens: must be between 1 and",
        "model_groups[0].fallbacks.sometimes: unknown trigger 'sometimes'",
    ):
        assert expected in message
    assert not Organisation.objects.exists()
    assert not ModelGroup.objects.exists()


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("orgs: {acme: {}}", "orgs: must be a list, not a mapping"),
        ("orgs:\n  - name: Acme", "orgs[0].slug: is required"),
        ("orgs:\n  - slug: a\n  - slug: a", "orgs[1].slug: org 'a' appears twice"),
        ("orgs:\n  - slug: 'a b'", "orgs[0].slug: 'a b' must be letters, digits"),
        ("modelgroups: []", "modelgroups: unknown key 'modelgroups'"),
        ("model_groups:\n  - name: g", "model_groups[0].deployments: a model group needs at least one deployment"),
        ("- a\n- b", "the file must be a mapping"),
        ("orgs: [", "not valid YAML: line 1"),
    ],
)
def test_malformed_files_are_refused_with_the_path(tmp_path, config, expected):
    with pytest.raises(CommandError) as raised:
        run("apply", write(tmp_path, config))
    assert expected in str(raised.value)


# --- The section registry --------------------------------------------------------------------------

_notes: dict[int, str] = {}


def _apply_note(project, value):
    if value is None:
        _notes.pop(project.pk, None)
    elif not isinstance(value, str):
        raise ValueError("must be a string")
    else:
        _notes[project.pk] = value


def _export_note(project):
    return _notes.get(project.pk)


@pytest.fixture
def note_section():
    sections.register_entry_section("project", "note", apply=_apply_note, export=_export_note)
    yield
    sections.unregister_entry_section("project", "note")
    _notes.clear()


def test_a_registered_section_is_applied_for_every_entry_and_exported(tmp_path, note_section):
    config = """
    orgs:
      - slug: acme
        projects:
          - slug: search
            note: answers questions
          - slug: support
    """
    out, _ = run("apply", write(tmp_path, config))
    search, support = Project.objects.get(slug="search"), Project.objects.get(slug="support")
    assert _notes == {search.pk: "answers questions"}
    _notes[support.pk] = "set elsewhere"

    # The entry without the key gets None: this section removes its value then.
    out, _ = run("apply", tmp_path / "gateway.yaml")
    assert _notes == {search.pk: "answers questions"}
    assert "updated project acme/support: note" in out
    assert summary(out)["projects"] == "0 created, 1 updated, 1 unchanged"

    exported = yaml.safe_load(run("export")[0])
    projects = exported["orgs"][0]["projects"]
    assert projects[0] == {"slug": "search", "name": "search", "content_logging": "full", "note": "answers questions"}
    assert "note" not in projects[1]


def test_a_section_refusing_its_value_refuses_the_whole_file(tmp_path, note_section):
    config = """
    orgs:
      - slug: acme
        projects:
          - slug: search
            note: fine
      - slug: globex
        projects:
          - slug: web
            note: [not, a, string]
    """
    with pytest.raises(CommandError) as raised:
        run("apply", write(tmp_path, config))
    assert "orgs[1].projects[0].note: must be a string" in str(raised.value)
    assert not Organisation.objects.exists()


def test_an_unregistered_key_is_unknown(tmp_path):
    config = "orgs:\n  - slug: acme\n    projects:\n      - slug: search\n        note: x\n"
    with pytest.raises(CommandError) as raised:
        run("apply", write(tmp_path, config))
    assert "orgs[0].projects[0].note: unknown key 'note' in project acme/search" in str(raised.value)


def test_the_registry_refuses_builtin_keys_other_kinds_and_a_second_owner(note_section):
    with pytest.raises(ValueError, match="own project entries"):
        sections.register_entry_section("project", "content_logging", apply=_apply_note, export=_export_note)
    with pytest.raises(ValueError, match="'org' or 'project'"):
        sections.register_entry_section("team", "note", apply=_apply_note, export=_export_note)
    with pytest.raises(ValueError, match="registered already"):
        sections.register_entry_section("project", "note", apply=lambda p, v: None, export=_export_note)
    # The same functions again (an app's ready() run twice) are accepted.
    sections.register_entry_section("project", "note", apply=_apply_note, export=_export_note)


# --- GATEWAY_CONFIG_FILE -----------------------------------------------------------------------------


def test_apply_without_a_file_uses_the_setting(tmp_path):
    path = write(tmp_path, EXAMPLE)
    with override_settings(GATEWAY_CONFIG_FILE=str(path)):
        run("apply")
    assert Organisation.objects.filter(slug="acme").exists()


def test_apply_if_configured_without_a_file_does_nothing():
    with override_settings(GATEWAY_CONFIG_FILE=""):
        assert run("apply", "--if-configured") == ("", "")
        with pytest.raises(CommandError, match="GATEWAY_CONFIG_FILE"):
            run("apply")


def test_the_readme_example_applies_as_written(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Configuration as code") :]
    example = section[section.index("```yaml\n") + len("```yaml\n") : section.index("```\n", section.index("```yaml"))]

    out, err = run("apply", write(tmp_path, example))

    assert err == ""
    assert summary(out)["model groups"] == "4 created, 0 updated, 0 unchanged"
    assert ModelGroup.objects.get(org__slug="acme", name="gpt-4o").deployments.get().api_key_env == "ACME_AZURE_KEY"


@pytest.mark.django_db(transaction=True)
def test_concurrent_applies_of_one_file_create_everything_once(tmp_path):
    """Gateway containers starting together each apply GATEWAY_CONFIG_FILE."""
    path = write(tmp_path, EXAMPLE)
    results: list = []

    def apply():
        try:
            results.append(run("apply", path)[0])
        except Exception as exc:  # noqa: BLE001 - the assertion below shows it
            results.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=apply) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert all(isinstance(result, str) for result in results), results
    assert sorted(summary(result)["orgs"] for result in results) == [
        "0 created, 0 updated, 2 unchanged",
        "0 created, 0 updated, 2 unchanged",
        "0 created, 0 updated, 2 unchanged",
        "2 created, 0 updated, 0 unchanged",
    ]
    assert Deployment.objects.count() == 5


def test_make_run_applies_gateway_config_file_before_serving(tmp_path):
    run = MakeRun(tmp_path, DEMO_LOG_COUNT="0", GATEWAY_CONFIG_FILE=str(write(tmp_path, EXAMPLE)))
    try:
        run.wait_until_ready()
        with sqlite3.connect(tmp_path / "tollgate.sqlite3") as database:
            orgs = database.execute("SELECT slug FROM proxy_organisation ORDER BY slug").fetchall()
            groups = database.execute("SELECT count(*) FROM proxy_modelgroup").fetchone()
        assert orgs == [("acme",), ("globex",)]
        assert groups == (4,)
        assert "model groups: 4 created" in run.output
    finally:
        run.kill_leftovers()


def test_make_run_refuses_to_start_on_a_bad_gateway_config_file(tmp_path):
    bad = write(tmp_path, "orgs:\n  - slug: acme\n    projects:\n      - slug: s\n        content_logging: all\n")
    run = MakeRun(tmp_path, DEMO_LOG_COUNT="0", GATEWAY_CONFIG_FILE=str(bad))
    try:
        assert run.process.wait(timeout=120) != 0
        assert "orgs[0].projects[0].content_logging: must be one of full, metadata" in run.output
        assert "uvicorn" not in " ".join(command for _, command in run.processes())
    finally:
        run.kill_leftovers()
