"""Budgets and rate limits. The proxy calls `begin_admission` once per request, before the provider."""


async def begin_admission(*, record, attribution, payload: dict, error_format):
    """Start admitting the request against its limits and budgets (one Redis round trip); None if none apply.

    The round trip runs while the proxy prepares the provider call: `await pending.admitted()`
    just before the first byte leaves returns the admission, whose `add_headers(response)` sets
    the rate-limit headers, or raises the 429.
    """
    from budgets import enforcement, settlement

    return await enforcement.begin(
        record=record,
        attribution=attribution,
        payload=payload,
        error_format=error_format,
        on_counted=settlement.hold,
    )
