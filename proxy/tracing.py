"""W3C trace context: accept the caller's `traceparent`, start a span for the upstream call."""

import re
import secrets

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def trace_context(traceparent: str | None) -> tuple[str, str, str]:
    """(trace id, this request's span id, the traceparent to send upstream)."""
    match = _TRACEPARENT.match((traceparent or "").strip().lower())
    if match and match.group(2) != "0" * 32 and match.group(3) != "0" * 16:
        trace_id, flags = match.group(2), match.group(4)
    else:
        trace_id, flags = secrets.token_hex(16), "01"
    span_id = secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-{flags}"
