"""Liveness and readiness probes, and the Prometheus metrics."""

import asyncio
import hmac

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django_prometheus.exports import ExportToDjangoView

from proxy.db import run_in_db_thread


async def healthz(request):
    """The process is up and serving."""
    return JsonResponse({"status": "ok"})


def _database_answers() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        return cursor.fetchone() == (1,)


def _broker_answers() -> bool:
    from gateway_project.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    return True


async def readyz(request):
    """The database and the broker answer."""
    checks = {}
    probes = (("database", run_in_db_thread(_database_answers)), ("broker", asyncio.to_thread(_broker_answers)))
    for name, probe in probes:
        try:
            checks[name] = await asyncio.wait_for(probe, timeout=5)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready; the reason is reported
            checks[name] = False
            checks[f"{name}_error"] = type(exc).__name__
    ready = checks["database"] is True and checks["broker"] is True
    body = {
        "status": "ready" if ready else "unavailable",
        "checks": checks,
        "environment": settings.GATEWAY_ENVIRONMENT,
    }
    return JsonResponse(body, status=200 if ready else 503)


def _presents_token(request, token: str) -> bool:
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())


def metrics(request):
    """Prometheus metrics; with GATEWAY_METRICS_TOKEN set, only for `Authorization: Bearer <token>`."""
    token = settings.GATEWAY_METRICS_TOKEN
    if token and not _presents_token(request, token):
        response = HttpResponse("A bearer token is required for /metrics.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return ExportToDjangoView(request)
