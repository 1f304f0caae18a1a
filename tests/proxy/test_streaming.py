"""Streams under stress: client disconnects, and many concurrent streams kept apart."""

import asyncio
import json
import time

import httpx
import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def test_client_disconnect_closes_upstream_and_keeps_partial_chunks(caller, published, provider_server):
    body = {"model": "slowstream-150", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    headers = {"authorization": f"Bearer {caller.key}"}
    received = []
    with httpx.stream("POST", caller.openai_base_url + "/chat/completions", json=body, headers=headers) as response:
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if line.startswith("data: "):
                received.append(line)
            if len(received) == 3:
                break
    document = published.wait_for(request_id, timeout=10)
    metadata = document["attributes"]["metadata"]
    assert metadata["client_disconnected"] is True
    streamed = document["attributes"]["response"]["streamed_data"]
    assert 3 <= len(streamed) < 22
    upstream = [r for r in provider_server.requests if r.json and r.json.get("model") == "slowstream-150"][-1]
    deadline = time.monotonic() + 5
    while not upstream.disconnected:
        assert time.monotonic() < deadline, "the upstream stream was left open after the client went away"
        time.sleep(0.05)


async def _one_stream(client, url, key, index):
    body = {"model": "chunks-20", "stream": True, "messages": [{"role": "user", "content": f"stream {index}"}]}
    contents, ids = [], set()
    async with client.stream("POST", url, json=body, headers={"authorization": f"Bearer {key}"}) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            ids.add(chunk["id"])
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                contents.append(chunk["choices"][0]["delta"]["content"])
    return ids, contents


def test_concurrent_streams_are_neither_interleaved_nor_lost(caller, published):
    async def main():
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            url = caller.openai_base_url + "/chat/completions"
            return await asyncio.gather(*(_one_stream(client, url, caller.key, i) for i in range(64)))

    results = asyncio.run(main())
    expected = [f"tok{i} " for i in range(20)]
    for ids, contents in results:
        assert len(ids) == 1, "chunks of different completions were interleaved"
        assert contents == expected
    assert len({next(iter(ids)) for ids, _ in results}) == 64
    published.wait_for_count(64, timeout=10)
