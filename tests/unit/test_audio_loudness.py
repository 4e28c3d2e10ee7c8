import itertools
import math

import numpy as np
import pyloudnorm
import pytest
from scipy.signal import butter, lfilter

from appliance.audio import LoudnessNormalizer
from appliance.audio.loudness import PeakLimiter

RATE = 22050
TARGET = -16.0
CEILING_DBFS = -1.0
EPS = 1e-6


def _lufs(x, rate=RATE):
    return pyloudnorm.Meter(rate).integrated_loudness(np.asarray(x, dtype=np.float64))


def _ceiling(dbfs=CEILING_DBFS):
    return 10 ** (dbfs / 20)


def _sentence(rng, seconds, rate=RATE):
    """Speech-like: a gliding harmonic 'voice' plus band-limited noise, syllable-modulated."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    b, a = butter(2, [150 / (rate / 2), 3500 / (rate / 2)], "band")
    noise = lfilter(b, a, rng.standard_normal(n))
    phase = 2 * np.pi * np.cumsum(120 + 20 * np.sin(2 * np.pi * 0.5 * t)) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20))
    syllables = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, 2 * np.pi)), 0, None) ** 2
    x = (0.5 * noise / noise.std() + voiced / voiced.std()) * syllables
    x[: int(0.05 * rate)] = 0  # leading/trailing pauses, as TTS sentences have
    x[-int(0.08 * rate) :] = 0
    return x


def _sentences(seed=0, durations=(0.6, 1.7, 3.2, 0.9, 2.4, 1.1)):
    rng = np.random.default_rng(seed)
    return [_sentence(rng, d) for d in durations]


def _scaled(sentences, gain):
    return [(s * gain).astype(np.float32) for s in sentences]


def _to_lufs(sentences, lufs):
    return _scaled(sentences, 10 ** ((lufs - _lufs(np.concatenate(sentences))) / 20))


def _to_peak(sentences, peak):
    return _scaled(sentences, peak / max(np.abs(s).max() for s in sentences))


def _run(norm, chunks):
    outs = [norm.process(c) for c in chunks]
    for c, o in zip(chunks, outs):
        assert o.dtype == np.float32 and o.shape == c.shape
    return outs


@pytest.mark.parametrize(
    "make_input",
    [
        pytest.param(lambda s: _to_lufs(s, -30.0), id="quiet -30 LUFS"),
        pytest.param(lambda s: _to_lufs(s, -6.0), id="loud -6 LUFS"),
        pytest.param(lambda s: _to_peak(s, 1.0), id="peak at full scale"),
        pytest.param(lambda s: _to_peak(s, 0.55), id="piper-like peak 0.55"),
    ],
)
def test_sentences_come_out_at_target_loudness(make_input):
    chunks = make_input(_sentences())
    outs = _run(LoudnessNormalizer(RATE, TARGET, CEILING_DBFS), chunks)
    y = np.concatenate(outs)
    assert abs(_lufs(y) - TARGET) <= 1.5
    for out in outs:
        assert abs(_lufs(out) - TARGET) <= 1.5
    assert np.abs(y).max() <= _ceiling() + EPS


def test_multitone_at_minus_30_lufs_is_normalised():
    t = np.arange(2 * RATE) / RATE
    tone = sum(np.sin(2 * np.pi * f * t) for f in (200, 450, 900, 1800, 3000))
    tone = (tone * 10 ** ((-30 - _lufs(tone)) / 20)).astype(np.float32)
    y = np.concatenate(_run(LoudnessNormalizer(RATE), np.array_split(tone, 2)))
    assert abs(_lufs(y) - TARGET) <= 1.5


def _square(amplitude, seconds=2.0, freq=220.0):
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sign(np.sin(2 * np.pi * freq * t))).astype(np.float32)


def _spiky(seconds=2.0, seed=1):
    """Quiet noise with full-scale clicks, two of them on chunk-start positions."""
    rng = np.random.default_rng(seed)
    x = (0.01 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)
    x[rng.integers(0, x.size, 30)] = 1.0
    x[0] = x[RATE] = -1.0
    return x


@pytest.mark.parametrize("ceiling_dbfs", [-1.0, -3.0, -0.1])
@pytest.mark.parametrize("target", [-16.0, 0.0, 6.0])
@pytest.mark.parametrize(
    "signal",
    [
        pytest.param(lambda: _square(1.0), id="full-scale square"),
        pytest.param(lambda: _square(0.05), id="quiet square"),
        pytest.param(_spiky, id="spikes"),
        pytest.param(lambda: np.concatenate(_to_peak(_sentences(3), 1.0)), id="speech"),
    ],
)
def test_output_never_exceeds_ceiling(signal, target, ceiling_dbfs):
    x = signal()
    norm = LoudnessNormalizer(RATE, target_lufs=target, ceiling_dbfs=ceiling_dbfs)
    y = np.concatenate(_run(norm, np.array_split(x, [RATE, RATE + 100, RATE + 9000])))
    assert np.isfinite(y).all()
    assert np.abs(y).max() <= _ceiling(ceiling_dbfs) + EPS


def test_full_scale_square_is_limited_not_clipped_at_high_target():
    y = LoudnessNormalizer(RATE, target_lufs=6.0).process(_square(1.0))
    assert np.abs(y).max() <= _ceiling() + EPS
    assert np.abs(y).max() > 0.99 * _ceiling()  # the limiter, not silence, holds it there


def _applied_gain(x, y, min_abs):
    """Per-sample gain y/x where x is large enough to divide by, and those indices."""
    keep = np.abs(x) >= min_abs
    return y[keep] / x[keep], np.flatnonzero(keep)


def _max_step_per_sample(gain, idx):
    return (np.abs(np.diff(gain)) / np.diff(idx)).max()


def test_limiter_gain_is_down_before_the_peak_and_releases_smoothly():
    rate = 48000
    t = np.arange(rate) / rate
    x = 0.2 * np.sin(2 * np.pi * 100 * t)
    burst = slice(rate // 2, rate // 2 + 480)  # 10 ms at 5x the level
    x[burst] *= 5
    x = x.astype(np.float32)
    limiter = PeakLimiter(rate, ceiling_dbfs=-6.0, lookahead_ms=2.0, release_ms=80.0)
    y = limiter.process(x)
    ceiling = _ceiling(-6.0)
    assert np.abs(y).max() <= ceiling + EPS

    gain, idx = _applied_gain(x, y, 0.01)
    assert _max_step_per_sample(gain, idx) < 0.01  # ramps, never steps
    onset = np.searchsorted(idx, burst.start)
    assert gain[onset - 1] < 0.95  # already reducing before the burst arrives
    after = lambda ms: gain[np.searchsorted(idx, burst.stop + rate * ms // 1000)]
    assert after(5) < 0.9  # release is gradual...
    assert after(400) > 0.99  # ...but complete
    assert gain[: np.searchsorted(idx, burst.start - 200)].min() > 0.999  # untouched before


def test_limiter_release_state_carries_across_chunks():
    rate = 22050
    x = np.full(rate, 0.3, np.float32)
    x[1000:1100] = 1.0
    whole = PeakLimiter(rate).process(x)
    limiter = PeakLimiter(rate)
    split = np.concatenate([limiter.process(x[:3000]), limiter.process(x[3000:])])
    assert split[3000] < 0.3 - 1e-3  # still releasing at the start of the second chunk
    np.testing.assert_allclose(split, whole, atol=1e-6)


def test_gain_changes_between_chunks_are_smoothed():
    rng = np.random.default_rng(5)
    loud = (0.3 * rng.standard_normal(RATE)).astype(np.float32)
    quiet = (0.02 * rng.standard_normal(RATE)).astype(np.float32)
    norm = LoudnessNormalizer(RATE, ceiling_dbfs=0.0)
    y1 = norm.process(loud)
    g1 = norm.gain_db
    y2 = norm.process(quiet)
    assert np.abs(y1).max() < 1.0 and np.abs(y2).max() < 1.0  # limiter stays out of this

    gain, idx = _applied_gain(np.concatenate([loud, quiet]), np.concatenate([y1, y2]), 1e-4)
    gain_db = 20 * np.log10(np.abs(gain))
    assert norm.target_gain_db - g1 > 20  # a big change was asked for...
    assert _max_step_per_sample(gain_db, idx) < 0.1  # ...and glided, not stepped
    assert gain_db[np.searchsorted(idx, loud.size)] < g1 + 1.0
    assert abs(gain_db[-1] - norm.target_gain_db) < 0.01
    assert abs(_lufs(y2) - TARGET) <= 1.5


def test_silence_stays_silence():
    norm = LoudnessNormalizer(RATE)
    for n in (RATE * 2, 10, 1, 5000):
        y = norm.process(np.zeros(n, np.float32))
        assert y.shape == (n,) and not y.any()
    assert norm.target_gain_db is None


def test_silence_after_speech_does_not_raise_the_gain():
    norm = LoudnessNormalizer(RATE)
    _run(norm, _to_lufs(_sentences(), -20.0))
    gain = norm.target_gain_db
    hiss = (1e-5 * np.random.default_rng(0).standard_normal(RATE)).astype(np.float32)  # ~ -95 LUFS
    for chunk in (np.zeros(RATE, np.float32), hiss, np.zeros(100, np.float32)):
        y = norm.process(chunk)
        assert np.isfinite(y).all()
        assert np.abs(y).max() <= np.abs(chunk).max() * 10 ** (gain / 20) * 1.001 + EPS
    assert norm.target_gain_db == gain


def test_gain_is_capped_by_max_gain():
    rng = np.random.default_rng(2)
    x = _to_lufs([_sentence(rng, 2.0)], -60.0)[0]
    norm = LoudnessNormalizer(RATE, max_gain_db=20.0)
    y = norm.process(x)
    assert norm.target_gain_db == pytest.approx(20.0)
    assert _lufs(y) == pytest.approx(-40.0, abs=0.5)


@pytest.mark.parametrize("chunk_seconds", [0.002, 0.01, 0.05, 0.2])
@pytest.mark.parametrize("level", [-30.0, -6.0])
def test_tiny_chunks(chunk_seconds, level):
    x = np.concatenate(_to_lufs(_sentences(4), level))
    n = max(1, int(chunk_seconds * RATE))
    chunks = [x[i : i + n] for i in range(0, x.size, n)]
    y = np.concatenate(_run(LoudnessNormalizer(RATE), chunks))
    assert np.isfinite(y).all()
    assert np.abs(y).max() <= _ceiling() + EPS
    assert abs(_lufs(y) - TARGET) <= 1.5


def test_empty_chunk():
    y = LoudnessNormalizer(RATE).process(np.zeros(0, np.float32))
    assert y.dtype == np.float32 and y.size == 0


def test_non_finite_input_gives_finite_output():
    x = _to_lufs(_sentences(durations=(1.0,)), -20.0)[0]
    x[100:200] = np.nan
    x[300] = np.inf
    y = LoudnessNormalizer(RATE).process(x)
    assert np.isfinite(y).all()
    assert not y[100:200].any()


def test_input_buffer_is_not_modified_or_returned():
    x = _to_lufs(_sentences(durations=(1.0,)), -30.0)[0]
    before = x.copy()
    norm = LoudnessNormalizer(RATE)
    y = norm.process(x)
    np.testing.assert_array_equal(x, before)
    assert not np.shares_memory(x, y)
    z = np.zeros(10, np.float32)
    assert not np.shares_memory(LoudnessNormalizer(RATE).process(z), z)


def test_reset_forgets_gain_and_limiter_state():
    norm = LoudnessNormalizer(RATE, target_lufs=6.0)
    norm.process(_square(1.0, 0.5))
    assert norm.target_gain_db is not None
    assert norm.gain_db > 0.0
    norm.reset()
    assert norm.target_gain_db is None and norm.gain_db == 0.0
    x = (0.01 * np.sin(np.arange(100))).astype(np.float32)
    fresh = LoudnessNormalizer(RATE, target_lufs=6.0).process(x)
    np.testing.assert_array_equal(norm.process(x), fresh)


def test_k_weighting_filter_is_built_once_per_rate():
    from appliance.audio.bs1770 import k_weighting_ir

    assert k_weighting_ir(RATE) is k_weighting_ir(RATE)
    assert k_weighting_ir(RATE) is not k_weighting_ir(24000)


@pytest.mark.parametrize("rate", [16000, 22050, 24000, 44100, 48000])
@pytest.mark.parametrize("seconds", [0.4, 0.43, 1.0, 3.7])
def test_bs1770_matches_pyloudnorm(rate, seconds):
    """The numpy meter against pyloudnorm's (scipy's IIR filters): the same gated loudness."""
    from appliance.audio.bs1770 import integrated_loudness

    rng = np.random.default_rng(rate + int(seconds * 100))
    n = int(seconds * rate)
    x = rng.normal(0, 0.1, n) * np.sin(np.linspace(0, 40, n)) + 0.3 * np.sin(
        2 * np.pi * 60 * np.arange(n) / rate
    )
    x[: n // 5] *= 1e-3  # a quiet start the gates must drop
    assert integrated_loudness(x, rate) == pytest.approx(_lufs(x, rate), abs=1e-6)


def test_bs1770_refuses_less_than_one_block_and_reads_silence_as_minus_infinity():
    from appliance.audio.bs1770 import integrated_loudness

    with pytest.raises(ValueError, match="at least 0.4 s"):
        integrated_loudness(np.ones(RATE // 4), RATE)
    assert integrated_loudness(np.zeros(RATE), RATE) == -math.inf


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sample_rate": 100},
        {"sample_rate": RATE, "ceiling_dbfs": 1.0},
        {"sample_rate": RATE, "max_gain_db": -1.0},
        {"sample_rate": RATE, "target_lufs": float("nan")},
    ],
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        LoudnessNormalizer(**kwargs)


def test_a_sentence_in_parts_settles_on_the_gain_of_the_whole_sentence():
    """An engine streaming a sentence in windows passes continues=True: the gain is re-targeted to
    the sentence so far, so it settles instead of following each window's own loudness."""
    rng = np.random.default_rng(7)
    sentence = _to_lufs([_sentence(rng, 3.0)], -28.0)[0]
    # A loud and a quiet stretch inside one sentence: measured window by window they would pull
    # the gain apart by ~12 dB.
    sentence[int(0.8 * RATE) : int(1.6 * RATE)] *= 2.0
    sentence[int(1.6 * RATE) :] *= 0.5
    cuts = [0, int(0.35 * RATE), int(1.05 * RATE), int(2.45 * RATE), sentence.size]
    parts = [sentence[a:b] for a, b in itertools.pairwise(cuts)]

    whole = LoudnessNormalizer(RATE, TARGET, CEILING_DBFS)
    whole.process(sentence)
    separate, streamed = (
        LoudnessNormalizer(RATE, TARGET, CEILING_DBFS),
        LoudnessNormalizer(RATE, TARGET, CEILING_DBFS),
    )
    separate_gains, streamed_gains = [], []
    for i, part in enumerate(parts):
        separate.process(part)
        streamed.process(part, continues=i > 0)
        separate_gains.append(separate.target_gain_db)
        streamed_gains.append(streamed.target_gain_db)

    # The last target is the whole sentence's gain (its last 4 s: here all of it)...
    assert streamed_gains[-1] == pytest.approx(whole.target_gain_db, abs=0.01)

    # ...and the streamed targets move far less than per-window ones do.
    def spread(gains):  # from the first measurement on
        return max(gains[1:]) - min(gains[1:])

    assert spread(separate_gains) > 6.0
    assert spread(streamed_gains) < spread(separate_gains) / 2


def test_a_new_sentence_starts_a_new_measurement():
    rng = np.random.default_rng(8)
    loud, quiet = _to_lufs([_sentence(rng, 1.5)], -10.0)[0], _to_lufs([_sentence(rng, 1.5)], -30.0)[0]
    norm = LoudnessNormalizer(RATE, TARGET, CEILING_DBFS)
    norm.process(loud[:8000])
    norm.process(loud[8000:], continues=True)
    norm.process(quiet)  # not continuing: measured on its own, as every sentence is
    assert norm.target_gain_db == pytest.approx(TARGET - _lufs(quiet), abs=0.01)
