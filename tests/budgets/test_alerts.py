"""Alerts: crossing 50, 80 and 100% of a budget sends one signed webhook and one email per threshold and period."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import threading
import time
from decimal import Decimal

import orjson
import pytest

from budgets import services
from budgets.alerts import SIGNATURE_HEADER
from budgets.models import BudgetAlert, Scope
from tests.budgets.conftest import wait_settled
from tests.budgets.test_enforcement import chat

SECRET = "webhook-secret"


class Receiver:
    """A real local HTTP server that keeps what is posted to it."""

    def __init__(self):
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                received.append((dict(self.headers.items()), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/budget"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 10) -> list:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.received)

    def stop(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def alert_settings(settings, receiver, tmp_path):
    settings.GATEWAY_BUDGET_ALERT_WEBHOOK_URL = receiver.url
    settings.GATEWAY_BUDGET_ALERT_WEBHOOK_SECRET = SECRET
    settings.GATEWAY_BUDGET_ALERT_EMAILS = ["ops@example.com"]
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = str(tmp_path / "mail")
    return tmp_path / "mail"


def _emails(directory) -> list[str]:
    return [path.read_text() for path in sorted(directory.glob("*.log"))] if directory.exists() else []


@pytest.mark.django_db(transaction=True)
def test_each_threshold_sends_one_signed_webhook_and_one_email_per_period(caller, published, receiver, alert_settings):
    first = chat(caller)
    cost = Decimal(str(published.wait_for(first.headers["x-request-id"])["attributes"]["metadata"]["cost"]))
    # Soft, so that the gateway keeps serving past 100%: 40%, 80%, 120%, 160% of the budget.
    budget = services.budget_set(
        scope=Scope.PROJECT, org=caller.org, project=caller.project, usd=cost * Decimal("2.5"), hard=False
    )
    for expected in (0, 2, 3, 3):
        assert chat(caller).status_code == 200
        wait_settled()
        assert len(receiver.wait_for(expected, timeout=5 if expected else 0.3)) == expected
    time.sleep(0.3)
    received = receiver.received
    assert len(received) == 3
    payloads = []
    for headers, body in received:
        expected_signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers[SIGNATURE_HEADER] == expected_signature
        payloads.append(orjson.loads(body))
    assert sorted(p["threshold_percent"] for p in payloads) == [50, 80, 100]
    exceeded = next(p for p in payloads if p["threshold_percent"] == 100)
    assert exceeded["type"] == "budget.exceeded"
    assert exceeded["org_id"] == "acme" and exceeded["project_id"] == "search"
    assert exceeded["budget_usd"] == pytest.approx(float(budget.amount_usd))
    alerts = BudgetAlert.objects.filter(budget=budget).order_by("threshold")
    assert [a.threshold for a in alerts] == [50, 80, 100]
    assert all(a.webhook_status == "HTTP 204" for a in alerts)
    assert all(a.email_status == "sent to 1" for a in alerts)
    emails = "\n".join(_emails(alert_settings))
    assert emails.count("Subject: [Tollgate]") == 3
    assert "ops@example.com" in emails


@pytest.mark.django_db(transaction=True)
def test_an_alert_claimed_again_after_a_redis_flush_is_not_sent_twice(caller, published, receiver, alert_settings):
    from tests.budgets.conftest import clear_counters

    first = chat(caller)
    cost = Decimal(str(published.wait_for(first.headers["x-request-id"])["attributes"]["metadata"]["cost"]))
    services.budget_set(scope=Scope.ORG, org=caller.org, usd=cost * Decimal("1.5"), hard=False)
    chat(caller)
    wait_settled()
    assert len(receiver.wait_for(1)) == 1  # 66%: 50
    clear_counters()
    chat(caller)
    wait_settled()
    time.sleep(0.5)
    assert len(receiver.received) == 1
