"""/metrics stays small whatever model names callers send, and can be kept private with a token."""

import re
import uuid

import httpx
import pytest

from telemetry import metrics

pytestmark = pytest.mark.django_db(transaction=True)


def chat(caller, client, model):
    response = client.post(
        caller.openai_base_url + "/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {caller.key}"},
    )
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"]


def scrape(caller, **headers) -> str:
    response = httpx.get(caller.gateway_url + "/metrics", headers=headers)
    assert response.status_code == 200
    return response.text


def test_random_model_names_add_a_bounded_number_of_lines(caller, published):
    with httpx.Client(timeout=30) as client:
        # Known models first, so that the lines they add are not counted below.
        published.wait_for(chat(caller, client, "gpt-4o-mini"))
        published.wait_for(chat(caller, client, f"made-up-{uuid.uuid4().hex}"))
        scrape(caller)  # the scrape itself is counted: once, before the baseline
        before = scrape(caller)
        names = [f"made-up-{uuid.uuid4().hex}" for _ in range(150)]
        last = None
        for name in names:
            last = chat(caller, client, name)
        published.wait_for(last, timeout=30)
    after = scrape(caller)
    provider_lines = [line for line in after.splitlines() if line.startswith("provider_")]
    assert len(after.splitlines()) - len(before.splitlines()) <= 10
    assert not any(name in after for name in names)
    assert re.search(r'provider_requests_total\{.*model="other".*\} [1-9]', after)
    assert re.search(r'provider_tokens_total\{model="gpt-4o-mini",provider="openai",type="output"\} [1-9]', after)
    assert len(provider_lines) < 400


def test_models_of_the_catalog_and_of_admin_routes_keep_their_names(caller, published):
    from proxy.models import ModelRoute

    ModelRoute.objects.create(model_name="house-model", provider="openai", upstream_model="house-model-v7")
    metrics.forget_known_models()
    assert metrics.model_label("house-model") == "house-model"
    assert metrics.model_label("house-model-v7") == "house-model-v7"
    assert metrics.model_label("gpt-4o") == "gpt-4o"
    assert metrics.model_label("claude-3-5-haiku-latest") == "claude-3-5-haiku-latest"
    assert metrics.model_label("GPT-4O") == "gpt-4o"
    assert metrics.model_label(f"x-{uuid.uuid4().hex}") == "other"
    assert metrics.model_label("") == "other"
    with httpx.Client(timeout=30) as client:
        published.wait_for(chat(caller, client, "house-model"))
    assert re.search(r'provider_requests_total\{.*model="house-model".*\} [1-9]', scrape(caller))


def test_a_metrics_token_keeps_the_endpoint_private(caller, settings):
    settings.GATEWAY_METRICS_TOKEN = "scrape-secret"
    url = caller.gateway_url + "/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(url, headers={"authorization": "Basic c2NyYXBlLXNlY3JldA=="}).status_code == 401
    response = httpx.get(url, headers={"authorization": "Bearer scrape-secret"})
    assert response.status_code == 200
    assert "http_requests_total" in response.text


def test_without_a_token_the_endpoint_is_open(caller, settings):
    settings.GATEWAY_METRICS_TOKEN = ""
    assert httpx.get(caller.gateway_url + "/metrics").status_code == 200


def _sample(text: str, name: str, **labels) -> float:
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_request_and_response_sizes_count_every_byte_streams_included(caller, published):
    route = {"method": "POST", "path": "v1/chat/completions"}
    body = b'{"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
    before = scrape(caller)
    with httpx.Client(timeout=30) as client:
        plain = client.post(
            caller.openai_base_url + "/chat/completions",
            content=body.replace(b'"stream": true', b'"stream": false'),
            headers={"authorization": f"Bearer {caller.key}", "content-type": "application/json"},
        )
        streamed = client.post(
            caller.openai_base_url + "/chat/completions",
            content=body,
            headers={"authorization": f"Bearer {caller.key}", "content-type": "application/json"},
        )
    assert plain.status_code == streamed.status_code == 200
    published.wait_for(streamed.headers["x-request-id"])
    after = scrape(caller)

    def grew(name):
        return _sample(after, name, **route) - _sample(before, name, **route)

    assert grew("http_request_size_bytes_count") == grew("http_response_size_bytes_count") == 2
    assert grew("http_request_size_bytes_sum") == len(body) * 2 + 1  # "false" is a byte longer than "true"
    assert grew("http_response_size_bytes_sum") == len(plain.content) + len(streamed.content)
    stream_durations = _sample(after, "provider_stream_duration_seconds_count", provider="openai", model="gpt-4o-mini")
    assert stream_durations >= 1
