"""Dashboard fixtures: an org with an owner, a member and an outsider, staff, and request logs.

Logs are written as the Postgres exporter writes them: rows into the raw table, then the same
rows handed to `dashboards.rollups.apply_new_rows` through a `new_request_logs` table.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.utils import timezone

from dashboards import rollups
from proxy.models import Membership, Organisation, Project
from telemetry import schema
from telemetry.models import RequestLog

PASSWORD = "correct horse battery staple"


@dataclass
class Tenancy:
    org: Organisation
    other_org: Organisation
    project: Project
    other_project: Project
    redacted_project: Project
    foreign_project: Project
    owner: object
    member: object
    outsider: object
    staff: object


def _user(username, **extra):
    return get_user_model().objects.create_user(username=username, password=PASSWORD, **extra)


@pytest.fixture
def tenancy(db) -> Tenancy:
    org = Organisation.objects.create(slug="acme", name="Acme")
    other_org = Organisation.objects.create(slug="globex", name="Globex")
    project = Project.objects.create(org=org, slug="search", name="Search answers")
    other_project = Project.objects.create(org=org, slug="support-bot", name="Support bot")
    redacted_project = Project.objects.create(
        org=org, slug="extraction", name="Extraction", content_logging=Project.ContentLogging.METADATA
    )
    foreign_project = Project.objects.create(org=other_org, slug="search", name="Globex search")
    owner, member, outsider = _user("olivia"), _user("mike"), _user("oscar")
    staff = _user("stella", is_staff=True)
    Membership.objects.create(org=org, user=owner, role=Membership.Role.OWNER)
    Membership.objects.create(org=org, user=member, role=Membership.Role.MEMBER)
    Membership.objects.create(org=other_org, user=outsider, role=Membership.Role.OWNER)
    return Tenancy(
        org=org,
        other_org=other_org,
        project=project,
        other_project=other_project,
        redacted_project=redacted_project,
        foreign_project=foreign_project,
        owner=owner,
        member=member,
        outsider=outsider,
        staff=staff,
    )


@pytest.fixture
def client_for():
    def make(user) -> Client:
        client = Client()
        if user is not None:
            client.force_login(user)
        return client

    return make


_serial = itertools.count(1)


def make_log(
    *,
    org: str,
    project: str | None = "search",
    user: str | None = "alice@example.com",
    model: str = "gpt-4o-mini",
    provider: str = "openai",
    status: str = "success",
    error_type: str | None = None,
    status_code: int | None = None,
    input_tokens: int = 100,
    output_tokens: int = 50,
    cost: Decimal | None = Decimal("0.0001500000"),
    latency: int | None = 800,
    ttfb: int | None = 300,
    stream: bool = False,
    experiment: str | None = None,
    at: datetime | None = None,
    question: str = "What is the refund window?",
    answer: str = "Thirty days from purchase.",
    redacted: bool = False,
    thread: str | None = None,
    deployment: str | None = None,
) -> RequestLog:
    """A RequestLog row with an `ai_gateway_request_log` document shaped like the gateway's."""
    at = at or timezone.now() - timedelta(hours=1)
    record_id = uuid.uuid4().hex
    status_code = status_code or (200 if status == "success" else 500)
    request = {"model": model, "stream": stream, "messages": [{"role": "user", "content": question}]}
    if status == "success":
        response = {
            "id": f"chatcmpl-{next(_serial)}",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens},
        }
    else:
        response = {"error": {"type": error_type, "message": f"{error_type} happened"}}
    if stream:
        chunks = [{"choices": [{"index": 0, "delta": {"content": piece}}]} for piece in answer.split(" ")]
        response["streamed_data"] = chunks
    if redacted:
        request = {"model": model, "stream": stream, "messages": "[redacted]"}
        response = {"id": "chatcmpl-x", "model": model, "content": "[redacted]"}
        if stream:
            response["streamed_data"] = []
    document = {
        "timestamp": at.isoformat(),
        "name": "ai_gateway_request_log",
        "attributes": {
            "id": record_id,
            "org_id": org,
            "project_id": project,
            "user_id": user,
            "experiment_id": experiment,
            "provider": provider,
            "model": model,
            "request": request,
            "response": response,
            "metadata": {
                "latency": latency,
                "ttfb": ttfb,
                "tokens": {"input": input_tokens, "output": output_tokens, "total": input_tokens + output_tokens},
                "cost": float(cost) if cost is not None else None,
                "status": status,
                "status_code": status_code,
                "error_type": error_type,
                "stream": stream,
                "content_redacted": redacted,
                "path": "/v1/chat/completions",
                "method": "POST",
            },
        },
    }
    if thread is not None:
        document["attributes"]["thread_id"] = thread
    if deployment is not None:
        document["attributes"]["metadata"]["deployment"] = deployment
    # The row's columns come from the document, as the exporter derives them.
    return RequestLog(**schema.row_values(document))


def export_logs(logs: list[RequestLog]) -> list[RequestLog]:
    """Insert `logs` and apply them to the rollups, the way the Postgres exporter does."""
    RequestLog.objects.bulk_create(logs)
    table = RequestLog._meta.db_table
    ids = [log.pk for log in logs]
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE new_request_logs AS SELECT * FROM {table} WHERE 1 = 0")
        cursor.execute(
            f"INSERT INTO new_request_logs SELECT * FROM {table} WHERE id IN ({', '.join(['%s'] * len(ids))})", ids
        )
        rollups.apply_new_rows(cursor, "new_request_logs")
        cursor.execute("DROP TABLE new_request_logs")
    return logs


@pytest.fixture
def traffic(tenancy) -> list[RequestLog]:
    """A mixed day of traffic for acme, and some for globex that acme's people must never see."""
    now = timezone.now()
    logs = []
    for index in range(24):
        logs.append(
            make_log(
                org="acme",
                project="search" if index % 3 else "support-bot",
                user=["alice@example.com", "bob@example.com", "carol/with-slash"][index % 3],
                model="gpt-4o-mini" if index % 2 else "claude-3-5-haiku",
                provider="openai" if index % 2 else "anthropic",
                input_tokens=100 + index,
                output_tokens=40 + 2 * index,
                cost=Decimal("0.0001000000") * (index + 1),
                latency=200 + 150 * index,
                ttfb=80 + 10 * index,
                stream=index % 4 == 0,
                experiment="prompt-v2" if index % 5 == 0 else None,
                at=now - timedelta(hours=index % 20 + 1, minutes=index),
            )
        )
    for index, error_type in enumerate(["rate_limit_error", "rate_limit_error", "server_error"]):
        logs.append(
            make_log(
                org="acme",
                status="error",
                error_type=error_type,
                status_code=429 if error_type == "rate_limit_error" else 500,
                output_tokens=0,
                cost=None,
                latency=40 + index,
                ttfb=40 + index,
                at=now - timedelta(hours=3 + index),
            )
        )
    logs.append(
        make_log(
            org="acme",
            project="extraction",
            user="dana@example.com",
            redacted=True,
            stream=True,
            question="secret prompt",
            answer="secret answer",
            at=now - timedelta(hours=2),
        )
    )
    for index in range(5):
        logs.append(
            make_log(
                org="globex",
                user="eve@globex.example",
                question="globex confidential",
                cost=Decimal("1.0000000000"),
                at=now - timedelta(hours=index + 1),
            )
        )
    return export_logs(logs)
