"""Fail open, counted here: while Redis is unreachable, this process enforces every limit and budget alone.

`admit` does what admit.lua does, against counters of this process, and answers in the script's
shape, so a request over a local limit is refused exactly as Redis would refuse it.

- rpm and tpm: a moving one-minute window of one-second buckets per counter key, holding only
  what this process admitted while Redis was away. Once Redis answers again it is the truth
  again and these windows are dropped (`redis_back`).
- Budgets: the use Redis last reported to this process for the counter (`last_use`, written by
  every admission Redis answers) plus what this process reserved and spent locally since,
  which Redis does not have (`_unsent`) until the settler reconciles it (`reconciled`).

Each web worker enforces alone during an outage: with N workers, up to N times a rate limit is
admitted, and up to N times what was left of a budget. That is the documented trade of failing
open; GATEWAY_LIMITS_FAIL_MODE=closed refuses instead. A budget counter this process never saw
Redis report (a new period, a worker started during the outage) counts from zero.
"""

from __future__ import annotations

_WINDOW_SECONDS = 60
# Bounds on what is kept per process: one entry per counter key, and keys multiply with end users.
_LAST_USES_KEPT = 100_000
_WINDOWS_KEPT = 10_000

# Budget counter key -> its use (spent plus reserved, nano-USD) in the last reply Redis gave this process.
last_use: dict[str, int] = {}
# Budget counter key -> nano-USD this process reserved or spent without Redis, not reconciled yet.
_unsent: dict[str, int] = {}


class _Window:
    """A moving minute of one-second buckets and their running total, like admit.lua's hash."""

    __slots__ = ("buckets", "total")

    def __init__(self):
        self.buckets: dict[int, int] = {}
        self.total = 0

    def use(self, now_s: int) -> int:
        """The total once the seconds that left the window are out."""
        oldest_kept = now_s - _WINDOW_SECONDS + 1
        for second in [second for second in self.buckets if second < oldest_kept]:
            self.total -= self.buckets.pop(second)
        return self.total

    def retry_ms(self, *, limit: int, amount: int, now_ms: int) -> int:
        """When enough of the oldest buckets will have left the window for `amount` to fit."""
        freed, at = 0, now_ms // 1000 + _WINDOW_SECONDS
        for second in sorted(self.buckets):
            freed += self.buckets[second]
            at = second + _WINDOW_SECONDS
            if self.total - freed + amount <= limit:
                break
        return max(at * 1000 - now_ms, 1)

    def add(self, second: int, amount: int) -> None:
        # A settlement gives back at most what the bucket holds, as settle.lua does.
        held = self.buckets.get(second)
        if held is None and amount <= 0:
            return
        change = max(amount, -(held or 0))
        self.buckets[second] = (held or 0) + change
        self.total += change


# Window counter key -> what this process admitted in it since Redis last answered.
windows: dict[str, _Window] = {}


def admit(checks, amounts: tuple[int, ...], now: float) -> list[int]:
    """Admit against this process's counters: admit.lua's result, and counted only if every check passes.

    [refused check index or 0, retry-after ms (rate windows), then per check its use and reset ms]
    """
    now_ms = int(now * 1000)
    now_s = now_ms // 1000
    if len(windows) > _WINDOWS_KEPT:
        _forget_idle_windows(now_s)
    refused, retry_ms, uses = 0, 0, []
    for index, (check, amount) in enumerate(zip(checks, amounts, strict=True)):
        rule = check.rule
        if rule.kind == "budget":
            use = last_use.get(check.key, 0) + _unsent.get(check.key, 0)
            if not refused and rule.hard and use + amount > rule.limit:
                refused = index + 1
        else:
            window = windows.get(check.key)
            use = window.use(now_s) if window is not None else 0
            if not refused and use + amount > rule.limit:
                refused = index + 1
                retry_ms = (window or _Window()).retry_ms(limit=rule.limit, amount=amount, now_ms=now_ms)
        uses.append(use)
    if refused:
        return [refused, retry_ms, *_with_resets(checks, uses)]
    for check, amount in zip(checks, amounts, strict=True):
        if check.rule.kind == "budget":
            _unsent[check.key] = _unsent.get(check.key, 0) + amount
        elif amount:
            windows.setdefault(check.key, _Window()).add(now_s, amount)
    admitted = [use + amount for use, amount in zip(uses, amounts, strict=True)]
    return [0, 0, *_with_resets(checks, admitted)]


def _with_resets(checks, uses: list[int]) -> list[int]:
    result = []
    for check, use in zip(checks, uses, strict=True):
        result += (use, 0 if check.rule.kind == "budget" else _WINDOW_SECONDS * 1000)
    return result


def settled(admission, *, cost: int, tokens: int) -> None:
    """A locally admitted request is logged: its reservations here become what it really used."""
    second = int(admission.now)
    for check, amount in zip(admission.checks, admission.amounts, strict=True):
        kind = check.rule.kind
        if kind == "budget":
            _set_unsent(check.key, _unsent.get(check.key, 0) + cost - amount)
        elif kind == "tpm" and tokens != amount and (window := windows.get(check.key)) is not None:
            window.add(second, tokens - amount)


def reconciled(spend: dict[str, int]) -> None:
    """Local spend reached Redis: it moves into the last use, which the next reply replaces with Redis's own."""
    for key, cost in spend.items():
        _set_unsent(key, _unsent.get(key, 0) - cost)
        last_use[key] = last_use.get(key, 0) + cost


def _set_unsent(key: str, amount: int) -> None:
    # Never below nothing: an admission served without any Redis configured was not counted here.
    if amount > 0:
        _unsent[key] = amount
    else:
        _unsent.pop(key, None)


def redis_back() -> None:
    """Redis answered: it counts the windows again, so what this process admitted alone is forgotten."""
    windows.clear()


def trim() -> None:
    """Bound the last uses kept; a forgotten counter is remembered again on its next admission.

    Called where new counters appear (a new admission template), never on the per-request path,
    and not during an outage, when nothing forgotten would come back.
    """
    if len(last_use) > _LAST_USES_KEPT:
        last_use.clear()


def _forget_idle_windows(now_s: int) -> None:
    for key in [key for key, window in windows.items() if not window.use(now_s)]:
        del windows[key]


def forget() -> None:
    """Everything counted here (tests start from a clean process)."""
    last_use.clear()
    _unsent.clear()
    windows.clear()
