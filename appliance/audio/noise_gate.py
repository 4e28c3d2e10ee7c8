"""The VAD's energy gate: an adaptive noise floor and a state-aware bar above it.

The bar is ``floor + margin_db + 20·log10(factor)`` dBFS, factor 1 while listening,
``speaking_factor`` while the assistant speaks (its own voice leaks back into the mic) and
``barged_in_factor`` just after a barge-in: the factors multiply the bar's amplitude.

The floor (dBFS) is ``max(P, M)``:

* ``P``: the ``percentile`` of the energies of the last ``window_s`` worth of frames that were *not*
  speech (so speech does not raise its own bar). Until ``warmup_s`` of such frames have been seen,
  ``P`` is ``max(initial_db, quietest frame so far)`` instead, so a stream that opens with noise above
  the default does not trigger at once, and one that opens with speech still gets a low bar.
* ``M``: the minimum energy of *all* frames of the last ``window_s`` ("minimum statistics"), once a
  whole window has been seen. Even the quietest 20 ms of the last few seconds cannot be quieter
  than the noise, so when ``M`` exceeds ``P`` the estimate is stale (the noise stepped up, and the
  detector has been stuck "in speech" since) and the floor follows ``M``.

Frames quieter than ``SILENCE_DB`` (digital silence: a muted track, zero padding) tell nothing
about the microphone's noise and are ignored.

Frame energy is ``10·log10(mean((x - mean x)²))`` of the float samples (full scale = ±1; a full-scale
sine reads −3 dBFS), clamped below at ``MIN_DB``.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Literal

import numpy as np

MIN_DB = -100.0
SILENCE_DB = -90.0
MODES = ("listening", "speaking", "barged_in")
Mode = Literal["listening", "speaking", "barged_in"]


def frame_energy_db(frames: np.ndarray) -> np.ndarray:
    """Energy in dBFS of each row of a (n_frames, frame_len) float array, DC removed."""
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != 2:
        raise ValueError(f"expected a 2-D (n_frames, frame_len) array, got shape {frames.shape}")
    if frames.shape[0] == 0:
        return np.zeros(0, dtype=np.float64)
    centred = frames - frames.mean(axis=1, keepdims=True)
    power = np.mean(np.square(centred, dtype=np.float64), axis=1)
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(power)
    return np.maximum(db, MIN_DB)


class NoiseFloor:
    """Running noise-floor estimate in dBFS, fed one frame energy at a time. Not thread-safe."""

    def __init__(
        self,
        frame_ms: int,
        window_s: float = 3.0,
        percentile: float = 20.0,
        initial_db: float = -60.0,
        warmup_s: float = 0.2,
    ) -> None:
        if frame_ms <= 0:
            raise ValueError(f"frame_ms must be positive, got {frame_ms}")
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must be within 0..100, got {percentile}")
        self.window_frames = max(1, math.ceil(window_s * 1000 / frame_ms))
        self.warmup_frames = min(self.window_frames, max(1, math.ceil(warmup_s * 1000 / frame_ms)))
        self.percentile = float(percentile)
        self.initial_db = float(initial_db)
        self._quiet = np.zeros(self.window_frames, dtype=np.float64)  # ring of non-speech energies
        self._all: deque[float] = deque(maxlen=self.window_frames)
        self.reset()

    def reset(self) -> None:
        self._quiet_count = 0  # frames ever pushed into the ring
        self._quiet_pos = 0
        self._all.clear()
        self._quietest_db = math.inf
        self._percentile_db = self.initial_db
        self._floor_db = self.initial_db

    @property
    def floor_db(self) -> float:
        return self._floor_db

    def update(self, energy_db: float, *, in_speech: bool) -> float:
        """Feed one frame's energy; ``in_speech`` frames do not feed the percentile."""
        energy_db = float(energy_db)
        if energy_db < SILENCE_DB:
            return self._floor_db
        self._all.append(energy_db)
        if self._quiet_count < self.warmup_frames:
            self._quietest_db = min(self._quietest_db, energy_db)
            self._percentile_db = max(self.initial_db, self._quietest_db)
        if not in_speech:
            self._quiet[self._quiet_pos] = energy_db
            self._quiet_pos = (self._quiet_pos + 1) % self.window_frames
            self._quiet_count += 1
            if self._quiet_count >= self.warmup_frames:
                n = min(self._quiet_count, self.window_frames)
                self._percentile_db = float(np.percentile(self._quiet[:n], self.percentile))
        floor = self._percentile_db
        if len(self._all) == self.window_frames:
            floor = max(floor, min(self._all))
        self._floor_db = floor
        return floor


class EnergyGate:
    """The noise floor plus the bar a frame must reach in the current mode. Not thread-safe."""

    def __init__(
        self,
        floor: NoiseFloor,
        margin_db: float = 9.0,
        speaking_factor: float = 2.0,
        barged_in_factor: float = 1.2,
    ) -> None:
        if speaking_factor <= 0 or barged_in_factor <= 0:
            raise ValueError("the state factors must be positive")
        self.floor = floor
        self.margin_db = float(margin_db)
        self._factor_db = {
            "listening": 0.0,
            "speaking": 20 * math.log10(speaking_factor),
            "barged_in": 20 * math.log10(barged_in_factor),
        }
        self.mode: Mode = "listening"
        # The expected level (dBFS) of the appliance's own reply in the microphone, or None.
        self.echo_db: float | None = None

    def set_mode(self, mode: str) -> None:
        """``"listening"``, ``"speaking"`` or ``"barged_in"`` (case-insensitive; a str enum works)."""
        m = str(getattr(mode, "value", mode)).lower()
        if m not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = m  # type: ignore[assignment]

    @property
    def bar_db(self) -> float:
        bar = self.floor.floor_db + self.margin_db
        if self.mode != "listening" and self.echo_db is not None:
            # While the appliance talks, its own voice in the mic is a second floor.
            bar = max(bar, self.echo_db)
        return bar + self._factor_db[self.mode]

    def judge(self, energy_db: float) -> tuple[bool, bool]:
        """(reaches the bar, loud): loud is the bar less half the margin, for placing the edges of
        speech already confirmed; not while speaking, where it would stretch a barge-in over echo."""
        bar = self.bar_db
        relief = 0.0 if self.mode == "speaking" else self.margin_db / 2
        return energy_db >= bar, energy_db >= bar - relief

    def reset(self) -> None:
        self.floor.reset()
        self.mode = "listening"
