"""Whisper-style log-mel features in plain numpy (no torch, no transformers).

The recipe of Whisper's feature extractor: a 400-point periodic Hann window every 160 samples
(10 ms at 16 kHz) over the reflect-padded signal, the power spectrum projected on 80 Slaney mel
bands, log10 floored at 1e-10, the last frame dropped, clamped to 8 decades below the peak and
scaled by (x + 4) / 4. Optionally the waveform is first brought to zero mean and unit variance.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

SAMPLE_RATE = 16_000
N_FFT = 400
HOP = 160
N_MELS = 80


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = 3.0 * hz / 200.0
    log_part = 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) * (27.0 / np.log(6.4))
    return np.where(hz >= 1000.0, log_part, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = 200.0 * mel / 3.0
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, linear)


@functools.lru_cache(maxsize=4)
def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Triangular, area-normalised (Slaney) filters, shape (n_mels, n_fft // 2 + 1)."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    bins = np.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    slopes = edges[None, :] - bins[:, None]  # (bins, n_mels + 2)
    widths = np.diff(edges)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    filters *= (2.0 / (edges[2:] - edges[:-2]))[None, :]
    return filters.T


@functools.lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    return np.hanning(N_FFT + 1)[:-1]  # periodic


def log_mel(audio: np.ndarray, *, normalize: bool = True, silent_lead: int = 0) -> np.ndarray:
    """Features of 16 kHz mono ``audio``: float32, shape (80, len(audio) // 160).

    ``silent_lead``: the first that many samples are zeros (padding in front of a short turn); the
    frames wholly inside them share one spectrum, computed once.
    """
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected 1-D audio, got shape {x.shape}")
    if normalize:
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    pad = N_FFT // 2
    padded = np.pad(x.astype(np.float64), (pad, pad), mode="reflect")
    windows = sliding_window_view(padded, N_FFT)[::HOP]
    same = min(len(windows), max(0, (silent_lead - pad) // HOP + 1)) if silent_lead > N_FFT else 0
    power = np.abs(np.fft.rfft(windows[same:] * _hann(), axis=-1)) ** 2  # (frames, bins)
    if same:
        first = np.abs(np.fft.rfft(windows[0] * _hann())) ** 2
        power = np.concatenate([np.broadcast_to(first, (same, first.size)), power])
    mel = np.log10(np.maximum(1e-10, mel_filters() @ power.T))[:, :-1]
    mel = np.maximum(mel, mel.max() - 8.0)
    return ((mel + 4.0) / 4.0).astype(np.float32)
