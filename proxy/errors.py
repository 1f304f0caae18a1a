"""Gateway errors, rendered in the calling route's own format (OpenAI's or Anthropic's)."""

from __future__ import annotations

import logging
from enum import StrEnum

import orjson
from django.http import HttpResponse

logger = logging.getLogger(__name__)


class ErrorFormat(StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


# kind -> (status, OpenAI error type, Anthropic error type)
_KINDS = {
    "invalid_request": (400, "invalid_request_error", "invalid_request_error"),
    "authentication": (401, "invalid_request_error", "authentication_error"),
    "permission": (403, "permission_error", "permission_error"),
    "not_found": (404, "invalid_request_error", "not_found_error"),
    "method_not_allowed": (405, "invalid_request_error", "invalid_request_error"),
    "request_timeout": (408, "invalid_request_error", "timeout_error"),
    "request_too_large": (413, "invalid_request_error", "request_too_large"),
    "rate_limited": (429, "requests", "rate_limit_error"),
    "insufficient_quota": (429, "insufficient_quota", "rate_limit_error"),
    "bad_gateway": (502, "api_error", "api_error"),
    "overloaded": (503, "server_error", "overloaded_error"),
    "gateway_timeout": (504, "timeout_error", "timeout_error"),
    "internal": (500, "api_error", "api_error"),
}


class GatewayError(Exception):
    """An error the gateway answers itself. `code` names the cause and is what the request log records."""

    # The request itself was refused before anything went to a provider (a budget, a rate limit):
    # no attempt was made, so the router neither counts nor retries it.
    before_provider = False

    def __init__(
        self, message: str, *, kind: str, code: str, param: str | None = None, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.code = code
        self.param = param
        # Sent with the error response (a 429's retry-after and rate-limit headers).
        self.headers = headers

    @property
    def status(self) -> int:
        return _KINDS[self.kind][0]

    def body(self, error_format: ErrorFormat) -> dict:
        _, openai_type, anthropic_type = _KINDS[self.kind]
        if error_format is ErrorFormat.ANTHROPIC:
            return {"type": "error", "error": {"type": anthropic_type, "message": self.message}}
        return {"error": {"message": self.message, "type": openai_type, "param": self.param, "code": self.code}}


def invalid_request(message: str, *, code: str, param: str | None = None) -> GatewayError:
    return GatewayError(message, kind="invalid_request", code=code, param=param)


def json_response(body: dict, *, status: int, headers: dict | None = None) -> HttpResponse:
    response = HttpResponse(orjson.dumps(body), status=status, content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def render_error(error: GatewayError, error_format: ErrorFormat) -> HttpResponse:
    return json_response(error.body(error_format), status=error.status, headers=error.headers)


def provider_exception_handler(exc, context):
    """The REST framework exception handler for proxy views: every failure in the route's own format."""
    view = context.get("view")
    error_format = getattr(view, "error_format", ErrorFormat.OPENAI)
    if not isinstance(exc, GatewayError):
        logger.exception("unexpected error while proxying", exc_info=exc)
        exc = GatewayError("The gateway failed to handle this request.", kind="internal", code="internal_error")
    response = render_error(exc, error_format)
    response.gateway_error = exc
    return response
