"""Refusals and rate-limit headers in the calling route's format (OpenAI's or Anthropic's)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from functools import lru_cache

from proxy.errors import ErrorFormat, GatewayError

_WHAT = {"rpm": "requests per minute", "tpm": "tokens per minute", "budget": "budget"}


class LimitRefused(GatewayError):
    """A 429 from a limit or budget; `limit` names it ("project_budget", "key_rpm") in the record."""

    before_provider = True

    def __init__(self, message: str, *, limit: str, kind: str, retry_after_ms: int, headers: dict[str, str]):
        budget = kind == "budget"
        super().__init__(
            message,
            kind="insufficient_quota" if budget else "rate_limited",
            code="insufficient_quota" if budget else "rate_limit_exceeded",
            headers={**headers, "retry-after": str(max(1, math.ceil(retry_after_ms / 1000)))},
        )
        self.limit = limit
        self.limit_kind = kind

    def body(self, error_format: ErrorFormat) -> dict:
        body = super().body(error_format)
        if error_format is ErrorFormat.OPENAI and self.limit_kind == "tpm":
            body["error"]["type"] = "tokens"  # OpenAI's type for a tokens-per-minute refusal
        return body


def refusal(*, rule_name: str, kind: str, limit: int, retry_after_ms: int, headers: dict[str, str]) -> LimitRefused:
    scope = rule_name.rsplit("_", 1)[0].replace("_", " ")
    if kind == "budget":
        message = (
            f"This request could exceed the {scope} budget of ${limit / 1e9:.2f}. "
            "It resets with its period; ask an admin to raise it."
        )
    else:
        message = f"Rate limit reached: the {scope} limit of {limit} {_WHAT[kind]}. Retry after the retry-after header."
    return LimitRefused(message, limit=rule_name, kind=kind, retry_after_ms=retry_after_ms, headers=headers)


@lru_cache(maxsize=1024)  # a window's reset is mostly the same minute: worth formatting once
def openai_duration(ms: int) -> str:
    """OpenAI's reset format: "1s", "6m0s", "20ms"."""
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    minutes, seconds = divmod(seconds, 60)
    text = f"{seconds:.3g}s"
    return f"{int(minutes)}m{text}" if minutes else text


# Per window kind, the names of its limit, remaining and reset headers in each format.
_HEADER_NAMES = {
    ErrorFormat.OPENAI: {
        kind: tuple(f"x-ratelimit-{what}-{unit}" for what in ("limit", "remaining", "reset"))
        for kind, unit in (("rpm", "requests"), ("tpm", "tokens"))
    },
    ErrorFormat.ANTHROPIC: {
        kind: tuple(f"anthropic-ratelimit-{unit}-{what}" for what in ("limit", "remaining", "reset"))
        for kind, unit in (("rpm", "requests"), ("tpm", "tokens"))
    },
}


def rate_headers(windows: dict[str, tuple[int, int, int]], error_format: ErrorFormat, now: float) -> dict[str, str]:
    """Headers for the tightest requests and tokens windows: kind -> (limit, remaining, reset ms)."""
    headers = {}
    names = _HEADER_NAMES[error_format]
    for kind, (limit, remaining, reset_ms) in windows.items():
        limit_name, remaining_name, reset_name = names[kind]
        headers[limit_name] = str(limit)
        headers[remaining_name] = str(max(remaining, 0))
        if error_format is ErrorFormat.ANTHROPIC:
            reset = datetime.fromtimestamp(now + reset_ms / 1000, tz=UTC).isoformat(timespec="seconds")
            headers[reset_name] = reset.replace("+00:00", "Z")
        else:
            headers[reset_name] = openai_duration(reset_ms)
    return headers


# OpenAI's names as ASGI bytes, for the responses of admitted requests (`Template.openai_headers`).
OPENAI_ENCODED_NAMES = {
    kind: tuple(name.encode() for name in names) for kind, names in _HEADER_NAMES[ErrorFormat.OPENAI].items()
}


@lru_cache(maxsize=1024)  # a one-minute window's reset is nearly always the same
def encoded_duration(ms: int) -> bytes:
    return openai_duration(ms).encode()
