"""What the gateway keeps between callers and the provider: no cookies, no account headers, bounded
answers, safe URLs, and failures that say what went wrong."""

import logging
import socket

import httpx
import pytest

from telemetry import handoff

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
HELLO = [{"role": "user", "content": "hello"}]


def post(caller, path, body, *, key=None, headers=None):
    key = key or caller.key
    auth = {"x-api-key": key} if path == MESSAGES else {"authorization": f"Bearer {key}"}
    return httpx.post(caller.gateway_url + path, json=body, headers={**auth, **(headers or {})}, timeout=30)


def metadata_of(published, response):
    return published.wait_for(response.headers["x-request-id"])["attributes"]["metadata"]


def assert_openai_error(response, status, code):
    assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == code
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.fixture
def other_caller(caller):
    from proxy import services

    org = services.organisation_get_or_create(slug="globex", name="Globex")
    return services.gateway_key_issue(org=org).plaintext


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- 1. Cookies ------------------------------------------------------------------------


def test_an_upstream_cookie_never_reaches_the_next_callers_request(caller, other_caller, provider_server):
    first = post(caller, CHAT, {"model": "cookie", "messages": HELLO})
    assert first.status_code == 200
    assert "set-cookie" not in first.headers

    for path, body in (
        (CHAT, {"model": "gpt-4o-mini", "messages": HELLO}),
        (CHAT, {"model": "gpt-4o-mini", "messages": HELLO, "stream": True}),
        (MESSAGES, {"model": "claude-3-5-haiku-latest", "max_tokens": 5, "messages": HELLO}),
    ):
        provider_server.clear()
        assert post(caller, path, body, key=other_caller).status_code == 200
        upstream = provider_server.requests[-1]
        assert "cookie" not in upstream.headers, f"{path} carried another caller's upstream cookie"


# --- 3. Headers passed back ----------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_the_deployments_account_headers_and_cookies_are_not_passed_back(caller, stream):
    response = post(caller, CHAT, {"model": "orgheaders", "messages": HELLO, "stream": stream})
    assert response.status_code == 200
    for name in ("openai-organization", "openai-project", "set-cookie"):
        assert name not in response.headers, f"{name} was passed back"
    # What SDKs use for retries and rate limits still reaches them.
    assert response.headers["openai-processing-ms"] == "12"
    assert response.headers["x-ratelimit-remaining-requests"] == "9999"


# --- 2. Response caps (non-streamed) ----------------------------------------------------


def test_a_gzip_bomb_is_a_502_not_a_relayed_blob(caller, published, settings):
    settings.GATEWAY_MAX_RESPONSE_BYTES = 1024 * 1024
    response = post(caller, CHAT, {"model": "gzip-bloat-20480", "messages": HELLO})
    error = assert_openai_error(response, 502, "upstream_response_too_large")
    assert "1048576" in error["message"]
    assert len(response.content) < 1000
    metadata = metadata_of(published, response)
    assert (metadata["status_code"], metadata["error_type"]) == (502, "upstream_response_too_large")
    assert metadata["provider_error_type"] == "response_too_large"

    response = post(caller, MESSAGES, {"model": "claude-gzip-bloat-20480", "max_tokens": 5, "messages": HELLO})
    assert response.status_code == 502
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "api_error"


def test_a_compressed_answer_under_the_cap_is_decoded_and_relayed(caller, settings):
    settings.GATEWAY_MAX_RESPONSE_BYTES = 1024 * 1024
    response = post(caller, CHAT, {"model": "gzip-bloat-100", "messages": HELLO})
    assert response.status_code == 200
    assert len(response.json()["choices"][0]["message"]["content"]) > 100 * 1024


