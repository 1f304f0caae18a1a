"""Encryption at rest for provider credentials."""

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@cache
def _fernet() -> Fernet:
    configured = settings.GATEWAY_ENCRYPTION_KEY
    if configured:
        try:
            return Fernet(configured)
        except ValueError as exc:
            raise ImproperlyConfigured(
                "GATEWAY_ENCRYPTION_KEY must be a Fernet key (32 url-safe base64 bytes)"
            ) from exc
    # A stable key derived from SECRET_KEY, so a deployment without its own key still never stores plaintext.
    digest = hashlib.sha256(b"tollgate-credentials:" + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ImproperlyConfigured("A stored provider credential cannot be decrypted with the configured key") from exc
