"""The OpenAI routes, called with the official openai SDK through the live gateway."""

import json

import httpx
import openai
import pytest

from proxy.models import ModelRoute

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client(caller, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-deployment-openai")
    return openai.OpenAI(
        base_url=caller.openai_base_url,
        api_key=caller.key,
        default_headers={
            "x-organisation-id": "acme",
            "x-project-id": "search",
            "x-user-id": "end-user-7",
            "x-experiment-id": "exp-a",
            "x-thread-id": "thread-1",
        },
        max_retries=0,
    )


def last_upstream(provider_server, path):
    matching = [request for request in provider_server.requests if request.path == path]
    assert matching, f"the provider server received no request for {path}"
    return matching[-1]


def test_chat_completion_is_forwarded_and_recorded(client, caller, provider_server, published):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}]
    )
    completion = raw.parse()

    assert completion.choices[0].message.content
    assert completion.usage.completion_tokens == 20
    upstream = last_upstream(provider_server, "/v1/chat/completions")
    assert upstream.headers["authorization"] == "Bearer sk-deployment-openai"
    assert caller.key not in json.dumps(upstream.headers)

    document = published.wait_for(raw.headers["x-request-id"])
    attributes = document["attributes"]
    assert document["name"] == "ai_gateway_request_log"
    assert (attributes["org_id"], attributes["project_id"], attributes["user_id"]) == ("acme", "search", "end-user-7")
    assert (attributes["experiment_id"], attributes["thread_id"]) == ("exp-a", "thread-1")
    assert (attributes["provider"], attributes["model"]) == ("openai", "gpt-4o-mini")
    assert attributes["request"]["messages"] == [{"role": "user", "content": "Say hello"}]
    assert attributes["response"]["id"] == completion.id
    metadata = attributes["metadata"]
    assert metadata["tokens"] == {
        "input": completion.usage.prompt_tokens,
        "output": 20,
        "total": completion.usage.prompt_tokens + 20,
    }
    # gpt-4o-mini's list price: $0.15 in, $0.60 out per million tokens.
    expected_cost = (completion.usage.prompt_tokens * 0.15 + 20 * 0.60) / 1_000_000
    assert metadata["cost"] == pytest.approx(expected_cost)
    assert metadata["status"] == "success"
    assert metadata["status_code"] == 200
    assert metadata["provider_status_code"] == 200
    assert metadata["project_name"] == "Search"
    assert metadata["provider_request_id"].startswith("req_")
    assert metadata["provider_request_id"] != raw.headers["x-request-id"]
    assert metadata["latency"] >= metadata["provider_latency"] >= 0
    assert metadata["request_size"] == len(upstream.body)
    assert metadata["response_size"] == len(raw.http_response.content)
    assert "authorization" not in json.dumps(document).lower()
    assert caller.key not in json.dumps(document)


def test_unknown_fields_tools_n_and_json_mode_pass_through_untouched(client, provider_server):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
            },
        }
    ]
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=tools,
        n=2,
        extra_body={"vendor_knob": {"depth": 3}, "seed": 11},
    )
    upstream = last_upstream(provider_server, "/v1/chat/completions")
    assert upstream.json["vendor_knob"] == {"depth": 3}
    assert upstream.json["tools"] == tools
    assert upstream.json["n"] == 2
    assert len(completion.choices) == 2
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}

    json_mode = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "JSON please"}],
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(json_mode.choices[0].message.content), dict)
    assert last_upstream(provider_server, "/v1/chat/completions").json["response_format"] == {"type": "json_object"}


def test_a_provider_refusing_too_many_choices_answers_with_its_own_400(client, provider_server):
    # As OpenAI does: the fuzz tests send any n, and n = 2**62 once made the local provider build it.
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], n=2**62)
    assert "'n' must be at most 128" in refused.value.message
    assert last_upstream(provider_server, "/v1/chat/completions").json["n"] == 2**62


