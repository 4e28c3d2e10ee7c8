"""Sample-rate conversion to the 48 kHz output rate, streaming or one-shot (soxr)."""

from __future__ import annotations

import numpy as np
import soxr

from appliance.audio._arrays import as_mono_float32, check_rate
from appliance.audio.format import OUTPUT_RATE

QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")


def _check_quality(quality: str) -> str:
    if quality not in QUALITIES:
        raise ValueError(f"quality must be one of {QUALITIES}, got {quality!r}")
    return quality


def resample(x: np.ndarray, in_rate: int, out_rate: int = OUTPUT_RATE, quality: str = "HQ") -> np.ndarray:
    """Resample a whole mono signal at once. Returns float32.

    With equal rates the (float32, contiguous) input itself is returned, not a copy.
    """
    in_rate = check_rate(in_rate, "in_rate")
    out_rate = check_rate(out_rate, "out_rate")
    quality = _check_quality(quality)
    x = as_mono_float32(x)
    if in_rate == out_rate or x.size == 0:
        return x
    return soxr.resample(x, in_rate, out_rate, quality=quality)


class StreamResampler:
    """Streaming mono float32 resampler; filter state carries across chunk boundaries.

    Feeding a signal in arbitrary chunks through :meth:`process` and finishing with
    :meth:`flush` yields the same samples as :func:`resample` on the whole signal.
    Output lags input by the filter delay, which :meth:`flush` drains.

    After :meth:`flush` (or :meth:`reset`) the instance is ready for a new,
    independent stream with the same rates. Not thread-safe.
    """

    def __init__(self, in_rate: int, out_rate: int = OUTPUT_RATE, quality: str = "HQ") -> None:
        self.in_rate = check_rate(in_rate, "in_rate")
        self.out_rate = check_rate(out_rate, "out_rate")
        self.quality = _check_quality(quality)
        self._stream: soxr.ResampleStream | None = None
        if self.in_rate != self.out_rate:
            self._stream = soxr.ResampleStream(
                self.in_rate, self.out_rate, 1, dtype="float32", quality=self.quality
            )

    @property
    def passthrough(self) -> bool:
        """True when rates are equal and chunks are returned unchanged (no copy)."""
        return self._stream is None

    def process(self, x: np.ndarray) -> np.ndarray:
        """Resample one chunk; returns the float32 output available so far."""
        x = as_mono_float32(x)
        if self._stream is None or x.size == 0:
            return x
        return self._stream.resample_chunk(x)

    def flush(self) -> np.ndarray:
        """Emit the buffered tail of the current stream and reset for a new one."""
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        tail = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._stream.clear()
        return tail

    def reset(self) -> None:
        """Discard buffered input (e.g. on barge-in) without emitting it."""
        if self._stream is not None:
            self._stream.clear()
