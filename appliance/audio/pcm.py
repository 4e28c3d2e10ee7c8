"""Interleaved integer PCM of any common sample width and channel count, as mono float32."""

from __future__ import annotations

import numpy as np

WIDTHS = (1, 2, 3, 4)  # bytes a sample: 8-bit (unsigned, as WAV stores it), 16, 24 and 32-bit signed


def pcm_to_mono_float(data: bytes, width: int, channels: int) -> np.ndarray:
    """Little-endian PCM → float32 in [-1, 1), channels averaged; ValueError for what is not PCM."""
    if width not in WIDTHS:
        raise ValueError(f"sample width {width} is not one of {WIDTHS} bytes")
    if channels < 1:
        raise ValueError(f"channels must be at least 1, got {channels}")
    if len(data) % (width * channels):
        raise ValueError(
            f"{len(data)} bytes is not a whole number of {width}-byte × {channels}-channel frames"
        )
    if width == 1:
        x = (np.frombuffer(data, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        raw = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.int32)
        value = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        x = (np.where(value >= 1 << 23, value - (1 << 24), value)).astype(np.float32) / float(1 << 23)
    else:
        x = (np.frombuffer(data, "<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)