def test_body_bytes_reach_the_provider_unchanged(caller, provider_server):
    body = b'{"model": "gpt-4o-mini",  "messages": [{"role": "user", "content": "x"}], "temperature": 0.70}'
    response = httpx.post(
        caller.openai_base_url + "/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {caller.key}", "content-type": "application/json"},
    )
    assert response.status_code == 200
    assert last_upstream(provider_server, "/v1/chat/completions").body == body


def test_streamed_chat_hides_the_usage_chunk_it_asked_for(client, provider_server, published):
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Stream"}], stream=True
    ) as raw:
        chunks = list(raw.parse())
        request_id = raw.headers["x-request-id"]

    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "".join(f"tok{i} " for i in range(20))
    assert all(chunk.choices for chunk in chunks), "a client that did not ask for usage got the usage chunk"
    assert last_upstream(provider_server, "/v1/chat/completions").json["stream_options"] == {"include_usage": True}

    document = published.wait_for(request_id)
    metadata = document["attributes"]["metadata"]
    streamed = document["attributes"]["response"]["streamed_data"]
    assert metadata["stream"] is True
    assert metadata["tokens"]["output"] == 20
    assert metadata["ttfb"] is not None and metadata["ttfb"] <= metadata["latency"]
    assert metadata["streamed_data_truncated"] is False
    assert metadata["client_disconnected"] is False
    assert len(streamed) == len(chunks) + 1  # the usage chunk is kept for the log
    assert document["attributes"]["response"]["choices"][0]["delta"]["content"] == text


def test_streamed_chat_keeps_usage_for_a_client_that_asked(client):
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Stream"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 20


def test_stream_capture_is_capped_and_marked_truncated(client, published, settings):
    settings.GATEWAY_STREAM_CAPTURE_MAX_BYTES = 600
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Stream"}], stream=True
    ) as raw:
        chunks = list(raw.parse())
        request_id = raw.headers["x-request-id"]
    assert len(chunks) == 22  # the client still gets everything
    document = published.wait_for(request_id)
    assert document["attributes"]["metadata"]["streamed_data_truncated"] is True
    assert 0 < len(document["attributes"]["response"]["streamed_data"]) < 22


def test_completions_embeddings_and_models(client, published):
    completion = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once upon")
    assert completion.choices[0].text

    streamed = list(client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once", stream=True))
    assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices)

    embeddings = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert [item.index for item in embeddings.data] == [0, 1]
    assert len(embeddings.data[0].embedding) > 0

    # The list is the gateway's catalog (here a model route), not the provider's.
    ModelRoute.objects.create(model_name="gpt-4o-mini", provider="openai")
    models = client.models.list()
    assert [model.id for model in models.data] == ["gpt-4o-mini"]

    documents = published.wait_for_count(4)
    paths = sorted(document["attributes"]["metadata"]["path"] for document in documents)
    assert paths == ["/v1/completions", "/v1/completions", "/v1/embeddings", "/v1/models"]


def test_responses_api_plain_and_streamed(client, published):
    response = client.responses.create(model="gpt-4o-mini", input="Hi")
    assert response.output_text

    events = list(client.responses.create(model="gpt-4o-mini", input="Hi", stream=True))
    assert events[-1].type == "response.completed"

    documents = published.wait_for_count(2)
    streamed = next(d for d in documents if d["attributes"]["metadata"]["stream"])
    assert streamed["attributes"]["metadata"]["tokens"]["output"] == events[-1].response.usage.output_tokens
    assert streamed["attributes"]["response"]["status"] == "completed"


def test_traceparent_is_propagated_and_recorded(client, provider_server, published):
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "trace me"}],
        extra_headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
    )
    upstream = last_upstream(provider_server, "/v1/chat/completions")
    version, upstream_trace, span, flags = upstream.headers["traceparent"].split("-")
    assert (version, upstream_trace, flags) == ("00", trace_id, "01")
    assert span != "00f067aa0ba902b7"
    attributes = published.wait_for(raw.headers["x-request-id"])["attributes"]
    assert attributes["trace_id"] == trace_id
    assert attributes["span_id"] == span
