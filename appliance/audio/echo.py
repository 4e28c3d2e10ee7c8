"""How loud the appliance's own reply may be in the user's microphone right now.

Clients without echo cancellation hear the reply back in their microphone, delayed by their
playback buffer and the room. The estimate is the loudest reply frame sent within the last
``window_s`` less the assumed echo return loss; the VAD keeps its bar above it while speaking."""

from __future__ import annotations

import collections
import math

import numpy as np

WINDOW_S = 0.6


class EchoEstimate:
    def __init__(self, return_loss_db: float, window_s: float = WINDOW_S) -> None:
        self.return_loss_db = return_loss_db
        self.window_s = window_s
        self._recent: collections.deque[tuple[float, float]] = collections.deque()

    def played(self, frame: bytes, at: float) -> None:
        samples = np.frombuffer(frame, dtype="<i2").astype(np.float32) / 32768.0
        power = float(np.mean(np.square(samples - samples.mean())))
        db = 10 * math.log10(power) if power > 1e-12 else -120.0
        # Only the running maximum matters: drop older entries that are not louder.
        while self._recent and self._recent[-1][1] <= db:
            self._recent.pop()
        self._recent.append((at, db))

    def level_db(self, now: float) -> float | None:
        while self._recent and self._recent[0][0] < now - self.window_s:
            self._recent.popleft()
        if not self._recent:
            return None
        return self._recent[0][1] - self.return_loss_db
