"""Input coercion shared by the audio modules (private)."""

from __future__ import annotations

import numbers

import numpy as np

MIN_RATE = 8_000
MAX_RATE = 192_000


def as_mono_float32(x: np.ndarray, name: str = "x") -> np.ndarray:
    """Return ``x`` as a contiguous 1-D float32 array, copying only if needed.

    Accepts shape ``(n,)`` or ``(n, 1)``. Integer input is rejected rather than
    converted, because a silently mis-scaled int16 buffer would play at +90 dB.
    """
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {arr.dtype}")
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be mono: shape (n,) or (n, 1), got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def finite_or_zero(x: np.ndarray) -> np.ndarray:
    """Replace NaN/inf by 0 (copying only when there is something to replace)."""
    if np.isfinite(x).all():
        return x
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def check_rate(rate: object, name: str = "sample_rate") -> int:
    """Validate a sample rate (an integer in MIN_RATE..MAX_RATE Hz) and return it as int."""
    if isinstance(rate, bool) or not isinstance(rate, numbers.Integral):
        raise ValueError(f"{name} must be an integer sample rate in Hz, got {rate!r}")  # noqa: TRY004 -- callers report every bad rate as a value error
    if not MIN_RATE <= int(rate) <= MAX_RATE:
        raise ValueError(f"{name}={rate} Hz is outside the supported range {MIN_RATE}..{MAX_RATE} Hz")
    return int(rate)
