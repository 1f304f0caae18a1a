"""Fixed log-scale latency histograms, so that percentiles can be summed across rollup rows.

A percentile cannot be averaged, but bucket counts can be added: every rollup row keeps
the count of requests per bucket, and p50/p95/p99 are read from the summed buckets.
Bucket edges grow by a factor of sqrt(2), from 1.4 ms to 12 minutes, which keeps the
error of an interpolated percentile within a few percent over the whole range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

BUCKET_COUNT = 40
# Upper edges (ms) of buckets 0..38; bucket 39 holds everything above the last edge.
EDGES: tuple[float, ...] = tuple(2 ** ((index + 1) / 2) for index in range(BUCKET_COUNT - 1))


def column_names(prefix: str) -> list[str]:
    return [f"{prefix}_{index:02d}" for index in range(BUCKET_COUNT)]


LATENCY_COLUMNS = column_names("lat")
TTFB_COLUMNS = column_names("ttfb")


def bucket_of(value_ms: float) -> int:
    """The bucket a duration falls into; the same rule as `bucket_sql`."""
    for index, edge in enumerate(EDGES):
        if value_ms < edge:
            return index
    return BUCKET_COUNT - 1


def bucket_sql(column: str, *, vendor: str) -> str:
    """A SQL expression giving the bucket of `column`, NULL when the column is NULL."""
    if vendor == "postgresql":
        # width_bucket counts the edges at or below the value: a binary search in C.
        edges = ",".join(repr(edge) for edge in EDGES)
        return f"width_bucket({column}::float8, ARRAY[{edges}]::float8[])"
    whens = " ".join(f"WHEN {column} < {edge!r} THEN {index}" for index, edge in enumerate(EDGES))
    return f"(CASE WHEN {column} IS NULL THEN NULL {whens} ELSE {BUCKET_COUNT - 1} END)"


def percentile(counts: Sequence[int], quantile: float) -> float | None:
    """The `quantile` (0..1) of a histogram, interpolated geometrically inside its bucket."""
    total = sum(counts)
    if not total:
        return None
    rank = quantile * total
    seen = 0
    for index, count in enumerate(counts):
        if not count or seen + count < rank:
            seen += count
            continue
        if index == BUCKET_COUNT - 1:
            return EDGES[-1]
        upper = EDGES[index]
        lower = EDGES[index - 1] if index else 0.0
        fraction = (rank - seen) / count
        if lower == 0.0:
            return upper * fraction
        return lower * math.exp(math.log(upper / lower) * fraction)
    return EDGES[-1]
