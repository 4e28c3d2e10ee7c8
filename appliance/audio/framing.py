"""Fixed-size PCM16 framing for the 48 kHz output stream, plus float<->PCM16 helpers."""

from __future__ import annotations

import numpy as np

from appliance.audio.format import FRAME_BYTES, FRAME_MS, FRAME_SAMPLES, OUTPUT_RATE

__all__ = [
    "FRAME_BYTES",
    "FRAME_MS",
    "FRAME_SAMPLES",
    "OUTPUT_RATE",
    "FrameAssembler",
    "float_to_pcm16",
    "pcm16_to_float",
]

_PCM16_SCALE = 32767.0
_PCM16_LE = np.dtype("<i2")


def float_to_pcm16(x: np.ndarray) -> np.ndarray:
    """Convert float audio in [-1, 1] to int16: clip, scale by 32767, round.

    NaN maps to 0. Returns a new little-endian int16 array.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"expected floating-point samples, got dtype {x.dtype}")
    y = np.clip(x, -1.0, 1.0)
    y *= _PCM16_SCALE
    np.rint(y, out=y)
    np.nan_to_num(y, copy=False, nan=0.0)
    return y.astype(_PCM16_LE)


def pcm16_to_float(b: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """Convert little-endian PCM16 bytes (or an int16 array) to float32 in [-1, 1].

    Divides by 32767, the exact inverse of :func:`float_to_pcm16`
    (so -32768 maps to slightly below -1.0).
    """
    if isinstance(b, np.ndarray):
        if b.dtype.kind != "i" or b.dtype.itemsize != 2:
            raise TypeError(f"expected an int16 array, got dtype {b.dtype}")
        samples = b
    else:
        if memoryview(b).nbytes % 2:
            raise ValueError("PCM16 byte string must have an even length")
        samples = np.frombuffer(b, dtype=_PCM16_LE)
    return samples.astype(np.float32) * np.float32(1.0 / _PCM16_SCALE)


class FrameAssembler:
    """Cuts an int16 sample stream of arbitrary chunk sizes into fixed-size byte frames.

    Samples that do not fill a whole frame are kept until the next ``push`` or
    ``flush``. Not thread-safe; use one instance per stream.
    """

    def __init__(self, frame_samples: int = FRAME_SAMPLES) -> None:
        if int(frame_samples) != frame_samples or frame_samples <= 0:
            raise ValueError(f"frame_samples must be a positive integer, got {frame_samples!r}")
        self._frame_samples = int(frame_samples)
        self._frame_bytes = 2 * self._frame_samples
        self._pending = np.zeros(0, dtype=_PCM16_LE)

    @property
    def frame_samples(self) -> int:
        return self._frame_samples

    @property
    def frame_bytes(self) -> int:
        return self._frame_bytes

    @property
    def pending_samples(self) -> int:
        """Samples held back because they do not yet fill a frame."""
        return int(self._pending.size)

    def push(self, pcm: np.ndarray) -> list[bytes]:
        """Append int16 samples; return every frame that is now complete."""
        pcm = np.asarray(pcm)
        if pcm.dtype.kind != "i" or pcm.dtype.itemsize != 2:
            raise TypeError(f"expected int16 samples, got dtype {pcm.dtype}")
        if pcm.ndim != 1:
            raise ValueError(f"expected a 1-D sample array, got shape {pcm.shape}")
        if pcm.size == 0:
            return []
        buf = np.concatenate((self._pending, pcm)) if self._pending.size else pcm
        n_whole = (buf.size // self._frame_samples) * self._frame_samples
        # Copy the remainder so we never keep a view into the caller's buffer.
        self._pending = buf[n_whole:].astype(_PCM16_LE, copy=True)
        if n_whole == 0:
            return []
        return self._split(buf[:n_whole].astype(_PCM16_LE, copy=False).tobytes())

    def flush(self) -> list[bytes]:
        """Return the pending partial frame zero-padded to full size ([] if none)."""
        if not self._pending.size:
            return []
        frame = np.zeros(self._frame_samples, dtype=_PCM16_LE)
        frame[: self._pending.size] = self._pending
        self._pending = np.zeros(0, dtype=_PCM16_LE)
        return [frame.tobytes()]

    def reset(self) -> None:
        """Drop pending samples without emitting them."""
        self._pending = np.zeros(0, dtype=_PCM16_LE)

    def _split(self, data: bytes) -> list[bytes]:
        fb = self._frame_bytes
        return [data[i : i + fb] for i in range(0, len(data), fb)]
