"""PyAV encoding of reply audio as it is produced, and decoding of uploads of any format."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

from appliance.audio.encode import FORMATS, StreamEncoder, UndecodableAudio, decode_audio
from appliance.audio.pcm import pcm_to_mono_float

RATE = 48000


def _tone(seconds: float = 1.0, hz: float = 440.0) -> bytes:
    t = np.arange(int(RATE * seconds)) / RATE
    return (np.sin(2 * np.pi * hz * t) * 12000).astype("<i2").tobytes()


def _encode(name: str, pcm: bytes, speed: float = 1.0) -> tuple[bytes, int]:
    encoder = StreamEncoder(name, RATE, speed)
    out, chunks_with_bytes = b"", 0
    for i in range(0, len(pcm), 1920):  # 20 ms frames, as the workers send them
        data = encoder.feed(pcm[i : i + 1920])
        chunks_with_bytes += bool(data)
        out += data
    return out + encoder.finish(), chunks_with_bytes


@pytest.mark.parametrize("name", [n for n in FORMATS if n != "pcm"])
def test_every_container_decodes_back_to_the_same_length_and_pitch(name):
    data, chunks_with_bytes = _encode(name, _tone(1.0))
    assert chunks_with_bytes > 5  # bytes come out while the audio goes in, not only at the end
    samples = decode_audio(data, 16000)
    assert abs(samples.size / 16000 - 1.0) < 0.06
    spectrum = np.abs(np.fft.rfft(samples[1600:14400].astype(np.float64)))
    assert abs(np.argmax(spectrum) * 16000 / 12800 - 440) < 5


def test_pcm_is_raw_24khz_like_openai_s():
    data, _ = _encode("pcm", _tone(1.0))
    assert len(data) == 2 * 24000


@pytest.mark.parametrize("speed", [0.5, 1.5, 3.0])
def test_speed_scales_the_duration(speed):
    data, _ = _encode("pcm", _tone(2.0), speed)
    assert abs(len(data) / 2 / 24000 - 2.0 / speed) < 0.1


def test_unknown_format_and_speed_out_of_range_are_refused():
    with pytest.raises(ValueError, match="unsupported format"):
        StreamEncoder("ogg", RATE)
    with pytest.raises(ValueError, match="speed"):
        StreamEncoder("mp3", RATE, 5.0)


def test_a_wav_with_a_wrong_header_or_nothing_is_undecodable():
    with pytest.raises(UndecodableAudio):
        decode_audio(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + b"\xff" * 64)
    with pytest.raises(UndecodableAudio):
        decode_audio(b"")
    with pytest.raises(UndecodableAudio):
        decode_audio(b"this is not audio at all" * 100)


def test_8khz_stereo_32bit_wav_decodes_to_16khz_mono():
    t = np.arange(8000) / 8000
    left = (np.sin(2 * np.pi * 300 * t) * (1 << 30)).astype("<i4")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(4)
        w.setframerate(8000)
        w.writeframes(np.stack([left, left], axis=1).tobytes())
    samples = decode_audio(buf.getvalue(), 16000)
    assert abs(samples.size - 16000) < 200 and np.abs(samples).max() > 8000


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_pcm_of_any_width_and_channels_becomes_mono_float(width):
    x = np.array([0.5, -0.25, 0.0, 0.75])
    if width == 1:
        raw = (x * 128 + 128).astype(np.uint8).tobytes()
    elif width == 3:
        raw = b"".join(int(v * (1 << 23)).to_bytes(3, "little", signed=True) for v in x)
    else:
        raw = (x * (1 << (8 * width - 1))).astype(f"<i{width}").tobytes()
    stereo = b"".join(raw[i : i + width] * 2 for i in range(0, len(raw), width))
    assert np.allclose(pcm_to_mono_float(stereo, width, 2), x, atol=1 / 120)


def test_pcm_that_is_not_whole_frames_is_refused():
    with pytest.raises(ValueError, match="whole number"):
        pcm_to_mono_float(b"\0\0\0", 2, 1)
    with pytest.raises(ValueError, match="width"):
        pcm_to_mono_float(b"\0" * 10, 5, 1)
