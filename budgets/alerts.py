"""Budget alerts: a webhook (JSON, HMAC-signed) and an email when spend crosses a threshold.

The settlement script claims each threshold once per budget counter and period, atomically
across processes; the BudgetAlert row (unique per budget, user, period and threshold) keeps a
claim made again after a Redis flush from sending twice. Delivery runs on a thread of its own.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal

import httpx
import orjson
from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, close_old_connections, transaction

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "x-tollgate-signature"
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="budget-alerts")
NANO = Decimal(1_000_000_000)


def claimed(claims: list, checks: list, args: list) -> None:
    """Alerts the settlement script claimed: [key index (1-based), threshold, spent nano-USD]."""
    for index, threshold, spent in claims or ():
        check = checks[int(index) - 1]
        _executor.submit(
            _deliver_safely,
            budget_id=check.rule.id,
            user_id=check.user_id,
            period_start=check.period_start,
            threshold=int(threshold),
            spent_nano=int(spent),
        )


def _deliver_safely(**kwargs) -> None:
    close_old_connections()
    try:
        budget_alert_send(**kwargs)
    except Exception:  # a thread's failure is logged, never lost
        logger.exception("budget alert could not be recorded or sent: %r", kwargs)


def signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def budget_alert_send(*, budget_id: int, user_id: str, period_start: datetime, threshold: int, spent_nano: int):
    """Record the alert and send its webhook and email, unless it was sent already this period."""
    from budgets.models import Budget, BudgetAlert

    budget = Budget.objects.select_related("org", "project", "key").filter(pk=budget_id).first()
    if budget is None:
        return None
    try:
        with transaction.atomic():
            alert = BudgetAlert.objects.create(
                budget=budget,
                user_id=user_id,
                period_start=period_start,
                threshold=threshold,
                spent_usd=Decimal(spent_nano) / NANO,
                limit_usd=budget.amount_usd,
            )
    except IntegrityError:
        return None  # claimed again after a Redis flush: sent already
    payload = alert_payload(alert)
    alert.webhook_status = _send_webhook(payload)
    alert.email_status = _send_email(alert, payload)
    alert.save(update_fields=["webhook_status", "email_status"])
    return alert


def alert_payload(alert) -> dict:
    budget = alert.budget
    return {
        "type": "budget.threshold_crossed" if alert.threshold < 100 else "budget.exceeded",
        "org_id": budget.org.slug,
        "project_id": budget.project.slug if budget.project_id else None,
        "gateway_key_prefix": budget.key.prefix if budget.key_id else None,
        "user_id": alert.user_id or None,
        "scope": budget.scope,
        "budget_id": budget.pk,
        "hard": budget.hard,
        "period": budget.period,
        "period_start": alert.period_start.isoformat(),
        "threshold_percent": alert.threshold,
        "spent_usd": float(alert.spent_usd),
        "budget_usd": float(alert.limit_usd),
        "sent_at": alert.created_at.isoformat(),
    }


def _send_webhook(payload: dict) -> str:
    url = settings.GATEWAY_BUDGET_ALERT_WEBHOOK_URL
    if not url:
        return "not configured"
    body = orjson.dumps(payload)
    headers = {"content-type": "application/json"}
    if settings.GATEWAY_BUDGET_ALERT_WEBHOOK_SECRET:
        headers[SIGNATURE_HEADER] = signature(body, settings.GATEWAY_BUDGET_ALERT_WEBHOOK_SECRET)
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=10.0)
    except httpx.HTTPError as exc:
        logger.warning("budget alert webhook failed: %s", exc)
        return f"failed: {type(exc).__name__}"[:200]
    return f"HTTP {response.status_code}"


def _recipients(alert) -> list[str]:
    from proxy.models import Membership

    owners = Membership.objects.filter(org=alert.budget.org, role=Membership.Role.OWNER).values_list(
        "user__email", flat=True
    )
    return sorted({*settings.GATEWAY_BUDGET_ALERT_EMAILS, *(email for email in owners if email)})


def _send_email(alert, payload: dict) -> str:
    recipients = _recipients(alert)
    if not recipients:
        return "no recipients"
    budget = alert.budget
    crossed = "exceeded" if alert.threshold >= 100 else f"reached {alert.threshold}% of"
    subject = f"[Tollgate] {budget.target} has {crossed} its {budget.period} budget"
    kind = "hard: requests are refused once it is spent" if budget.hard else "soft: alert only"
    text = (
        f"{budget.target} in {budget.org.slug} has spent ${payload['spent_usd']:.4f} of its "
        f"${payload['budget_usd']:.2f} {budget.period} budget ({kind}).\n\nPeriod from {payload['period_start']}."
    )
    try:
        send_mail(subject, text, None, recipients)
    except Exception as exc:  # noqa: BLE001 - SMTP errors come in many classes; the alert is recorded either way
        logger.warning("budget alert email failed: %s", exc)
        return f"failed: {type(exc).__name__}"[:200]
    return f"sent to {len(recipients)}"
