"""`/v1/models`: the gateway's own catalog, per org, with the OpenAI and Anthropic SDKs against the live gateway."""

import anthropic
import httpx
import openai
import pytest

from proxy import services
from proxy.models import ModelGroup, ModelRoute

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def catalog(caller):
    """acme (the caller's org) and globex each have groups of their own; some groups are shared."""
    globex = services.organisation_get_or_create(slug="globex", name="Globex")
    ModelGroup.objects.create(org=None, name="gpt-4o")
    ModelGroup.objects.create(org=None, name="claude-sonnet")
    ModelGroup.objects.create(org=caller.org, name="acme-tuned")
    # acme's own gpt-4o shadows the shared one for acme's keys.
    ModelGroup.objects.create(org=caller.org, name="gpt-4o")
    ModelGroup.objects.create(org=globex, name="globex-secret")
    ModelRoute.objects.create(model_name="groq/llama-3.1-8b-instant", provider="groq")
    ModelRoute.objects.create(model_name="claude-sonnet", provider="anthropic")
    return {"globex_key": services.gateway_key_issue(org=globex).plaintext}


def openai_client(caller, key=None):
    return openai.OpenAI(base_url=caller.openai_base_url, api_key=key or caller.key, max_retries=0)


def anthropic_client(caller, key=None):
    return anthropic.Anthropic(base_url=caller.gateway_url, api_key=key or caller.key, max_retries=0)


def test_the_list_is_the_orgs_groups_the_shared_groups_and_the_routes(caller, catalog, provider_server, published):
    upstream_before = len(provider_server.requests)
    raw = openai_client(caller).models.with_raw_response.list()
    models = raw.parse()

    by_id = {model.id: model for model in models.data}
    assert list(by_id) == sorted(["acme-tuned", "claude-sonnet", "gpt-4o", "groq/llama-3.1-8b-instant"])
    assert by_id["acme-tuned"].owned_by == "acme"
    assert by_id["gpt-4o"].owned_by == "acme"
    assert by_id["claude-sonnet"].owned_by == "tollgate"
    assert by_id["groq/llama-3.1-8b-instant"].owned_by == "groq"
    assert by_id["acme-tuned"].created == int(ModelGroup.objects.get(name="acme-tuned").created_at.timestamp())
    assert {model.object for model in models.data} == {"model"}
    assert raw.http_response.json()["object"] == "list"
    # The catalog is the gateway's: no provider was asked.
    assert len(provider_server.requests) == upstream_before

    document = published.wait_for(raw.headers["x-request-id"])["attributes"]
    assert (document["org_id"], document["metadata"]["path"], document["metadata"]["status_code"]) == (
        "acme",
        "/v1/models",
        200,
    )


def test_another_orgs_key_sees_its_own_groups_and_never_acmes(caller, catalog):
    ids = [model.id for model in openai_client(caller, catalog["globex_key"]).models.list().data]
    assert ids == sorted(["claude-sonnet", "globex-secret", "gpt-4o", "groq/llama-3.1-8b-instant"])

    acme_ids = [model.id for model in openai_client(caller).models.list().data]
    assert "globex-secret" not in acme_ids
    shared = next(m for m in openai_client(caller, catalog["globex_key"]).models.list().data if m.id == "gpt-4o")
    assert shared.owned_by == "tollgate"


def test_an_empty_catalog_is_an_empty_list_not_the_providers(caller):
    response = httpx.get(caller.openai_base_url + "/models", headers={"authorization": f"Bearer {caller.key}"})
    assert response.status_code == 200
    assert response.json() == {"object": "list", "data": []}


def test_one_model_by_id_including_names_with_slashes(caller, catalog, published):
    client = openai_client(caller)
    model = client.models.retrieve("acme-tuned")
    assert (model.id, model.object, model.owned_by) == ("acme-tuned", "model", "acme")
    routed = httpx.get(
        caller.openai_base_url + "/models/groq/llama-3.1-8b-instant", headers={"authorization": f"Bearer {caller.key}"}
    )
    assert routed.status_code == 200
    assert routed.json()["id"] == "groq/llama-3.1-8b-instant"
    document = published.wait_for(routed.headers["x-request-id"])["attributes"]
    assert document["model"] == "groq/llama-3.1-8b-instant"


