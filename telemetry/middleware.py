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


def http_metrics_middleware(get_response):
    async def middleware(request):
        started = time.perf_counter()
        response = await get_response(request)
        match = request.resolver_match
        # The route pattern, not the raw path, keeps label cardinality bounded.
        route = match.route if match is not None else "unmatched"
        _request_counter(request.method, route, response.status_code).inc()
        _duration_histogram(request.method, route).observe(time.perf_counter() - started)
        return response

    markcoroutinefunction(middleware)
    return middleware


http_metrics_middleware.async_capable = True
http_metrics_middleware.sync_capable = False
