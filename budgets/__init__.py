"""Budgets and rate limits. The proxy calls `admit_request` once per request, before the provider."""


async def admit_request(*, record, attribution, payload: dict, error_format):
    """Admit the request against its limits and budgets (one Redis round trip) or raise a 429.

    Returns the admission, whose `add_headers(response)` sets the rate-limit headers, or None.
    """
    from budgets import enforcement, settlement

    admission = await enforcement.admit(
        record=record, attribution=attribution, payload=payload, error_format=error_format
    )
    if admission is not None:
        settlement.hold(record, admission)
    return admission
