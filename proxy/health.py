"""Liveness and readiness probes."""

import asyncio

from django.conf import settings
from django.db import connection
from django.http import JsonResponse

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
