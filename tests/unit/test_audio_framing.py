import numpy as np
import pytest

from appliance.audio import (
    FRAME_BYTES,
    FRAME_MS,
    FRAME_SAMPLES,
    OUTPUT_RATE,
    FrameAssembler,
    float_to_pcm16,
    pcm16_to_float,
)


def _random_pcm(rng, n):
    return rng.integers(-32768, 32768, size=n, dtype=np.int16)


def test_constants_describe_20ms_of_48k_mono_pcm16():
    assert OUTPUT_RATE == 48000
    assert FRAME_MS == 20
    assert FRAME_SAMPLES == 960 == OUTPUT_RATE * FRAME_MS // 1000
    assert FRAME_BYTES == 1920 == FRAME_SAMPLES * 2


@pytest.mark.parametrize("seed", range(20))
def test_random_chunk_sizes_give_exact_frames_and_lose_nothing(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 5000, size=40)
    sizes[rng.integers(0, 40, size=5)] = rng.choice([1, 959, 960, 961, 1920], size=5)
    pcm = _random_pcm(rng, int(sizes.sum()))
    asm = FrameAssembler()

    frames, pos = [], 0
    for n in sizes:
        frames += asm.push(pcm[pos : pos + n])
        pos += n
        assert asm.pending_samples == pos % FRAME_SAMPLES
    assert len(frames) == pcm.size // FRAME_SAMPLES
    tail = asm.flush()
    frames += tail

    assert all(isinstance(f, bytes) and len(f) == FRAME_BYTES for f in frames)
    assert len(tail) == (1 if pcm.size % FRAME_SAMPLES else 0)
    assert asm.pending_samples == 0
    out = np.frombuffer(b"".join(frames), dtype="<i2")
    assert out.size == -(-pcm.size // FRAME_SAMPLES) * FRAME_SAMPLES
    np.testing.assert_array_equal(out[: pcm.size], pcm)
    assert not out[pcm.size :].any()


def test_last_frame_is_zero_padded_and_flush_is_then_empty():
    asm = FrameAssembler()
    pcm = np.arange(1, 101, dtype=np.int16)
    assert asm.push(pcm) == []
    assert asm.pending_samples == 100
    (frame,) = asm.flush()
    assert len(frame) == FRAME_BYTES
    samples = np.frombuffer(frame, dtype="<i2")
    np.testing.assert_array_equal(samples[:100], pcm)
    assert not samples[100:].any()
    assert asm.flush() == []


def test_flush_with_nothing_pending_returns_empty_list():
    assert FrameAssembler().flush() == []


def test_exact_multiple_leaves_nothing_pending():
    asm = FrameAssembler()
    frames = asm.push(np.ones(2 * FRAME_SAMPLES, dtype=np.int16))
    assert len(frames) == 2
    assert asm.pending_samples == 0
    assert asm.flush() == []


def test_frames_are_little_endian_int16():
    asm = FrameAssembler(frame_samples=2)
    (frame,) = asm.push(np.array([1, -2], dtype=np.int16))
    assert frame == b"\x01\x00\xfe\xff"
    (frame,) = asm.push(np.array([258, 0], dtype=">i2"))  # big-endian input is converted
    assert frame == b"\x02\x01\x00\x00"


def test_pending_samples_do_not_alias_the_callers_buffer():
    asm = FrameAssembler()
    first = np.full(500, 7, dtype=np.int16)
    asm.push(first)
    first[:] = -1
    (frame,) = asm.push(np.full(460, 9, dtype=np.int16))
    samples = np.frombuffer(frame, dtype="<i2")
    assert (samples[:500] == 7).all() and (samples[500:] == 9).all()


def test_reset_drops_pending_samples():
    asm = FrameAssembler()
    asm.push(np.ones(100, dtype=np.int16))
    asm.reset()
    assert asm.pending_samples == 0
    assert asm.flush() == []


def test_custom_frame_size():
    asm = FrameAssembler(frame_samples=160)
    assert asm.frame_bytes == 320
    frames = asm.push(np.zeros(500, dtype=np.int16)) + asm.flush()
    assert [len(f) for f in frames] == [320] * 4


@pytest.mark.parametrize("bad", [np.zeros(10, np.float32), np.zeros(10, np.int32), np.zeros(10, np.uint16)])
def test_push_rejects_non_int16(bad):
    with pytest.raises(TypeError):
        FrameAssembler().push(bad)


def test_push_rejects_multichannel():
    with pytest.raises(ValueError):
        FrameAssembler().push(np.zeros((10, 2), dtype=np.int16))


@pytest.mark.parametrize("bad", [0, -960, 1.5])
def test_invalid_frame_size(bad):
    with pytest.raises(ValueError):
        FrameAssembler(frame_samples=bad)


def test_float_to_pcm16_clips_scales_and_rounds():
    x = np.array([0.0, 1.0, -1.0, 2.0, -3.0, 0.5, -0.25, 0.4 / 32767, 0.6 / 32767], np.float32)
    y = float_to_pcm16(x)
    assert y.dtype == np.int16
    np.testing.assert_array_equal(y, [0, 32767, -32767, 32767, -32767, 16384, -8192, 0, 1])


def test_float_to_pcm16_maps_non_finite_safely():
    y = float_to_pcm16(np.array([np.nan, np.inf, -np.inf], np.float32))
    np.testing.assert_array_equal(y, [0, 32767, -32767])


def test_float_to_pcm16_accepts_float64():
    np.testing.assert_array_equal(float_to_pcm16(np.array([0.5, -1.0])), [16384, -32767])


def test_float_to_pcm16_rejects_integer_input():
    with pytest.raises(TypeError):
        float_to_pcm16(np.array([1, 2], np.int16))


def test_pcm16_round_trip_is_exact():
    pcm = np.arange(-32767, 32768, dtype=np.int16)
    back = pcm16_to_float(pcm)
    assert back.dtype == np.float32
    assert np.abs(back).max() == 1.0
    np.testing.assert_array_equal(float_to_pcm16(back), pcm)
    np.testing.assert_array_equal(pcm16_to_float(pcm.astype("<i2").tobytes()), back)


def test_pcm16_to_float_accepts_bytes_like():
    data = np.array([32767, -32767, 0], dtype="<i2").tobytes()
    for buf in (data, bytearray(data), memoryview(data)):
        np.testing.assert_array_equal(pcm16_to_float(buf), np.array([1.0, -1.0, 0.0], np.float32))


def test_pcm16_to_float_rejects_odd_length_and_wrong_dtype():
    with pytest.raises(ValueError):
        pcm16_to_float(b"\x00\x00\x00")
    with pytest.raises(TypeError):
        pcm16_to_float(np.zeros(4, np.float32))
