"""``mock-sine``: a short sine tone per word, for plumbing tests (never proof a feature works)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from appliance.discovery import ENGINE_CAPABILITIES
from appliance.tts.adapters.base import EngineAdapter


class MockSineAdapter(EngineAdapter):
    engine = "mock"
    capabilities = ENGINE_CAPABILITIES["mock"]
    word_s = 0.12
    gap_s = 0.03
    # Seconds each chunk takes to "synthesise"; tests raise it to simulate a slow or hung engine.
    delay_s = 0.0

    def load(self) -> None:
        self.loaded = True

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        rate = self.sample_rate
        t = np.arange(int(self.word_s * rate), dtype=np.float32) / rate
        gap = np.zeros(int(self.gap_s * rate), dtype=np.float32)
        for i, _word in enumerate(text.split()):
            if self.delay_s:
                time.sleep(self.delay_s)
            tone = 0.3 * np.sin(2 * np.pi * (220 + 40 * (i % 8)) * t).astype(np.float32)
            yield np.concatenate([tone, gap])
