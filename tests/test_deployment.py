"""The deployment files: docker-compose, the management command and the metrics endpoint."""

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def subprocess_database_url() -> str:
    """The database this test run uses, for a subprocess (pytest-django renames it to test_<name>)."""
    from django.db import connection

    params = connection.settings_dict
    if params["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{params['NAME']}"
    user = params["USER"] or "postgres"
    return f"postgres://{user}@{params['HOST'] or '127.0.0.1'}:{params['PORT'] or 5432}/{params['NAME']}"


def test_compose_file_defines_the_full_stack():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "elasticsearch", "kibana", "web", "worker", "beat"} <= set(services)
    assert services["elasticsearch"]["image"].split(":")[1].startswith("8.")
    for name in ("web", "worker", "beat"):
        environment = services[name]["environment"]
        assert environment["DATABASE_URL"].startswith("postgres://")
        assert environment["REDIS_URL"].startswith("redis://")
        assert environment["ELASTICSEARCH_URL"] == "http://elasticsearch:9200"
        assert set(services[name]["depends_on"]) >= {"postgres", "redis"}
    # Every ${VAR} the file uses must be a setting the gateway reads.
    settings_source = (ROOT / "gateway_project" / "settings.py").read_text()
    for variable in set(re.findall(r"\$\{(\w+)", (ROOT / "docker-compose.yml").read_text())):
        assert f'"{variable}"' in settings_source or variable.endswith("_API_KEY"), variable


@pytest.mark.django_db(transaction=True)
def test_issue_key_command_prints_a_working_key_last(caller):
    from proxy.models import GatewayKey, Project, hash_gateway_key

    result = subprocess.run(
        [sys.executable, "manage.py", "issue_key", "--org", "initech", "--project", "tps"],
        cwd=ROOT,
        env=os.environ | {"DATABASE_URL": subprocess_database_url()},
        capture_output=True,
        text=True,
        check=True,
    )
    key = result.stdout.strip().splitlines()[-1]
    stored = GatewayKey.objects.select_related("org", "project").get(key_hash=hash_gateway_key(key))
    assert (stored.org.slug, stored.project.slug) == ("initech", "tps")
    assert Project.objects.filter(org__slug="initech", slug="tps").exists()
    response = httpx.post(
        caller.openai_base_url + "/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200


@pytest.mark.django_db(transaction=True)
def test_metrics_endpoint_reports_http_and_provider_metrics(caller, published):
    response = httpx.post(
        caller.openai_base_url + "/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {caller.key}", "x-user-id": "someone-specific"},
    )
    published.wait_for(response.headers["x-request-id"])
    metrics = httpx.get(caller.gateway_url + "/metrics").text
    assert re.search(r'http_requests_total\{method="POST",path="v1/chat/completions",status="200"\} [1-9]', metrics)
    assert re.search(r'provider_requests_total\{.*provider="openai".*\} [1-9]', metrics)
    assert re.search(r'provider_tokens_total\{model="gpt-4o-mini",provider="openai",type="output"\} [1-9]', metrics)
    assert "http_request_duration_seconds_bucket" in metrics
    assert "someone-specific" not in metrics  # no user ids in labels


@pytest.mark.django_db(transaction=True)
def test_health_and_readiness(caller):
    assert httpx.get(caller.gateway_url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(caller.gateway_url + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True, "broker": True}


def test_the_container_runs_uvicorn_as_the_process_docker_stop_signals():
    command = (ROOT / "Dockerfile").read_text().split("CMD", 1)[1]
    assert "&& exec uvicorn " in command
    assert "--timeout-graceful-shutdown" in command
