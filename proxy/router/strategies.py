"""Choosing a deployment among a group's candidates.

- `weighted`: random, in proportion to each deployment's weight. Spreads load with no state.
- `least-busy`: the deployment with the fewest requests in flight from this process (ties broken
  by weight, then at random). The one to choose when deployments differ in speed or one slows
  down: a slow or stuck upstream holds its requests longer, so it gets fewer new ones at once,
  and the count reacts within one request, where a latency average trails behind and is skewed
  by how long each answer happens to be (an LLM's latency is mostly its output length).
- `latency`: the lowest moving average of time to the provider's first answer (headers; for a
  stream, its start), for groups of like deployments whose answers are alike.

Counts and averages are per process: reading them from Redis would cost a round trip per request,
and with requests spread evenly over the workers each worker's view is a fair sample of the whole.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from proxy.router.groups import Target

# Weight of the newest sample in the latency average.
_LATENCY_SMOOTHING = 0.3

_in_flight: dict[str, int] = {}
_latency_ms: dict[str, float] = {}


def started(target: Target) -> None:
    if target.key is not None:
        _in_flight[target.key] = _in_flight.get(target.key, 0) + 1


def ended(target: Target) -> None:
    if target.key is not None:
        _in_flight[target.key] = max(_in_flight.get(target.key, 1) - 1, 0)


def measured(target: Target, latency_ms: float) -> None:
    """A successful attempt's time to the provider's answer (a stream: to its start)."""
    key = target.key
    if key is not None:
        previous = _latency_ms.get(key)
        _latency_ms[key] = latency_ms if previous is None else previous + _LATENCY_SMOOTHING * (latency_ms - previous)


def in_flight(target: Target) -> int:
    return _in_flight.get(target.key, 0) if target.key is not None else 0


def choose(strategy: str, candidates: Sequence[Target]) -> Target:
    if len(candidates) == 1:
        return candidates[0]
    if strategy == "least-busy":
        fewest = min(in_flight(target) for target in candidates)
        return _weighted([target for target in candidates if in_flight(target) == fewest])
    if strategy == "latency":
        # Unmeasured deployments first, so that each one gets measured.
        unmeasured = [target for target in candidates if target.key not in _latency_ms]
        if unmeasured:
            return _weighted(unmeasured)
        return min(candidates, key=lambda target: _latency_ms[target.key])
    return _weighted(candidates)


def _weighted(candidates: Sequence[Target]) -> Target:
    if len(candidates) == 1:
        return candidates[0]
    total = sum(target.weight for target in candidates)
    point = random.random() * total
    for target in candidates:
        point -= target.weight
        if point < 0:
            return target
    return candidates[-1]


def forget_load() -> None:
    _in_flight.clear()
    _latency_ms.clear()
