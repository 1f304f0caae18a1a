"""HTTP metrics for every route, as async-only middleware (no thread hop)."""

import time
from functools import lru_cache

from asgiref.sync import markcoroutinefunction

from telemetry import metrics


# prometheus_client validates labels on every `.labels()` call; the children are looked up once instead.
# The label values are bounded (method, route pattern, status), so the caches stay small.
@lru_cache(maxsize=1024)
def _request_counter(method: str, route: str, status: int):
    return metrics.HTTP_REQUESTS.labels(method, route, str(status))


@lru_cache(maxsize=1024)
def _duration_histogram(method: str, route: str):
    return metrics.HTTP_REQUEST_DURATION.labels(method, route)


@lru_cache(maxsize=1024)
def _request_size_histogram(method: str, route: str):
    return metrics.HTTP_REQUEST_SIZE.labels(method, route)


@lru_cache(maxsize=1024)
def _response_size_histogram(method: str, route: str):
    return metrics.HTTP_RESPONSE_SIZE.labels(method, route)


def _request_size(request) -> int:
    unread = getattr(request, "unread_body", None)
    if unread is not None:  # refused before it was read whole: what it declared, or what arrived
        return unread.size
    body = getattr(request, "_body", None)  # read already (the proxy's handler reads every body)
    if body is not None:
        return len(body)
    declared = request.META.get("CONTENT_LENGTH")
    return int(declared) if declared and declared.isdigit() else 0


async def _counted(content, histogram):
    """The stream's parts, unchanged; its size is observed when it ends, however it ends."""
    size = 0
    try:
        async for part in content:
            size += len(part)
            yield part
    finally:
        histogram.observe(size)


def http_metrics_middleware(get_response):
    async def middleware(request):
        started = time.perf_counter()
        response = await get_response(request)
        match = request.resolver_match
        # The route pattern, not the raw path, keeps label cardinality bounded.
        route = match.route if match is not None else "unmatched"
        method = request.method
        _request_counter(method, route, response.status_code).inc()
        _duration_histogram(method, route).observe(time.perf_counter() - started)
        _request_size_histogram(method, route).observe(_request_size(request))
        if not response.streaming:
            _response_size_histogram(method, route).observe(len(response.content))
        elif response.is_async:
            response.streaming_content = _counted(response.streaming_content, _response_size_histogram(method, route))
        elif response.has_header("content-length"):  # a file, sent by a sync iterator
            _response_size_histogram(method, route).observe(int(response["content-length"]))
        return response

    markcoroutinefunction(middleware)
    return middleware


http_metrics_middleware.async_capable = True
http_metrics_middleware.sync_capable = False
