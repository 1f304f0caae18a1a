"""Shared fixtures: a real provider server, the gateway served by uvicorn, and callers with keys."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from django.conf import settings as django_settings

from gateway_project import crypto
from proxy import auth, credentials, routing
from proxy.providers.registry import PROVIDERS
from proxy.router import cooldowns, groups, strategies
from telemetry import handoff
from tests.provider_server import ProviderServer

# The suite runs with DATABASE_URL and REDIS_URL set, which the gateway treats as a deployment:
# it is given what a deployment must have (gateway_project.safety), here and for subprocesses.
# Settings were read before this file, hence both the environment and the settings object.
TEST_DEPLOYMENT_ENV = {
    "SECRET_KEY": "tests-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    "GATEWAY_ENCRYPTION_KEY": "dGVzdHMtb25seS1mZXJuZXQta2V5LTAxMjM0NTY3ODk=",
    "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
}
for _name, _value in TEST_DEPLOYMENT_ENV.items():
    os.environ.setdefault(_name, _value)
django_settings.SECRET_KEY = os.environ["SECRET_KEY"]
django_settings.GATEWAY_ENCRYPTION_KEY = os.environ["GATEWAY_ENCRYPTION_KEY"]
django_settings.ALLOWED_HOSTS = os.environ["ALLOWED_HOSTS"].split(",")
crypto._fernet.cache_clear()


@pytest.fixture(scope="session")
def provider_server():
    server = ProviderServer.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True, scope="session")
def _providers_point_at_local_server(provider_server):
    """Every provider's base URL goes to the local server; LLM providers are never reachable from tests."""
    patcher = pytest.MonkeyPatch()
    for spec in PROVIDERS.values():
        suffix = "" if spec.name == "anthropic" else "/v1"
        patcher.setenv(f"{spec.env_prefix}_BASE_URL", provider_server.url + suffix)
    patcher.setenv("AZURE_BASE_URL", provider_server.url)
    yield
    patcher.undo()


_ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveGateway:
    """The production ASGI application served by uvicorn in a background thread."""

    def __init__(self):
        from gateway_project.asgi import application

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(application, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self):
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.02)
        return self

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_gateway(_providers_point_at_local_server):
    gateway = LiveGateway().start()
    yield gateway
    gateway.stop()


@pytest.fixture(autouse=True, scope="session")
def _records_stay_in_process():
    """The proxy tests read request records from memory; the export pipeline has tests of its own."""
    handoff.pipeline.publisher = handoff.MemoryPublisher()
    yield
    handoff.pipeline.__dict__.pop("publisher", None)


@pytest.fixture
def published():
    """Request-log documents the gateway hands off during one test."""
    handoff.pipeline.flush_sync()
    handoff.MemoryPublisher.published.clear()
    yield Published()
    handoff.pipeline.flush_sync()


class Published:
    def all(self) -> list[dict]:
        return list(handoff.MemoryPublisher.published)

    def wait_for(self, record_id: str, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for document in handoff.MemoryPublisher.published:
                if document["attributes"]["id"] == record_id:
                    return document
            time.sleep(0.02)
        raise AssertionError(f"no request record {record_id} was handed off within {timeout} s")

    def wait_for_count(self, count: int, timeout: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(handoff.MemoryPublisher.published) >= count:
                return self.all()
            time.sleep(0.02)
        raise AssertionError(f"expected {count} request records, got {len(handoff.MemoryPublisher.published)}")


@pytest.fixture(autouse=True)
def _fresh_lookup_caches():
    auth.clear_caches()
    credentials.forget_credentials()
    routing.forget_routes()
    groups.forget_groups()
    cooldowns.store.forget()
    strategies.forget_load()
    yield


@dataclass
class Caller:
    org: object
    project: object
    key: str
    gateway_url: str

    @property
    def openai_base_url(self) -> str:
        return self.gateway_url + "/v1"


@pytest.fixture
def caller(transactional_db, live_gateway, published):
    """An org with a project and an org-wide gateway key, calling the live gateway."""
    from proxy import services

    org = services.organisation_get_or_create(slug="acme", name="Acme")
    project = services.project_get_or_create(org=org, slug="search", name="Search")
    issued = services.gateway_key_issue(org=org)
    return Caller(org=org, project=project, key=issued.plaintext, gateway_url=live_gateway.url)


def wait_until_serving(url: str, process, log_path: Path, *, timeout: float, what: str = "the gateway") -> None:
    """Until a gateway started as `process` answers /healthz; its log if it exits or never answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert process.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, f"{what} did not start"
        time.sleep(0.1)


@pytest.fixture
def test_database_url(django_db_setup) -> str:
    db = django_settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.fail("another gateway process shares the database only on PostgreSQL (set DATABASE_URL)")
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


@pytest.fixture
def other_gateway(test_database_url, tmp_path, _providers_point_at_local_server):
    """A second gateway process under uvicorn, as another worker of the same deployment would be."""
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(_ROOT),
        "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
        "DATABASE_URL": test_database_url,
        "REDIS_URL": django_settings.REDIS_URL,
        "GATEWAY_VAR_DIR": str(tmp_path),
        "TELEMETRY_ENABLED": "false",
    }
    command = [sys.executable, "-m", "uvicorn", "gateway_project.asgi:application", "--port", str(port)]
    log = (tmp_path / "gateway.log").open("wb")
    process = subprocess.Popen(command, cwd=_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(url, process, tmp_path / "gateway.log", timeout=30, what="the second gateway")
    yield url
    process.terminate()
    process.wait(timeout=15)
    log.close()
