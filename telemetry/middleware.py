"""HTTP metrics for every route, as async-only middleware (no thread hop)."""

import time

from asgiref.sync import markcoroutinefunction

from telemetry import metrics


def http_metrics_middleware(get_response):
    async def middleware(request):
        started = time.perf_counter()
        response = await get_response(request)
        match = request.resolver_match
        # The route pattern, not the raw path, keeps label cardinality bounded.
        route = match.route if match is not None else "unmatched"
        status = str(response.status_code)
        metrics.HTTP_REQUESTS.labels(request.method, route, status).inc()
        metrics.HTTP_REQUEST_DURATION.labels(request.method, route).observe(time.perf_counter() - started)
        return response

    markcoroutinefunction(middleware)
    return middleware


http_metrics_middleware.async_capable = True
http_metrics_middleware.sync_capable = False
