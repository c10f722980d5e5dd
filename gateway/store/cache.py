"""A small per-process cache for read-mostly settings (stores, provider settings, routing rules).

Issue 8's rule: what can refuse a payment *by its own state* (a device key, a card's status, a
consent, a limit) is never served from here; it is read in the payment's own transaction. What
only describes how to reach or route (a store's time zone, a provider's endpoint, a routing rule
set) may be up to ``MAX_AGE`` seconds old in another process; a change made through this process
drops its entries at once. The age runs on the monotonic clock, not the gateway's injectable one:
it bounds staleness in real time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["MAX_AGE", "SettingsCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MAX_AGE = 5.0


class SettingsCache(Generic[K, V]):
    def __init__(self, max_age: float = MAX_AGE, max_entries: int = 50_000) -> None:
        if not 0 <= max_age <= MAX_AGE:
            raise ValueError(f"settings may be cached for at most {MAX_AGE} s")
        self.max_age, self.max_entries = max_age, max_entries
        self._entries: dict[K, tuple[float, V]] = {}

    def fresh(self, key: K) -> tuple[bool, V | None]:
        """(True, value) when ``key`` was stored less than ``max_age`` ago."""
        found = self._entries.get(key)
        if found is None or time.monotonic() - found[0] >= self.max_age:
            return False, None
        return True, found[1]

    def stale(self, key: K) -> V | None:
        """The last value stored, however old: for revalidating against a version."""
        found = self._entries.get(key)
        return None if found is None else found[1]

    def put(self, key: K, value: V) -> V:
        if len(self._entries) >= self.max_entries and key not in self._entries:
            self._entries.clear()  # a bound, not an LRU: a process serving this many schools refills
        self._entries[key] = (time.monotonic(), value)
        return value

    def drop(self, where: Callable[[K], bool] | None = None) -> None:
        if where is None:
            self._entries.clear()
            return
        for key in [k for k in self._entries if where(k)]:
            del self._entries[key]
