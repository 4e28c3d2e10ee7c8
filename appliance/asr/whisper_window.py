"""A short utterance through a short Whisper window.

Whisper's encoder is trained on 30 s windows and faster-whisper always pads to one, so a 2 s
question pays for 30 s of encoder (three quarters of a pass on a CPU). CTranslate2's encoder takes
fewer frames, and Whisper's output on a 10 or 15 s window is nearly as good for a voice command
(tiny.en on 80 Piper and espeak-ng questions: WER 0.20 against 0.21, a quarter of the time) — the idea of
whisper.cpp's ``audio_ctx``. Windows shorter than 10 s make the decoder loop on its own words, so
none are used; an utterance too long for 15 s, a language to detect, or a result that looks
unreliable (no end token within 6 tokens a second, a repeated run of words, an improbable text)
gets the ordinary 30 s pass instead.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

from appliance.asr.base import SAMPLE_RATE

HOP = 160  # samples per mel frame
WINDOWS = (1000, 1500)  # mel frames: 10 s and 15 s
MARGIN_FRAMES = 100  # at least 1 s of padding after the speech, as a 30 s window nearly always has
MAX_TOKENS_PER_S = 6  # fast speech is ~5 tokens/s: more means the decoder is looping
MIN_TOKEN_BUDGET = 10
REPEAT_WORDS = 3  # the same three words twice: a loop far more often than what was said
# faster-whisper's own thresholds for giving up on a decode (it then retries with temperature)
COMPRESSION_RATIO_LIMIT = 2.4
LOGPROB_LIMIT = -1.0
NO_SPEECH_LIMIT = 0.6


@dataclass(frozen=True)
class WindowResult:
    text: str
    no_speech_prob: float
    frames: int  # the window used


def window_for(samples: int) -> int | None:
    """The shortest window that holds the utterance with its margin, or None (use 30 s)."""
    needed = samples // HOP + 1 + MARGIN_FRAMES
    return next((w for w in WINDOWS if needed <= w), None)


def repeats(text: str) -> bool:
    """Does a run of REPEAT_WORDS words occur twice? (The loop a short window falls into on a
    joined turn: "Good morning, how are you? Good morning, how are you".)"""
    words = re.findall(r"[\w']+", text.lower())
    runs = [tuple(words[i : i + REPEAT_WORDS]) for i in range(len(words) - REPEAT_WORDS + 1)]
    return len(set(runs)) < len(runs)


def compression_ratio(text: str) -> float:
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


class WindowedDecoder:
    """Decodes with a loaded faster-whisper ``WhisperModel`` and a fixed language."""

    def __init__(self, whisper, language: str) -> None:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self._whisper = whisper
        self._tokenizer = tokenizer = Tokenizer(
            whisper.hf_tokenizer, whisper.model.is_multilingual, task="transcribe", language=language
        )
        self._prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        self._suppress = list(get_suppressed_tokens(tokenizer, [-1]))

    def decode(self, audio: np.ndarray, beam_size: int) -> WindowResult | None:
        """The transcript from a short window, or None where the 30 s pass should decide."""
        import ctranslate2

        frames = window_for(audio.size)
        if frames is None:
            return None
        features = self._whisper.feature_extractor(audio)[:, :-1]
        padded = np.zeros((1, features.shape[0], frames), dtype=np.float32)
        padded[0, :, : features.shape[1]] = features[:, :frames]
        encoded = self._whisper.model.encode(ctranslate2.StorageView.from_array(padded))
        budget = max(MIN_TOKEN_BUDGET, int(audio.size / SAMPLE_RATE * MAX_TOKENS_PER_S))
        result = self._whisper.model.generate(
            encoded,
            [self._prompt],
            beam_size=beam_size,
            # CTranslate2 stops Whisper at about half of max_length tokens (prompt included): room
            # for more than the budget, so a decode cut short is told apart from one that ended.
            max_length=2 * (len(self._prompt) + budget + 2),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < self._tokenizer.eot]
        text = self._tokenizer.decode(tokens).strip()
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if not any(c.isalnum() for c in text):
            text = ""  # a lone "." on silence, which the 30 s pass does not produce
        if result.no_speech_prob > NO_SPEECH_LIMIT and avg_logprob < LOGPROB_LIMIT:
            return WindowResult("", result.no_speech_prob, frames)  # silence, as the 30 s pass would skip it
        if (
            len(tokens) > budget
            or avg_logprob < LOGPROB_LIMIT
            or compression_ratio(text) > COMPRESSION_RATIO_LIMIT
            or repeats(text)
        ):
            return None
        return WindowResult(text, result.no_speech_prob, frames)
