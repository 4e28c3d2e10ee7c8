"""What a benchmark's or a test's person keeps of a session, whatever the transport: the events and
the reply audio (mono int16 at 48 kHz), each with the loop time it arrived, and the questions asked
of them."""

from __future__ import annotations

import asyncio

import numpy as np

RATE = 48000  # reply audio
VOICED_RMS = 300  # a frame louder than this holds speech (Opus silence decodes to ~0)


def rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(a.astype(np.float64) ** 2))) if len(a) else 0.0


class Heard:
    def __init__(self) -> None:
        self.events: list[tuple[float, dict]] = []
        self.frames: list[tuple[float, np.ndarray]] = []

    def of_type(self, kind: str) -> list[dict]:
        return [e for _, e in self.events if e.get("type") == kind]

    async def wait_for(self, predicate, timeout: float):
        deadline = asyncio.get_running_loop().time() + timeout
        while not (result := predicate()):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out; events: {[e for _, e in self.events][-20:]}")
            await asyncio.sleep(0.02)
        return result

    def audio(self, since: float = 0.0) -> np.ndarray:
        chunks = [a for t, a in self.frames if t >= since]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)

    def voiced_s(self, since: float = 0.0) -> float:
        """Seconds of voiced reply audio that arrived after ``since``."""
        return sum(len(a) for t, a in self.frames if t >= since and rms(a) > VOICED_RMS) / RATE

    def voiced_times(self, since: float = 0.0) -> list[float]:
        return [t for t, a in self.frames if t >= since and rms(a) > VOICED_RMS]
