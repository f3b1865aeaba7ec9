"""The pipeline's dedup stage: the same (rollout, kind, rule) is sent once per window."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from daemon.clock import Clock


class Deduplicator:
    """Admits a key once per `window` seconds; remembers at most `capacity` keys (oldest forgotten)."""

    def __init__(self, *, window: float, capacity: int, clock: Clock) -> None:
        if window < 0 or capacity < 1:
            raise ValueError("dedup window must be >= 0 and capacity >= 1")
        self._window = window
        self._capacity = capacity
        self._clock = clock
        self._seen: OrderedDict[Hashable, float] = OrderedDict()

    def admit(self, key: Hashable) -> bool:
        """True the first time `key` is seen in the window (and records it); False for a repeat."""
        now = self._clock.now()
        # Entries are in admission-time order, so expired ones are all at the front.
        while self._seen:
            oldest_key, seen_at = next(iter(self._seen.items()))
            if now - seen_at < self._window:
                break
            del self._seen[oldest_key]
        if key in self._seen:
            return False
        self._seen[key] = now
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._seen)
