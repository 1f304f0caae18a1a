"""What one attempt's answer means for the router: done, worth another try, or a reason to fall back.

Read from the response the adapter built for the client (its status, body and passed-back headers),
so that classifying costs nothing on a success and needs no second reading of the provider's answer.
"""

from __future__ import annotations

import email.utils
import time
from enum import Enum

import orjson

from proxy.errors import GatewayError


class Outcome(Enum):
    SUCCESS = "success"
    # Connect errors, timeouts, 429, 5xx and 529: another try (here or elsewhere) may well succeed.
    RETRYABLE = "retryable"
    CONTEXT_WINDOW = "context_window"
    CONTENT_POLICY = "content_policy"
    # A 4xx the request itself caused: every deployment would answer the same.
    CLIENT_ERROR = "client_error"


# The gateway's own codes for an attempt that never got a usable answer from the provider.
RETRYABLE_GATEWAY_CODES = frozenset(
    {"upstream_unreachable", "upstream_timeout", "upstream_connection_error", "bad_upstream_response"}
)
RETRYABLE_STATUSES = frozenset({408, 409, 429})
CONTEXT_WINDOW_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
CONTENT_POLICY_CODES = frozenset({"content_policy_violation", "content_filter"})
# Anthropic says "prompt is too long: 210000 tokens > 200000 maximum"; OpenAI-compatible servers
# without OpenAI's code (vLLM) say "This model's maximum context length is 4096 tokens".
CONTEXT_WINDOW_PHRASES = ("prompt is too long", "maximum context length", "context window")


def classify_status(status: int, body: bytes) -> Outcome:
    if status < 400:
        return Outcome.SUCCESS
    if status >= 500 or status in RETRYABLE_STATUSES:
        return Outcome.RETRYABLE
    return _classify_refusal(body)


def classify_error(error: GatewayError) -> Outcome | None:
    """RETRYABLE for a failed exchange with the provider; None for an error the request caused."""
    return Outcome.RETRYABLE if error.code in RETRYABLE_GATEWAY_CODES else None


def _classify_refusal(body: bytes) -> Outcome:
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return Outcome.CLIENT_ERROR
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return Outcome.CLIENT_ERROR
    code = error.get("code")
    if code in CONTEXT_WINDOW_CODES:
        return Outcome.CONTEXT_WINDOW
    if code in CONTENT_POLICY_CODES:
        return Outcome.CONTENT_POLICY
    message = error.get("message")
    if isinstance(message, str) and any(phrase in message.lower() for phrase in CONTEXT_WINDOW_PHRASES):
        return Outcome.CONTEXT_WINDOW
    return Outcome.CLIENT_ERROR


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header's wait in seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)
