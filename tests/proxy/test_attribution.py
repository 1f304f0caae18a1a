"""Keys and attribution headers: a header can never book a request on another org or project."""

import time

import httpx
import pytest

from proxy import auth, services

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def chat(caller, key=None, **headers):
    sent = {"authorization": f"Bearer {key or caller.key}"} | headers
    return httpx.post(caller.openai_base_url + "/chat/completions", json=BODY, headers=sent, timeout=30)


def attributes(published, response):
    return published.wait_for(response.headers["x-request-id"])["attributes"]


def test_headers_within_the_key_scope_are_recorded(caller, published):
    response = chat(caller, **{"x-organization-id": "acme", "x-project-id": "search", "x-user-id": "u-1"})
    assert response.status_code == 200
    recorded = attributes(published, response)
    assert (recorded["org_id"], recorded["project_id"], recorded["user_id"]) == ("acme", "search", "u-1")


def test_org_comes_from_the_key_when_no_header_is_sent(caller, published):
    response = chat(caller)
    assert response.status_code == 200
    recorded = attributes(published, response)
    assert (recorded["org_id"], recorded["project_id"]) == ("acme", None)


@pytest.mark.parametrize("header", ["x-organisation-id", "x-organization-id"])
def test_another_orgs_id_is_403(caller, published, header):
    services.organisation_get_or_create(slug="globex")
    response = chat(caller, **{header: "globex"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "org_forbidden"
    recorded = attributes(published, response)
    assert recorded["org_id"] == "acme"  # booked to the key's own org, never the claimed one
    assert recorded["metadata"]["error_type"] == "org_forbidden"


def test_project_of_another_org_is_403(caller, published):
    other = services.organisation_get_or_create(slug="globex")
    services.project_get_or_create(org=other, slug="secret")
    response = chat(caller, **{"x-project-id": "secret"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "project_forbidden"


def test_pinned_key_only_serves_its_project(caller, published):
    other_project = services.project_get_or_create(org=caller.org, slug="billing")
    pinned = services.gateway_key_issue(org=caller.org, project=caller.project).plaintext
    assert chat(caller, key=pinned, **{"x-project-id": other_project.slug}).status_code == 403
    response = chat(caller, key=pinned)
    assert response.status_code == 200
    assert attributes(published, response)["project_id"] == "search"


def test_user_id_is_length_limited(caller, settings):
    settings.GATEWAY_USER_ID_MAX_LENGTH = 16
    response = chat(caller, **{"x-user-id": "u" * 17})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "header_too_long"


def test_revoked_key_stops_within_the_cache_ttl(caller, monkeypatch):
    monkeypatch.setattr(auth._keys, "ttl", 0.5)
    issued = services.gateway_key_issue(org=caller.org)
    assert chat(caller, key=issued.plaintext).status_code == 200
    services.gateway_key_revoke(key=issued.key)
    deadline = time.monotonic() + 5
    while chat(caller, key=issued.plaintext).status_code == 200:
        assert time.monotonic() < deadline, "a revoked key kept working past its cache TTL"
        time.sleep(0.1)
    assert chat(caller, key=issued.plaintext).status_code == 401


def test_keys_are_stored_hashed(caller):
    from proxy.models import GatewayKey, hash_gateway_key

    stored = GatewayKey.objects.get(key_hash=hash_gateway_key(caller.key))
    assert caller.key not in {stored.key_hash, stored.prefix, stored.name}


def test_callers_own_provider_key_is_forwarded_and_never_recorded(caller, published, provider_server):
    response = chat(caller, **{"x-provider-api-key": "sk-callers-own"})
    assert response.status_code == 200
    upstream = [r for r in provider_server.requests if r.path == "/v1/chat/completions"][-1]
    assert upstream.headers["authorization"] == "Bearer sk-callers-own"
    document = published.wait_for(response.headers["x-request-id"])
    assert "sk-callers-own" not in str(document)


def test_org_credential_from_admin_is_used(caller, provider_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-deployment")
    services.provider_credential_set(org=caller.org, provider="openai", api_key="sk-acme-own")
    assert chat(caller).status_code == 200
    upstream = [r for r in provider_server.requests if r.path == "/v1/chat/completions"][-1]
    assert upstream.headers["authorization"] == "Bearer sk-acme-own"


def test_routing_order(caller, published, provider_server):
    from proxy.models import ModelRoute

    ModelRoute.objects.create(model_name="house-model", provider="groq", upstream_model="llama-3.1-8b-instant")
    cases = [
        ({"x-provider": "mistral"}, "gpt-4o-mini", "mistral", "gpt-4o-mini"),
        ({}, "together/meta-llama/Llama-3-8b", "together", "meta-llama/Llama-3-8b"),
        ({}, "house-model", "groq", "llama-3.1-8b-instant"),
        ({}, "gpt-4o-mini", "openai", "gpt-4o-mini"),
    ]
    for headers, model, provider, upstream_model in cases:
        response = httpx.post(
            caller.openai_base_url + "/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "x"}]},
            headers={"authorization": f"Bearer {caller.key}"} | headers,
        )
        assert response.status_code == 200, response.text
        recorded = attributes(published, response)
        assert (recorded["provider"], recorded["metadata"]["upstream_model"]) == (provider, upstream_model)
        upstream = [r for r in provider_server.requests if r.path == "/v1/chat/completions"][-1]
        assert upstream.json["model"] == upstream_model
        assert recorded["model"] == model


def test_azure_deployments_use_their_own_url_and_key_header(caller, published, provider_server, monkeypatch):
    monkeypatch.setenv("AZURE_API_KEY", "azure-secret")
    response = httpx.post(
        caller.openai_base_url + "/chat/completions",
        json={"model": "azure/my-gpt4o-deployment", "messages": [{"role": "user", "content": "x"}]},
        headers={"authorization": f"Bearer {caller.key}"},
    )
    assert response.status_code == 200, response.text
    upstream = provider_server.requests[-1]
    assert upstream.path == "/openai/deployments/my-gpt4o-deployment/chat/completions"
    assert upstream.headers["api-key"] == "azure-secret"
    assert "authorization" not in upstream.headers
    assert attributes(published, response)["provider"] == "azure"


def test_metadata_only_projects_never_log_content(caller, published):
    from proxy.models import Project

    secret = services.project_get_or_create(org=caller.org, slug="medical")
    secret.content_logging = Project.ContentLogging.METADATA
    secret.save()
    headers = {"authorization": f"Bearer {caller.key}", "x-project-id": "medical"}
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "my diagnosis is private"}]}
    plain = httpx.post(caller.openai_base_url + "/chat/completions", json=body, headers=headers)
    streamed = httpx.post(caller.openai_base_url + "/chat/completions", json=body | {"stream": True}, headers=headers)
    assert plain.status_code == streamed.status_code == 200
    assert "tok0" in plain.text and "tok0" in streamed.text  # the caller still gets everything

    for response in (plain, streamed):
        document = published.wait_for(response.headers["x-request-id"])
        attributes = document["attributes"]
        assert attributes["metadata"]["content_redacted"] is True
        assert attributes["request"]["messages"] == "[redacted]"
        assert attributes["request"]["model"] == "gpt-4o-mini"
        assert attributes["metadata"]["tokens"]["output"] == 20  # metadata is kept
        text = str(document)
        assert "diagnosis" not in text and "tok0" not in text
    assert published.wait_for(streamed.headers["x-request-id"])["attributes"]["response"]["streamed_data"] == []