# --- 4. Model names in URLs -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["x/../../../../admin/secret?", "..", "a b", "gpt#frag", "x%2F..%2Fadmin"])
def test_a_deployment_name_cannot_steer_the_azure_url(caller, published, provider_server, monkeypatch, name):
    monkeypatch.setenv("AZURE_API_KEY", "azure-deployment-key")
    provider_server.clear()
    response = post(caller, CHAT, {"model": f"azure/{name}", "messages": HELLO})
    error = assert_openai_error(response, 400, "invalid_model")
    assert error["param"] == "model"
    assert provider_server.requests == [], "the deployment key was sent to a path the model name chose"
    metadata = metadata_of(published, response)
    assert (metadata["status_code"], metadata["error_type"]) == (400, "invalid_model")


def test_a_plain_deployment_name_reaches_its_deployment(caller, provider_server, monkeypatch):
    monkeypatch.setenv("AZURE_API_KEY", "azure-deployment-key")
    response = post(caller, CHAT, {"model": "azure/gpt-4o.mini_v2-eu", "messages": HELLO})
    assert response.status_code == 200
    upstream = provider_server.requests[-1]
    assert upstream.path == "/openai/deployments/gpt-4o.mini_v2-eu/chat/completions"
    assert upstream.headers["api-key"] == "azure-deployment-key"


# --- 5. Misconfiguration is visible -------------------------------------------------------


def _unreachable(caller, published, caplog, base_url, reason):
    caplog.set_level(logging.WARNING, logger="proxy")
    response = post(caller, CHAT, {"model": "custom/llama3", "messages": HELLO})
    error = assert_openai_error(response, 502, "upstream_unreachable")
    host = httpx.URL(base_url).host
    for part in ("custom", host, reason):
        assert part.lower() in error["message"].lower(), error["message"]
    metadata = metadata_of(published, response)
    assert metadata["provider_error_type"] == "upstream_unreachable"
    assert reason.lower() in metadata["error_message"].lower()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("proxy")]
    assert len(warnings) == 1
    assert host in warnings[0].getMessage() and reason.lower() in warnings[0].getMessage().lower()


def test_connection_refused_names_the_provider_and_host(caller, published, monkeypatch, caplog):
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    monkeypatch.setenv("CUSTOM_BASE_URL", base_url)
    _unreachable(caller, published, caplog, base_url, "connection refused")


def test_a_dns_failure_says_so(caller, published, monkeypatch, caplog):
    base_url = "http://tollgate-nowhere.invalid/v1"
    monkeypatch.setenv("CUSTOM_BASE_URL", base_url)
    _unreachable(caller, published, caplog, base_url, "DNS")


def test_a_tls_failure_says_so(caller, published, monkeypatch, caplog, provider_server):
    base_url = provider_server.url.replace("http://", "https://") + "/v1"  # TLS to a plain-HTTP server
    monkeypatch.setenv("CUSTOM_BASE_URL", base_url)
    _unreachable(caller, published, caplog, base_url, "TLS")


def test_a_read_timeout_names_the_provider(caller, published, settings):
    settings.GATEWAY_UPSTREAM_TIMEOUT = 0.3
    response = post(caller, CHAT, {"model": "slow-3", "messages": HELLO})
    error = assert_openai_error(response, 504, "upstream_timeout")
    assert "openai" in error["message"].lower() and "127.0.0.1" in error["message"]
    assert "0.3" in metadata_of(published, response)["error_message"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_base_url_pointing_at_the_gateway_itself_is_refused(caller, published, monkeypatch, live_gateway, host):
    # A shell that exported OPENAI_BASE_URL for the SDK, then started the gateway in it.
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://{host}:{live_gateway.port}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", caller.key)
    response = post(caller, CHAT, {"model": "gpt-4o-mini", "messages": HELLO})
    error = assert_openai_error(response, 502, "upstream_is_gateway")
    assert "OPENAI_BASE_URL" in error["message"]
    metadata = metadata_of(published, response)
    assert (metadata["status_code"], metadata["provider_error_type"]) == (502, "upstream_is_gateway")
    handoff.pipeline.flush_sync()
    ids = [document["attributes"]["id"] for document in published.all()]
    assert ids == [response.headers["x-request-id"]], "the gateway called itself"
