"""Budgets and rate limits. The proxy calls `begin_admission` once per request, before the provider."""


def begin_admission(*, record, attribution, payload: dict, error_format, output_limit: int | None = None):
    """Start admitting the request against its limits and budgets (at most one Redis round trip); None if none apply.

    `output_limit`: the most tokens the model answers with, if known (a deployment's max_output_tokens).

    Returns an awaitable of the pending admission. The round trip runs while the proxy prepares the
    provider call: `await pending.admitted()` just before the first byte leaves returns the
    admission, whose `add_headers(response)` sets the rate-limit headers, or raises the 429.
    """
    begin, hold = _entry_points or _load_entry_points()
    return begin(
        record=record,
        attribution=attribution,
        payload=payload,
        error_format=error_format,
        output_limit=output_limit,
        on_counted=hold,
    )


async def aclose() -> None:
    """A graceful stop, once every request's record is logged: their spend is settled, and what this
    process's leases still hold goes back."""
    if _entry_points:  # else no request was ever admitted here
        from budgets.settlement import settler

        await settler.aclose()


# Imported on the first request, not with the app: the enforcement modules need Django set up.
_entry_points: tuple = ()


def _load_entry_points() -> tuple:
    global _entry_points
    from budgets import enforcement, settlement

    _entry_points = (enforcement.begin, settlement.hold)
    return _entry_points
