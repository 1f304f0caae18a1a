"""A small in-process cache with expiry, for lookups on the hot path.

Each web process keeps its own copy; entries expire after a TTL, which bounds
how long a change in the database (a revoked key, a new route) goes unseen.
"""

import contextlib
import time

_ABSENT = object()


class TTLCache:
    def __init__(self, *, ttl: float, max_entries: int = 100_000):
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict = {}

    def get(self, key, default=None):
        entry = self._entries.get(key)
        if entry is None:
            return default
        expires_at, value = entry
        if expires_at < time.monotonic():
            self._entries.pop(key, None)
            return default
        return value

    def set(self, key, value, *, ttl: float | None = None) -> None:
        if key not in self._entries and len(self._entries) >= self.max_entries:
            # Drop the oldest entry (dicts keep insertion order): cheaper than LRU bookkeeping on every hit.
            with contextlib.suppress(StopIteration, RuntimeError):  # emptied or changed by another thread
                self._entries.pop(next(iter(self._entries)), None)
        self._entries[key] = (time.monotonic() + (self.ttl if ttl is None else ttl), value)

    def pop(self, key) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key) -> bool:
        return self.get(key, _ABSENT) is not _ABSENT

    def clear(self) -> None:
        self._entries.clear()
