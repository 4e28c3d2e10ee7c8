"""Streaming loudness normalisation (ITU-R BS.1770, ``bs1770``) with a peak limiter.

Each ``process`` call is expected to carry roughly one sentence. The loudness gain
is re-targeted per chunk and glides there exponentially; a look-ahead limiter then
guarantees the output never exceeds the ceiling.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from appliance.audio import bs1770
from appliance.audio._arrays import as_mono_float32, check_rate, finite_or_zero

# BS.1770 gating block length: the shortest signal it can measure.
MIN_MEASURE_SECONDS = 0.4
# A sentence that arrives in parts is measured over its most recent this-many seconds.
MAX_SPAN_SECONDS = 4.0
SILENCE_LUFS = -70.0
_NEGLIGIBLE_DB = 1e-4


def integrated_loudness(x: np.ndarray, sample_rate: int) -> float:
    """BS.1770 integrated loudness in LUFS (-inf for silence). Needs >= 0.4 s of audio."""
    return bs1770.integrated_loudness(x, sample_rate)


def _rms_loudness(x: np.ndarray) -> float:
    """Un-weighted, un-gated loudness estimate for chunks too short for BS.1770."""
    mean_square = float(np.mean(np.square(x, dtype=np.float64)))
    return -0.691 + 10.0 * math.log10(mean_square) if mean_square > 0.0 else -math.inf


class PeakLimiter:
    """Look-ahead brick-wall limiter: ``|output| <= 10**(ceiling_dbfs/20)`` always.

    The gain reaches its full reduction by the time a peak arrives (it ramps down
    linearly over the look-ahead window before it) and recovers with an
    exponential release whose state carries across chunks. Look-ahead only sees
    within the current chunk, so a peak in the very first samples of a chunk is
    met with an immediate gain step; TTS chunks normally start near silence.
    """

    def __init__(
        self,
        sample_rate: int,
        ceiling_dbfs: float = -1.0,
        *,
        lookahead_ms: float = 2.0,
        release_ms: float = 80.0,
    ) -> None:
        self.sample_rate = check_rate(sample_rate)
        if not ceiling_dbfs <= 0.0:
            raise ValueError(f"ceiling_dbfs must be <= 0, got {ceiling_dbfs}")
        if lookahead_ms < 0 or release_ms <= 0:
            raise ValueError("lookahead_ms must be >= 0 and release_ms > 0")
        self.ceiling = 10.0 ** (ceiling_dbfs / 20.0)
        self._window = max(1, round(lookahead_ms * self.sample_rate / 1000.0))
        # Release decay per sample, as a natural-log rate on the dB reduction.
        self._release_rate = 1000.0 / (release_ms * self.sample_rate)
        self._carry_db = 0.0

    @property
    def reduction_db(self) -> float:
        """Gain reduction (dB, >= 0) applied to the last output sample."""
        return self._carry_db

    def reset(self) -> None:
        self._carry_db = 0.0

    def process(self, y: np.ndarray) -> np.ndarray:
        """Limit one chunk (float32 out, same length).

        When nothing needs limiting the input array itself is returned, uncopied.
        """
        y = as_mono_float32(y)
        if y.size == 0:
            return y
        mag = np.abs(y).astype(np.float64)
        if self._carry_db == 0.0 and mag.max() <= self.ceiling:
            return y

        with np.errstate(divide="ignore"):
            needed = np.minimum(1.0, self.ceiling / mag)  # 0 magnitude -> inf -> 1
        w = self._window
        # Forward-looking minimum over [n, n+w-1], then a causal w-sample average:
        # every averaged value is a minimum over a window containing n, so the
        # average is <= needed[n] while turning the step into a linear ramp.
        held = sliding_window_view(np.concatenate((needed, np.ones(w - 1))), w).min(axis=1)
        attack = sliding_window_view(np.concatenate((np.full(w - 1, held[0]), held)), w).mean(axis=1)
        with np.errstate(divide="ignore"):
            reduction_db = np.maximum(-20.0 * np.log10(attack), 0.0)

        reduction_db = self._apply_release(reduction_db)
        self._carry_db = float(reduction_db[-1]) if reduction_db[-1] > _NEGLIGIBLE_DB else 0.0
        out = (y * 10.0 ** (reduction_db / -20.0)).astype(np.float32)
        # Guards only against float rounding; the gain already respects the ceiling.
        ceiling32 = np.float32(self.ceiling)
        np.clip(out, -ceiling32, ceiling32, out=out)
        return out

    def _apply_release(self, reduction_db: np.ndarray) -> np.ndarray:
        """env[n] = max over k <= n of reduction_db[k] * exp(-rate * (n - k)), incl. carry.

        Computed without a per-sample loop: in the log domain the decay is linear,
        so the running maximum becomes a cumulative max of log(r[k]) + rate * k.
        """
        rate = self._release_rate
        ramp = rate * np.arange(reduction_db.size, dtype=np.float64)
        with np.errstate(divide="ignore"):
            log_env = np.log(reduction_db) + ramp
        np.maximum.accumulate(log_env, out=log_env)
        if self._carry_db > 0.0:
            np.maximum(log_env, math.log(self._carry_db) - rate, out=log_env)
        env = np.exp(log_env - ramp)
        return np.maximum(env, reduction_db, out=env)


class LoudnessNormalizer:
    """Brings each chunk to ``target_lufs`` and limits peaks to ``ceiling_dbfs``.

    Chunks of at least 0.4 s are measured with BS.1770. Shorter
    chunks are collected until together they reach 0.4 s and are then measured;
    until then the previous gain is kept (or, before any measurement, a rough RMS
    estimate is used). A chunk passed with ``continues=True`` is measured together with
    the rest of its sentence so far (its last ``MAX_SPAN_SECONDS``). Chunks quieter
    than -70 LUFS never change the gain, and the
    gain never exceeds ``max_gain_db``. A new gain is approached with a one-pole
    glide (``smoothing_ms``) starting from the gain in use at the end of the last
    chunk; the very first measured gain is applied directly.

    Not thread-safe; one instance per stream. ``reset()`` forgets all state.
    """

    def __init__(
        self,
        sample_rate: int,
        target_lufs: float = -16.0,
        ceiling_dbfs: float = -1.0,
        max_gain_db: float = 20.0,
        *,
        smoothing_ms: float = 20.0,
        lookahead_ms: float = 2.0,
        release_ms: float = 80.0,
    ) -> None:
        self.sample_rate = check_rate(sample_rate)
        if not math.isfinite(target_lufs):
            raise ValueError(f"target_lufs must be finite, got {target_lufs}")
        if not max_gain_db >= 0.0:
            raise ValueError(f"max_gain_db must be >= 0, got {max_gain_db}")
        if not smoothing_ms > 0.0:
            raise ValueError(f"smoothing_ms must be > 0, got {smoothing_ms}")
        self.target_lufs = float(target_lufs)
        self.max_gain_db = float(max_gain_db)
        self._min_measure = math.ceil(MIN_MEASURE_SECONDS * self.sample_rate)
        self._max_span = math.ceil(MAX_SPAN_SECONDS * self.sample_rate)
        self._glide = math.exp(-1000.0 / (smoothing_ms * self.sample_rate))
        self._limiter = PeakLimiter(
            self.sample_rate, ceiling_dbfs, lookahead_ms=lookahead_ms, release_ms=release_ms
        )
        bs1770.k_weighting_ir(self.sample_rate)  # build the cached filter now, not on the first sentence
        self.reset()

    @property
    def ceiling(self) -> float:
        """Linear output ceiling."""
        return self._limiter.ceiling

    @property
    def gain_db(self) -> float:
        """Loudness gain (before limiting) applied to the last output sample."""
        return 0.0 if self._gain_db is None else self._gain_db

    @property
    def target_gain_db(self) -> float | None:
        """Gain the normaliser is gliding towards; None until something was measured."""
        return self._target_db

    def reset(self) -> None:
        self._gain_db: float | None = None
        self._target_db: float | None = None
        self._span: list[np.ndarray] = []  # what the next measurement covers
        self._span_len = 0
        self._span_measured = False
        self._limiter.reset()

    def process(self, x: np.ndarray, continues: bool = False) -> np.ndarray:
        """Normalise and limit one chunk; returns float32 of the same length.

        ``continues``: the chunk is the next part of the sentence of the chunk before it (an
        engine that streams within a sentence). The gain is then re-targeted to the sentence so
        far, so it settles as the sentence goes on instead of jumping with every part.
        """
        x = finite_or_zero(as_mono_float32(x))
        if x.size == 0:
            return x
        self._retarget(x, continues)
        return self._limiter.process(self._apply_gain(x))

    def _retarget(self, x: np.ndarray, continues: bool) -> None:
        if not continues and (self._span_measured or x.size >= self._min_measure):
            self._span, self._span_len, self._span_measured = [], 0, False  # a new sentence
        self._span.append(x.copy())  # the caller may reuse its buffer
        self._span_len += x.size
        while len(self._span) > 1 and self._span_len - self._span[0].size >= self._max_span:
            self._span_len -= self._span.pop(0).size
        if self._span_len >= self._min_measure:
            lufs = integrated_loudness(np.concatenate(self._span), self.sample_rate)
            self._span_measured = True
        elif self._target_db is None:
            lufs = _rms_loudness(np.concatenate(self._span))
        else:
            return
        if math.isfinite(lufs) and lufs >= SILENCE_LUFS:
            self._target_db = min(self.target_lufs - lufs, self.max_gain_db)

    def _apply_gain(self, x: np.ndarray) -> np.ndarray:
        target = self._target_db
        if target is None:
            return x.copy()  # never hand the caller's own buffer back
        if self._gain_db is None:
            self._gain_db = target
        offset = self._gain_db - target
        if abs(offset) < _NEGLIGIBLE_DB:
            self._gain_db = target
            return x * np.float32(10.0 ** (target / 20.0))
        steps = np.arange(1, x.size + 1, dtype=np.float64)
        gain_db = target + offset * self._glide**steps
        last = float(gain_db[-1])
        self._gain_db = target if abs(last - target) < _NEGLIGIBLE_DB else last
        return (x * 10.0 ** (gain_db / 20.0)).astype(np.float32)
