"""Leases: room counted in Redis ahead of time, so this process admits the next requests alone.

A request that goes to Redis may ask admit.lua to count, beside itself, room for more requests
like it on every limit and budget it is checked against: as many more as this process has seen
of them in the current second so far, or in the second before if that brought more, up to
GATEWAY_LIMITS_LEASE_REQUESTS in all. The requests that follow in the same second are then
admitted from that room by this process, without a round trip: the proxy's busiest keys pay for
Redis once every few dozen requests instead of on every one, and a key with a request now and
then never holds a lease. The request that finds a lease down to a quarter of its requests asks
for the next one, so the rest of the traffic goes on being admitted meanwhile; the new lease
takes over what the old one still holds.

What keeps this exact:
- A lease is counted in Redis before any request uses it, so whatever is admitted from it was
  within every limit: leases never admit more than a limit.
- It serves only the second it was counted in: a request it admits sits in the same one-second
  bucket of a window as if Redis had counted it, and settles there (`budgets.settlement`).
- What a lease still holds when its second is over goes back at the next settlement, within
  GATEWAY_LIMITS_SETTLE_INTERVAL.
- Redis grants one only far from a limit (`admit.lua`): while the limit is at least
  LEASE_SHARE times the lease, and with the lease the counter stays within three quarters of it.
  The last quarter of every limit is admitted request by request, as without leases.
- Until a second's unused leases are returned, other processes may find that much less room, for
  at most a second: per worker and kind of request, no more than 1/LEASE_SHARE of the limit, and no
  more than the requests it served in that second or the one before (a lease grows with the traffic).
"""

from __future__ import annotations

# A lease is at most this share of every limit it counts on: small limits are admitted one by one.
LEASE_SHARE = 64

# Leases granted to this process and not yet returned.
outstanding: list[Lease] = []


class Lease:
    """Room for a template's requests (`budgets.enforcement.Template`) in one second: per check, what is left."""

    __slots__ = ("checks", "left", "reply", "requests", "second", "taken", "uses")

    def __init__(self, *, checks: tuple, second: int, left: list[int], uses: list[int], requests: int = 0):
        self.checks = checks  # the template's `budgets.enforcement.Check`s, in order
        self.second = second
        self.left = left
        # How many requests it was counted for, and how many it has admitted.
        self.requests = requests
        self.taken = 0
        # Per check, the use Redis reported with the lease counted: what is left of it is not real use.
        self.uses = uses
        self._recount()

    def _recount(self) -> None:
        # admit.lua's reply for the request last taken, as if Redis had admitted it alone (its headers'),
        # kept up to date by `take` rather than made for every request.
        reply = [0, 0]
        for use, left in zip(self.uses, self.left, strict=True):
            reply += (use - left, 60_000)
        self.reply = reply

    def take(self, amounts: tuple[int, ...], second: int) -> bool:
        """Admit a request of `amounts` from the lease, if it is this second's and has room on every check."""
        if second != self.second:
            return False
        left = self.left
        for index, amount in enumerate(amounts):
            if amount > left[index]:
                return False
        reply = self.reply
        for index, amount in enumerate(amounts):
            left[index] -= amount
            reply[2 + 2 * index] += amount
        self.taken += 1
        return True

    def running_low(self) -> bool:
        """A quarter or less of its requests left: time to ask for the next lease, before this one runs out."""
        return (self.requests - self.taken) * 4 <= self.requests

    def absorb(self, older: Lease) -> None:
        """Take over what an older lease of the same second still holds (it returns nothing then)."""
        if older.second == self.second:
            self.left = [mine + theirs for mine, theirs in zip(self.left, older.left, strict=True)]
            self.requests += max(older.requests - older.taken, 0)
            older.left = [0] * len(older.left)
            self._recount()

    def give_back(self) -> list[int]:
        """What is left, per check, for the settlement to return; the lease holds nothing after."""
        left, self.left = self.left, [0] * len(self.left)
        return left


def granted(lease: Lease) -> None:
    outstanding.append(lease)


def expired(now_s: float) -> list[Lease]:
    """The leases whose second is over, taken off the outstanding ones; what they hold is the caller's to return."""
    done = [lease for lease in outstanding if lease.second < now_s]
    if done:
        outstanding[:] = [lease for lease in outstanding if lease.second >= now_s]
    return done


def forget() -> None:
    outstanding.clear()