@pytest.mark.parametrize("model_id", ["no-such-model", "globex-secret"])
def test_an_unknown_or_another_orgs_model_is_a_404_in_openais_format(caller, catalog, published, model_id):
    with pytest.raises(openai.NotFoundError) as raised:
        openai_client(caller).models.retrieve(model_id)

    response = raised.value.response
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "model_not_found", "model")
    assert model_id in error["message"]
    document = published.wait_for(response.headers["x-request-id"])["attributes"]
    assert (document["metadata"]["status_code"], document["metadata"]["error_type"]) == (404, "model_not_found")
    assert document["org_id"] == "acme"


def test_the_anthropic_sdk_gets_anthropics_list_shape_page_by_page(caller, catalog, published):
    client = anthropic_client(caller)

    first = client.models.list(limit=3)
    assert [model.id for model in first.data] == ["acme-tuned", "claude-sonnet", "gpt-4o"]
    assert (first.has_more, first.first_id, first.last_id) == (True, "acme-tuned", "gpt-4o")
    assert {model.type for model in first.data} == {"model"}
    assert first.data[0].display_name == "acme-tuned"
    assert first.data[0].created_at == ModelGroup.objects.get(name="acme-tuned").created_at.replace(microsecond=0)
    # The SDK follows `last_id` through every page.
    assert [model.id for model in client.models.list(limit=2)] == [
        "acme-tuned",
        "claude-sonnet",
        "gpt-4o",
        "groq/llama-3.1-8b-instant",
    ]
    before = httpx.get(
        caller.gateway_url + "/v1/models",
        params={"before_id": "gpt-4o", "limit": 1},
        headers={"x-api-key": caller.key, "anthropic-version": "2023-06-01"},
    ).json()
    assert (before["first_id"], before["has_more"]) == ("claude-sonnet", True)

    routed = client.models.retrieve("groq/llama-3.1-8b-instant")
    assert routed.created_at.timestamp() == 0  # routes keep no date: the epoch, as Anthropic does


def test_anthropic_errors_come_in_anthropics_format(caller, catalog, published):
    with pytest.raises(anthropic.NotFoundError) as raised:
        anthropic_client(caller).models.retrieve("globex-secret")
    body = raised.value.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"

    response = httpx.get(
        caller.gateway_url + "/v1/models",
        params={"limit": "0"},
        headers={"x-api-key": caller.key, "anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == {"type": "invalid_request_error", "message": response.json()["error"]["message"]}
    assert "limit" in response.json()["error"]["message"]
    document = published.wait_for(response.headers["x-request-id"])["attributes"]
    assert document["metadata"]["status_code"] == 400


def test_without_a_key_the_catalog_is_a_401_with_its_record(caller, catalog, published):
    response = httpx.get(caller.openai_base_url + "/models/gpt-4o")
    assert response.status_code == 401
    assert response.json()["error"]["code"]
    document = published.wait_for(response.headers["x-request-id"])["attributes"]
    assert document["metadata"]["status_code"] == 401


def test_other_methods_on_a_model_are_405_with_the_allowed_ones(caller, catalog, published):
    response = httpx.delete(
        caller.openai_base_url + "/models/gpt-4o", headers={"authorization": f"Bearer {caller.key}"}
    )
    assert response.status_code == 405
    assert {method.strip() for method in response.headers["allow"].split(",")} == {"GET", "OPTIONS"}
    assert published.wait_for(response.headers["x-request-id"])["attributes"]["metadata"]["status_code"] == 405


@pytest.mark.parametrize("model_id", ["a%00b", "%E2%80%AEevil", "x" * 2000])
def test_hostile_model_ids_are_a_404_with_a_record(caller, catalog, published, model_id):
    response = httpx.get(
        caller.openai_base_url + "/models/" + model_id, headers={"authorization": f"Bearer {caller.key}"}
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    document = published.wait_for(response.headers["x-request-id"])["attributes"]
    assert document["metadata"]["status_code"] == 404
