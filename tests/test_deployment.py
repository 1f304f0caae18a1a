"""The deployment files: docker-compose, the management command and the metrics endpoint."""

import json
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


# --- A deployment refuses development defaults; a local run makes its own ----------------

SAFE = {
    "SECRET_KEY": "a-deployment-secret-key-0123456789-abcdefghijklmnop",
    "GATEWAY_ENCRYPTION_KEY": "ZGVwbG95bWVudC1mZXJuZXQta2V5LTAxMjM0NTY3ODk=",
    "ALLOWED_HOSTS": "gateway.example.com",
}
SETTINGS_VARIABLES = (
    "SECRET_KEY",
    "GATEWAY_ENCRYPTION_KEY",
    "ALLOWED_HOSTS",
    "DATABASE_URL",
    "REDIS_URL",
    "ELASTICSEARCH_URL",
    "ENABLE_ELASTICSEARCH",
    "HOST",
)


def run_gateway_python(args: list[str], tmp_path: Path, **variables) -> subprocess.CompletedProcess:
    """`python <args>` in a fresh environment: none of this run's settings, only `variables`."""
    environment = {name: value for name, value in os.environ.items() if name not in SETTINGS_VARIABLES}
    environment |= {"GATEWAY_VAR_DIR": str(tmp_path / "var"), "CELERY_BROKER_URL": "memory://"} | variables
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )


def manage_check(tmp_path: Path, **variables) -> subprocess.CompletedProcess:
    return run_gateway_python(["manage.py", "check"], tmp_path, **variables)


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'deployed.sqlite3'}"


def test_a_fresh_local_run_needs_no_settings_and_keeps_its_own_secret_key(tmp_path):
    first = manage_check(tmp_path)
    assert first.returncode == 0, first.stderr
    key_file = tmp_path / "var" / "secret_key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()
    assert len(key) >= 50
    assert manage_check(tmp_path).returncode == 0
    assert key_file.read_text().strip() == key


@pytest.mark.parametrize(
    "deployment",
    [
        {"DATABASE_URL": "<sqlite>"},
        {"REDIS_URL": "redis://127.0.0.1:6379/15"},
        {"ELASTICSEARCH_URL": "http://127.0.0.1:9"},
        {"HOST": "0.0.0.0"},
    ],
)
def test_a_deployment_on_development_defaults_refuses_to_start(tmp_path, deployment):
    deployment = {name: sqlite_url(tmp_path) if value == "<sqlite>" else value for name, value in deployment.items()}

    refused = manage_check(tmp_path, **deployment)

    assert refused.returncode != 0
    for name in ("SECRET_KEY", "GATEWAY_ENCRYPTION_KEY", "ALLOWED_HOSTS"):
        assert name in refused.stderr, refused.stderr
    assert not (tmp_path / "var" / "secret_key").exists()


@pytest.mark.parametrize(
    "unsafe",
    [
        {"SECRET_KEY": "tollgate-development-secret-key-change-me"},
        {"SECRET_KEY": "change-me-in-production"},
        {"SECRET_KEY": "short"},
        {"GATEWAY_ENCRYPTION_KEY": ""},
        {"GATEWAY_ENCRYPTION_KEY": "not-a-fernet-key"},
        {"ALLOWED_HOSTS": ["*"]},
        {"ALLOWED_HOSTS": ["gateway.example.com", "*"]},
        {"ALLOWED_HOSTS": []},
    ],
)
def test_each_unsafe_value_is_named(settings, unsafe):
    from gateway_project import safety

    settings.GATEWAY_DEPLOYED = True
    for name, value in (SAFE | {"ALLOWED_HOSTS": ["gateway.example.com"]} | unsafe).items():
        setattr(settings, name, value)

    problems = safety.unsafe_defaults()

    assert len(problems) == 1
    assert problems[0].startswith(next(iter(unsafe)))
    settings.GATEWAY_DEPLOYED = False
    assert safety.unsafe_defaults() == []


def test_the_asgi_app_and_the_worker_refuse_to_start_on_defaults(tmp_path):
    deployment = {"DATABASE_URL": sqlite_url(tmp_path)}
    web = run_gateway_python(["-c", "import gateway_project.asgi"], tmp_path, **deployment)
    assert web.returncode != 0
    assert "Refusing to start" in web.stderr and "SECRET_KEY" in web.stderr
    assert run_gateway_python(["-c", "import gateway_project.asgi"], tmp_path, **deployment, **SAFE).returncode == 0
    assert manage_check(tmp_path, **deployment, **SAFE).returncode == 0

    worker = run_gateway_python(
        ["-m", "celery", "-A", "gateway_project", "worker", "--pool", "solo", "--concurrency", "1"],
        tmp_path,
        **deployment,
    )
    assert worker.returncode != 0
    assert "Refusing to start" in worker.stdout + worker.stderr


def test_compose_needs_explicit_secrets_and_keeps_elasticsearch_and_kibana_on_loopback():
    text = (ROOT / "docker-compose.yml").read_text()
    services = yaml.safe_load(text)["services"]
    for name in ("SECRET_KEY", "GATEWAY_ENCRYPTION_KEY", "ALLOWED_HOSTS"):
        assert re.search(r"\$\{" + name + r":\?[^}]+\}", text), name
        for service in ("web", "worker", "beat"):
            assert services[service]["environment"][name].startswith("${" + name + ":?"), (service, name)
    for service in ("elasticsearch", "kibana", "prometheus", "grafana", "jaeger"):
        for port in services[service].get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (service, port)


def test_compose_scrapes_the_gateway_shows_the_dashboard_and_collects_its_traces():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    [job] = scrape["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == ["web:8000"]
    mounted = {volume.split(":")[0]: volume.split(":")[1] for volume in services["prometheus"]["volumes"]}
    assert mounted["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"

    grafana = {volume.split(":")[0]: volume.split(":")[1] for volume in services["grafana"]["volumes"]}
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    assert grafana["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    [datasource] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "tollgate.yml").read_text())["providers"]
    assert grafana["./deploy/grafana/dashboards"] == provider["options"]["path"]
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "tollgate.json").read_text())
    assert {panel["datasource"]["uid"] for panel in dashboard["panels"]} == {datasource["uid"]}

    # The gateway's processes share one metrics directory, so /metrics shows the export workers too.
    for name in ("web", "worker", "beat"):
        assert "prometheus-multiproc:/tmp/prometheus" in services[name]["volumes"]
        assert services[name]["environment"]["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/prometheus"
        assert services[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"].endswith("http://jaeger:4318}")
