"""Refuse to run a deployment on development defaults.

A deployment (see GATEWAY_DEPLOYED in settings) must have its own SECRET_KEY and
GATEWAY_ENCRYPTION_KEY and a list of ALLOWED_HOSTS. The same problems are a system check
(so `manage.py migrate` and `check` fail) and a start-up check of the ASGI app and of
Celery workers, which run no system checks.
"""

from __future__ import annotations

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

_KNOWN_DEVELOPMENT_KEYS = {"tollgate-development-secret-key-change-me", "change-me-in-production"}
_MIN_SECRET_KEY_LENGTH = 32


def unsafe_defaults() -> list[str]:
    """What makes this configuration unfit for a deployment; empty when it is fine (or not deployed)."""
    if not settings.GATEWAY_DEPLOYED:
        return []
    problems = []
    secret_key = settings.SECRET_KEY or ""
    if (
        secret_key in _KNOWN_DEVELOPMENT_KEYS
        or secret_key.startswith("django-insecure")
        or "change-me" in secret_key
        or len(secret_key) < _MIN_SECRET_KEY_LENGTH
    ):
        problems.append(
            "SECRET_KEY is unset, a development default or shorter than "
            f"{_MIN_SECRET_KEY_LENGTH} characters; set it to a long random value, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`"
        )
    encryption_key = settings.GATEWAY_ENCRYPTION_KEY or ""
    if not encryption_key or "change-me" in encryption_key:
        problems.append(
            "GATEWAY_ENCRYPTION_KEY is unset; set it to a Fernet key of its own, e.g. "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`"
        )
    else:
        from cryptography.fernet import Fernet

        try:
            Fernet(encryption_key)
        except ValueError:
            problems.append("GATEWAY_ENCRYPTION_KEY is not a Fernet key (32 url-safe base64-encoded bytes)")
    hosts = list(settings.ALLOWED_HOSTS)
    if not hosts or "*" in hosts:
        problems.append("ALLOWED_HOSTS must list the gateway's host names (comma-separated), not be empty or '*'")
    return problems


def _message(problems: list[str]) -> str:
    return (
        "Refusing to start: this is a deployment (DATABASE_URL, REDIS_URL or ELASTICSEARCH_URL is set, "
        f"or HOST={settings.HOST} is not loopback), and it runs on unsafe defaults:\n- " + "\n- ".join(problems)
    )


def refuse_unsafe_defaults() -> None:
    """Raise ImproperlyConfigured, naming every problem, when a deployment runs on development defaults."""
    problems = unsafe_defaults()
    if problems:
        raise ImproperlyConfigured(_message(problems))


@checks.register(checks.Tags.security)
def check_deployment_defaults(app_configs=None, **kwargs):
    return [
        checks.Error(problem, hint="See the README's settings table.", id="tollgate.E001")
        for problem in unsafe_defaults()
    ]
