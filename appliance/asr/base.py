"""The speech-recognition engine interface and its result type.

An engine turns one utterance (float32 mono PCM at 16 kHz) into a :class:`Transcript`. Engines
are blocking; :meth:`AsrEngine.transcribe` runs them on the engine's own single-thread executor,
so recognition never blocks the event loop and two transcriptions never compete for the cores.
An engine knows nothing of sessions, VAD or transports.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from appliance.audio import resample

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
MIN_AUDIO_S = 0.1  # shorter than this cannot hold a word; the model is not even called


@dataclass(frozen=True)
class TranscriptSegment:
    start: float  # seconds from the start of the audio
    end: float
    text: str
    no_speech_prob: float = 0.0  # the model's belief that the segment holds no speech


@dataclass
class Transcript:
    text: str
    language: str
    audio_s: float  # duration of the audio that was transcribed
    asr_ms: float  # time spent recognising (excluding time queued behind another call)
    final: bool = True  # False for a partial transcript of an utterance still in progress
    segments: list[TranscriptSegment] | None = None
    queue_ms: float = 0.0  # time it waited for the engine behind other passes (see .scheduler)

    @property
    def empty(self) -> bool:
        return not self.text.strip()


class Recognition(NamedTuple):
    """What an engine's :meth:`AsrEngine.recognize` returns; the base class adds the timing."""

    text: str
    language: str
    segments: list[TranscriptSegment] | None = None


def validate_audio(audio: object) -> np.ndarray:
    """Return ``audio`` as contiguous 1-D float32, or raise a ValueError saying what is wrong."""
    arr = np.asarray(audio)
    if arr.ndim != 1:
        raise ValueError(f"ASR audio must be a 1-D mono array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        # An int16 buffer read as samples would be 32768 times too loud.
        raise ValueError(
            f"ASR audio must be floating-point samples in [-1, 1], got dtype {arr.dtype} "
            "(convert PCM16 with appliance.audio.pcm16_to_float)"
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError("ASR audio contains NaN or infinite samples")
    return arr


def _check_sample_rate(sample_rate: object) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
    return sample_rate


class AsrEngine(ABC):
    """A speech recogniser. Subclasses implement :meth:`load` and :meth:`recognize`."""

    name: str = "asr"
    language: str = "en"  # what empty transcripts report

    def __init__(self) -> None:
        self.loaded = False
        self.load_ms: float | None = None
        self._load_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    # --- for subclasses -----------------------------------------------------------------------

    @abstractmethod
    def load(self) -> None:
        """Load the model (blocking; may take seconds). Sets ``self.loaded``."""

    @abstractmethod
    def recognize(self, audio: np.ndarray, *, partial: bool) -> Recognition:
        """Recognise validated float32 mono 16 kHz audio of at least :data:`MIN_AUDIO_S`."""

    def unload(self) -> None:
        """Release the model. The base class only marks the engine unloaded."""
        self.loaded = False

    # --- for callers --------------------------------------------------------------------------

    def ensure_loaded(self) -> None:
        with self._load_lock:
            if not self.loaded:
                self.load()

    def transcribe_sync(
        self, audio: np.ndarray, *, partial: bool = False, sample_rate: int = SAMPLE_RATE
    ) -> Transcript:
        """Transcribe one utterance, blocking. Loads the model first if needed."""
        samples = validate_audio(audio)
        return self._transcribe_valid(samples, partial, _check_sample_rate(sample_rate))

    async def transcribe(
        self, audio: np.ndarray, *, partial: bool = False, sample_rate: int = SAMPLE_RATE
    ) -> Transcript:
        """Transcribe off the event loop, on this engine's single worker thread.

        Bad input raises here, before anything is queued. Cancelling the awaiting task does not
        stop a recognition already running; its result is discarded.
        """
        samples = validate_audio(audio)
        sample_rate = _check_sample_rate(sample_rate)
        if _duration_s(samples, sample_rate) < MIN_AUDIO_S:
            return self._empty(samples, sample_rate, partial)
        job = functools.partial(self._transcribe_valid, samples, partial, sample_rate)
        return await asyncio.get_running_loop().run_in_executor(self._get_executor(), job)

    async def load_async(self) -> None:
        """Load on the engine's worker thread (so a server can start without blocking its loop)."""
        await asyncio.get_running_loop().run_in_executor(self._get_executor(), self.ensure_loaded)

    def close(self) -> None:
        """Stop the worker thread (a running recognition finishes first) and release the model."""
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        with self._load_lock:
            if self.loaded:
                self.unload()

    async def aclose(self) -> None:
        """:meth:`close` without blocking the loop while a running recognition finishes."""
        await asyncio.to_thread(self.close)

    # --- internals ----------------------------------------------------------------------------

    def _transcribe_valid(self, samples: np.ndarray, partial: bool, sample_rate: int) -> Transcript:
        if _duration_s(samples, sample_rate) < MIN_AUDIO_S:
            return self._empty(samples, sample_rate, partial)
        self.ensure_loaded()
        started = time.perf_counter()
        if sample_rate != SAMPLE_RATE:
            samples = resample(samples, sample_rate, SAMPLE_RATE)
        result = self.recognize(samples, partial=partial)
        asr_ms = (time.perf_counter() - started) * 1000
        audio_s = samples.size / SAMPLE_RATE
        kind = "partial" if partial else "final"
        log.debug("%s: %.2f s of audio in %.0f ms (%s)", self.name, audio_s, asr_ms, kind)
        return Transcript(
            text=result.text,
            language=result.language,
            audio_s=audio_s,
            asr_ms=asr_ms,
            final=not partial,
            segments=result.segments,
        )

    def _empty(self, samples: np.ndarray, sample_rate: int, partial: bool) -> Transcript:
        audio_s = _duration_s(samples, sample_rate)
        return Transcript("", self.language, audio_s, 0.0, final=not partial, segments=[])

    def _get_executor(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"asr-{self.name}")
            return self._executor


def _duration_s(samples: np.ndarray, sample_rate: int) -> float:
    return samples.size / sample_rate
