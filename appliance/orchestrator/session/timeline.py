"""Maps positions in the client's input audio to the loop time they arrived at, so latencies can
be measured from "the instant the user's speech ended in the input audio" (as the latency metrics
are defined)."""

from __future__ import annotations

import bisect


class InputTimeline:
    def __init__(self, keep: int = 3000) -> None:
        self._ends_ms: list[float] = []  # stream position (ms) at the end of each received chunk
        self._arrivals: list[float] = []
        self._keep = keep
        self.position_ms = 0.0

    def add(self, duration_ms: float, arrived_at: float) -> None:
        self.position_ms += duration_ms
        self._ends_ms.append(self.position_ms)
        self._arrivals.append(arrived_at)
        if len(self._ends_ms) > 2 * self._keep:
            del self._ends_ms[: self._keep], self._arrivals[: self._keep]

    def arrival_of(self, t_ms: float) -> float | None:
        """Loop time at which the audio at stream position ``t_ms`` had arrived."""
        i = bisect.bisect_left(self._ends_ms, t_ms)
        if i >= len(self._ends_ms):
            return self._arrivals[-1] if self._arrivals else None
        return self._arrivals[i]
