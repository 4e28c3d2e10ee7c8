"""Whisper through faster-whisper (CTranslate2), tuned for short utterances and low latency.

Each call transcribes one whole utterance: no VAD (the orchestrator already cut it), no
conditioning on earlier text, no timestamps. Whisper pads every input to 30 s, so the time per
call barely depends on the utterance's length; an utterance that fits a 10 or 15 s window is
encoded in that instead (:mod:`.whisper_window`), about four times faster on a CPU.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from appliance.asr.base import SAMPLE_RATE, AsrEngine, Recognition, TranscriptSegment
from appliance.asr.models import WHISPER_MODELS, locate_whisper_model
from appliance.asr.whisper_window import WindowedDecoder

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
AUTO_LANGUAGE = "auto"  # let Whisper detect the language (multilingual models only)


def cuda_device_count() -> int:
    import ctranslate2

    try:
        return ctranslate2.get_cuda_device_count()
    except RuntimeError:  # a CUDA driver that cannot be initialised
        return 0


def resolve_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "auto":
        return "cuda" if cuda_device_count() > 0 else "cpu"
    return device


def resolve_compute_type(compute_type: str, device: str) -> str:
    """``auto``: int8 on CPU, float16 on CUDA (int8_float32 where a GPU lacks float16)."""
    if compute_type != "auto":
        return compute_type
    if device == "cpu":
        return "int8"
    import ctranslate2

    supported = ctranslate2.get_supported_compute_types(device)
    return "float16" if "float16" in supported else "int8_float32"


def resolve_language(language: str | None, english_only: bool) -> str | None:
    """The language passed to Whisper: English unless asked otherwise; None means detect."""
    if english_only:
        if language not in (None, "en"):
            raise ValueError(f"this Whisper model is English-only; language {language!r} is not available")
        return "en"
    if language is None:
        return "en"
    return None if language == AUTO_LANGUAGE else language


class WhisperAsr(AsrEngine):
    def __init__(
        self,
        model: str = "tiny.en",
        device: str = "auto",
        compute_type: str = "auto",
        cpu_threads: int = 2,
        beam_size: int = 1,
        language: str | None = None,
        *,
        short_window: bool = True,
        cache_dir: str | Path | None = None,
        models_dir: str | Path | None = None,
        warmup: bool = True,
    ) -> None:
        super().__init__()
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        if beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {beam_size}")
        if cpu_threads < 0:
            raise ValueError(f"cpu_threads must be >= 0 (0: CTranslate2's default), got {cpu_threads}")
        spec = WHISPER_MODELS.get(model)
        if spec is not None:
            resolve_language(language, spec.english_only)  # fail early on e.g. tiny.en + "fr"
        self.model = model
        self.name = f"whisper-{model if spec is not None else Path(model).name}"
        self.requested_device = device
        self.requested_compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.beam_size = beam_size
        self.requested_language = language
        self.short_window = short_window
        self.window_passes = self.full_passes = 0  # how each utterance was recognised
        self.cache_dir = cache_dir
        self.models_dir = models_dir
        self.path: Path | None = None  # the model directory, once loaded
        self.warmup = warmup
        self.device: str | None = None  # as loaded
        self.compute_type: str | None = None
        self.warmup_ms: float | None = None
        self._language: str | None = "en"
        self._whisper = None
        self._window: WindowedDecoder | None = None

    def load(self) -> None:
        path = self.path = locate_whisper_model(
            self.model, cache_dir=self.cache_dir, models_dir=self.models_dir
        )
        device = resolve_device(self.requested_device)
        try:
            self._load_on(path, device)
        except Exception as exc:
            self.unload()
            if self.requested_device != "auto" or device == "cpu":
                raise
            # CUDA libraries (cuBLAS/cuDNN) often surface as missing only at the first inference.
            log.warning("%s: CUDA failed (%s); falling back to CPU", self.name, exc)
            self._load_on(path, "cpu")
        log.info(
            "%s loaded on %s/%s in %.0f ms (warm-up %.0f ms) from %s",
            self.name,
            self.device,
            self.compute_type,
            self.load_ms or 0,
            self.warmup_ms or 0,
            path,
        )

    def _load_on(self, path: Path, device: str) -> None:
        from faster_whisper import WhisperModel

        compute_type = resolve_compute_type(self.requested_compute_type, device)
        started = time.perf_counter()
        whisper = WhisperModel(
            str(path),
            device=device,
            compute_type=compute_type,
            cpu_threads=self.cpu_threads,
            num_workers=1,
            local_files_only=True,
        )
        language = resolve_language(self.requested_language, not whisper.model.is_multilingual)
        if language is not None and language not in whisper.supported_languages:
            raise ValueError(f"{self.name}: unsupported language {language!r}")
        self._whisper, self._language = whisper, language
        # A detected language needs the 30 s pass's language detection.
        self._window = WindowedDecoder(whisper, language) if self.short_window and language else None
        self.device, self.compute_type = device, compute_type
        self.language = language or "en"
        self.load_ms = (time.perf_counter() - started) * 1000
        self.loaded = True
        if self.warmup:
            started = time.perf_counter()
            self.recognize(np.zeros(SAMPLE_RATE, dtype=np.float32), partial=False)
            self.warmup_ms = (time.perf_counter() - started) * 1000

    def recognize(self, audio: np.ndarray, *, partial: bool) -> Recognition:
        if self._whisper is None:
            raise RuntimeError(f"{self.name} is not loaded")
        if self._window is not None:
            short = self._window.decode(audio, 1 if partial else self.beam_size)
            if short is not None:
                self.window_passes += 1
                end = audio.size / SAMPLE_RATE
                parts = [TranscriptSegment(0.0, end, short.text, short.no_speech_prob)] if short.text else []
                return Recognition(text=short.text, language=self.language, segments=parts)
        self.full_passes += 1
        segments, info = self._whisper.transcribe(
            audio,
            language=self._language,
            beam_size=1 if partial else self.beam_size,
            # A partial is soon superseded: never pay for temperature-fallback re-decodes.
            temperature=0.0 if partial else [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        parts = [
            TranscriptSegment(start=s.start, end=s.end, text=s.text.strip(), no_speech_prob=s.no_speech_prob)
            for s in segments  # a lazy generator: decoding happens here
        ]
        text = " ".join(p.text for p in parts if p.text)
        return Recognition(text=text, language=info.language, segments=parts)

    def unload(self) -> None:
        self._whisper = self._window = None
        self.loaded = False


def whisper_from_settings(asr) -> WhisperAsr:
    """The engine an ``[asr]`` settings section (``AsrSettings``) describes."""
    return WhisperAsr(
        model=asr.model,
        device=asr.device,
        compute_type=asr.compute_type,
        cpu_threads=asr.cpu_threads,
        beam_size=asr.beam_size,
        language=asr.language,
        short_window=asr.short_window,
        models_dir=asr.models_dir,
    )
