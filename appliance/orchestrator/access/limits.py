"""Per client address, at most N events in any 60 s window (sliding); memory stays bounded."""

from __future__ import annotations

import time
from collections import deque

WINDOW_S = 60.0
MAX_ADDRESSES = 4096  # beyond this the stalest addresses are forgotten


class RateLimit:
    def __init__(self, per_minute: int, clock=time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._events: dict[str, deque[float]] = {}

    def _window(self, address: str) -> deque[float]:
        now = self.clock()
        events = self._events.get(address)
        if events is None:
            if len(self._events) >= MAX_ADDRESSES:
                self._forget_stale(now)
            events = self._events[address] = deque()
        while events and now - events[0] >= WINDOW_S:
            events.popleft()
        return events

    def _forget_stale(self, now: float) -> None:
        for address, events in list(self._events.items()):
            if not events or now - events[-1] >= WINDOW_S:
                del self._events[address]
        while len(self._events) >= MAX_ADDRESSES:
            del self._events[next(iter(self._events))]

    def retry_after(self, address: str) -> float:
        """0 when another event is allowed now; else the seconds until it is."""
        events = self._window(address)
        if len(events) < self.per_minute:
            return 0.0
        return max(1.0, WINDOW_S - (self.clock() - events[0]))

    def record(self, address: str) -> None:
        self._window(address).append(self.clock())

    def take(self, address: str) -> float:
        """Record an event if allowed; the retry hint (> 0) if not."""
        wait = self.retry_after(address)
        if not wait:
            self.record(address)
        return wait
