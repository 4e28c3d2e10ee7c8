import numpy as np
import pyloudnorm
import pytest

from appliance.audio import (
    FRAME_BYTES,
    FRAME_SAMPLES,
    OUTPUT_RATE,
    OutputChain,
    float_to_pcm16,
    pcm16_to_float,
    resample,
)

PIPER_RATE = 22050


def _speechlike(rng, seconds, rate=PIPER_RATE, peak=0.55):
    n = int(seconds * rate)
    t = np.arange(n) / rate
    phase = 2 * np.pi * np.cumsum(110 + 25 * np.sin(2 * np.pi * 0.7 * t)) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 15)) + 0.3 * rng.standard_normal(n)
    x = voiced * np.clip(np.sin(2 * np.pi * 3.5 * t), 0, None)
    return (peak * x / np.abs(x).max()).astype(np.float32)


def _utterance(seed, durations=(0.8, 2.1, 0.35, 1.6, 3.0)):
    rng = np.random.default_rng(seed)
    return [_speechlike(rng, d) for d in durations]


def _run(chain, chunks):
    frames = []
    for c in chunks:
        frames += chain.push(c)
    return frames + chain.flush()


def _decode(frames):
    return pcm16_to_float(b"".join(frames))


@pytest.mark.parametrize("seed", range(3))
def test_22050_frames_are_exact_and_duration_is_preserved(seed):
    chunks = _utterance(seed)
    chain = OutputChain(PIPER_RATE)
    frames = _run(chain, chunks)

    assert frames and all(isinstance(f, bytes) and len(f) == FRAME_BYTES for f in frames)
    expected = sum(c.size for c in chunks) * OUTPUT_RATE / PIPER_RATE
    assert abs(chain.samples_out - expected) <= 2
    assert 0 <= len(frames) * FRAME_SAMPLES - chain.samples_out < FRAME_SAMPLES
    assert chain.frames_out == len(frames)
    assert chain.pending_samples == 0


def test_normalised_output_is_at_target_and_below_full_scale():
    chain = OutputChain(PIPER_RATE, target_lufs=-16.0, ceiling_dbfs=-1.0)
    y = _decode(_run(chain, _utterance(4)))
    lufs = pyloudnorm.Meter(OUTPUT_RATE).integrated_loudness(y.astype(np.float64))
    assert abs(lufs - (-16.0)) <= 1.5
    # -1 dBFS ceiling plus a little room for resampling overshoot between samples.
    assert np.abs(y).max() <= 10 ** (-0.5 / 20)


def test_without_normalisation_output_is_resample_plus_pcm16():
    chunks = _utterance(1)
    frames = _run(OutputChain(PIPER_RATE, normalize=False), chunks)
    expected = float_to_pcm16(resample(np.concatenate(chunks), PIPER_RATE))
    got = np.frombuffer(b"".join(frames), dtype="<i2")
    assert np.abs(got[: expected.size].astype(int) - expected).max() <= 1
    assert not got[expected.size :].any()


def test_48k_passthrough_is_bit_exact():
    x = _speechlike(np.random.default_rng(0), 0.5, rate=OUTPUT_RATE)
    frames = _run(OutputChain(OUTPUT_RATE, normalize=False), np.array_split(x, 7))
    got = np.frombuffer(b"".join(frames), dtype="<i2")
    np.testing.assert_array_equal(got[: x.size], float_to_pcm16(x))
    assert not got[x.size :].any()
    assert len(frames) == -(-x.size // FRAME_SAMPLES)


def test_chain_is_reusable_after_flush():
    chain = OutputChain(PIPER_RATE)
    first = _run(chain, _utterance(2))
    samples_after_first = chain.samples_out
    second = _run(chain, _utterance(2))
    assert all(len(f) == FRAME_BYTES for f in first + second)
    assert len(second) == len(first)
    assert chain.samples_out == 2 * samples_after_first
    assert chain.frames_out == len(first) + len(second)


def test_reset_drops_pending_audio():
    chain = OutputChain(PIPER_RATE)
    chain.push(_speechlike(np.random.default_rng(0), 0.013))
    chain.reset()
    assert chain.pending_samples == 0
    assert chain.flush() == []


def test_tiny_and_empty_pushes():
    chain = OutputChain(PIPER_RATE)
    x = np.concatenate(_utterance(5, durations=(0.5,)))
    frames = [f for i in range(0, x.size, 37) for f in chain.push(x[i : i + 37])]
    assert chain.push(np.zeros(0, np.float32)) == []
    frames += chain.flush()
    assert all(len(f) == FRAME_BYTES for f in frames)
    assert abs(chain.samples_out - x.size * OUTPUT_RATE / PIPER_RATE) <= 2


def test_silence_in_silence_out():
    frames = _run(OutputChain(PIPER_RATE), [np.zeros(PIPER_RATE, np.float32)] * 2)
    assert len(frames) == 100
    assert not any(any(f) for f in frames)


def test_nan_input_does_not_corrupt_output():
    x = _utterance(6, durations=(1.0,))[0]
    x[500:600] = np.nan
    y = _decode(_run(OutputChain(PIPER_RATE), [x]))
    assert np.isfinite(y).all()
    assert np.abs(y).max() < 1.0


def test_rejects_int16_input():
    with pytest.raises(TypeError):
        OutputChain(PIPER_RATE).push(np.zeros(100, np.int16))


def test_rejects_invalid_rate():
    with pytest.raises(ValueError):
        OutputChain(4000)
