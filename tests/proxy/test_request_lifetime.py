"""A served request is freed as it ends: nothing it made is left in a reference cycle.

Objects in a cycle wait for the garbage collector, which then walks every one of them. Each
request used to leave its whole graph so (the Django request and response, the record, the
provider exchange), which cost the gateway about a tenth of its CPU.
"""

import gc
import json
import time
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
# The gateway's own types, and those of its provider exchange.
WATCHED = {
    "django.core.handlers.asgi.ASGIRequest",
    "django.http.response.HttpResponse",
    "django.http.response.StreamingHttpResponse",
    "telemetry.record.RequestRecord",
    "httpx.Response",
    "aiohttp.client_reqrep.ClientResponse",
    "_asyncio.Task",
}


def chat_request(caller, body: bytes) -> urllib.request.Request:
    return urllib.request.Request(
        caller.gateway_url + "/v1/chat/completions",
        data=body,
        headers={"authorization": f"Bearer {caller.key}", "content-type": "application/json"},
    )


def call(caller, body: bytes) -> int:
    try:
        with urllib.request.urlopen(chat_request(caller, body), timeout=30) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        error.read()
        return error.code


BODIES = {
    "answer": json.dumps(HELLO).encode(),
    "stream": json.dumps(HELLO | {"stream": True}).encode(),
    "refusal": b"{not json",
}


@pytest.mark.parametrize(("kind", "status"), [("answer", 200), ("stream", 200), ("refusal", 400)])
def test_a_request_leaves_nothing_to_the_garbage_collector(caller, published, kind, status):
    assert_leaves_nothing(caller, published, kind, status)


@pytest.mark.parametrize("kind", ["answer", "stream"])
def test_a_request_within_a_budget_and_limits_leaves_nothing_to_the_garbage_collector(caller, published, kind):
    # Admission, its reply hook, the held reservation and its settlement are freed with the request too.
    from budgets import plans
    from budgets import services as budgets
    from budgets.models import Scope
    from proxy.models import GatewayKey

    key = GatewayKey.objects.get(org=caller.org)
    budgets.budget_set(scope=Scope.KEY, org=caller.org, key=key, usd=1000, period="month")
    budgets.rate_limit_set(scope=Scope.KEY, org=caller.org, key=key, rpm=100_000, tpm=10_000_000)
    plans.forget_plans()
    assert_leaves_nothing(caller, published, kind, 200, limited=True)


def assert_leaves_nothing(caller, published, kind: str, status: int, *, limited: bool = False) -> None:
    from budgets.settlement import settler

    call(caller, BODIES["answer"])  # first-request set-up (caches, connections) is not what is measured
    published.wait_for_count(1)
    gc.collect()
    gc.disable()
    try:
        statuses = [call(caller, BODIES[kind]) for _ in range(5)]
        published.wait_for_count(6)
        wait_settled(settler)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = {f"{type(item).__module__}.{type(item).__qualname__}" for item in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert statuses == [status] * 5
    assert left & WATCHED == set()
    if limited:
        assert caller_headers(caller)["x-ratelimit-limit-requests"] == "100000"  # the limits were applied


def wait_settled(settler, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while settler.pending and time.monotonic() < deadline:
        time.sleep(0.01)


def caller_headers(caller) -> dict[str, str]:
    with urllib.request.urlopen(chat_request(caller, BODIES["answer"]), timeout=30) as response:
        response.read()
        return {name.lower(): value for name, value in response.headers.items()}


def test_the_serving_process_collects_young_objects_less_often(live_gateway):
    # Set when the application starts (its lifespan), for the process that serves it.
    assert gc.get_threshold() == (10_000, 10, 10)
