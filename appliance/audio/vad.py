"""Speech detection and endpointing for one microphone stream: webrtcvad behind an adaptive,
state-aware energy gate.

Input is PCM16LE mono at 8–48 kHz in pieces of any size. It is resampled (streaming, soxr) to
16 kHz and cut into ``frame_ms`` frames; frame ``k`` covers ``[k·frame_ms, (k+1)·frame_ms)`` of the
input stream, so every event time is a position in the input audio computed from sample counts
(not the wall clock, and not when the decision was taken — decisions lag by the resampler's delay
plus the confirmation times below).

A frame is **voiced** when webrtcvad calls it speech AND its energy reaches the state-aware bar
``noise_floor + gate_margin_db + 20·log10(factor)`` of :mod:`.noise_gate`; it is **loud** when its
energy reaches the bar less half the margin (the full bar while the assistant speaks), which is only
used to place the edges of speech already confirmed.

Rules (all durations rounded up to whole frames):

* **Onset**: a candidate run starts at a voiced frame; it survives gaps of up to 40 ms of unvoiced
  frames and is confirmed once it holds ``onset_ms`` of voiced frames. ``SpeechStart.t_ms`` is the
  start of the candidate's first voiced frame, or of the earliest loud frame up to ``unvoiced_ms``
  before it (a leading /s/, /f/ or plosive burst, which webrtcvad rarely calls speech).
* **Inside speech** the silence is counted from the end of the last voiced frame. Until
  ``provisional_silence_ms`` of silence any voiced frame simply continues the utterance. At
  ``provisional_silence_ms`` a ``ProvisionalEnd`` is emitted (unless the utterance is still shorter
  than ``min_speech_ms``: no speculative ASR for a click); after that, speech only continues if a
  new run is confirmed by the onset rule, which emits ``SpeechResumed`` (t = that run's first frame)
  when a ``ProvisionalEnd`` was emitted.
* **End**: at ``endpoint_silence_ms`` of silence (or, if a candidate run began inside the pause,
  once that run is dropped without being confirmed) the utterance ends at the end of its last voiced
  frame, or of the last loud frame up to ``unvoiced_ms`` after it (a trailing /s/: "six" is not
  "sick"); ``ProvisionalEnd.t_ms`` is the same estimate from what was seen by then. It is a
  ``SpeechEnd`` if it spanned at least ``min_speech_ms`` (from SpeechStart to that end), else
  ``SpeechDiscarded``. ``max_utterance_s`` forces a ``SpeechEnd``; speech that goes on starts a
  new utterance through the onset rule.
* **Look-ahead**: :meth:`SpeechDetector.silence_so_far` says how long the silence under way has
  lasted before it becomes a pause, so that work for that pause can start early.
* **Early end**: :meth:`SpeechDetector.end_now` ends the utterance inside a pause (no voiced run
  begun since ``ProvisionalEnd``) as if ``endpoint_silence_ms`` had passed: a turn model's verdict.
* **Audio**: ``SpeechEnd.audio`` is float32 16 kHz from ``pre_roll_ms`` before the onset (less at
  the very start of the stream) to its end.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import webrtcvad

from appliance.audio.framing import float_to_pcm16, pcm16_to_float
from appliance.audio.noise_gate import MODES, EnergyGate, Mode, NoiseFloor, frame_energy_db
from appliance.audio.resampling import StreamResampler
from appliance.audio.vad_config import VadConfig

__all__ = [
    "MODES",
    "Mode",
    "ProvisionalEnd",
    "SilenceSoFar",
    "SpeechDetector",
    "SpeechDiscarded",
    "SpeechEnd",
    "SpeechResumed",
    "SpeechStart",
    "VadConfig",
    "VadEvent",
]

VAD_RATE = 16_000
MIN_INPUT_RATE = 8_000
MAX_INPUT_RATE = 48_000
_CANDIDATE_MAX_GAP_MS = 40
_WARMUP_S = 0.2
_FLOOR_DB = -60.0  # until the noise has been heard
_RESAMPLE_QUALITY = "MQ"  # ≈15–30 ms of streaming delay; HQ would add up to 66 ms at 8 kHz


@dataclass(frozen=True)
class VadEvent:
    """t_ms: a position in the input stream (ms since the detector started), from sample counts."""

    t_ms: int


@dataclass(frozen=True)
class SpeechStart(VadEvent):
    """Speech began at t_ms (the estimated onset, not when it was confirmed)."""


@dataclass(frozen=True)
class ProvisionalEnd(VadEvent):
    """A pause of provisional_silence_ms after speech that ended at t_ms: ASR may start early."""


@dataclass(frozen=True)
class SpeechResumed(VadEvent):
    """Speech went on at t_ms after a ProvisionalEnd: the early ASR is stale."""


@dataclass(frozen=True)
class SpeechEnd(VadEvent):
    """The turn's speech ended at t_ms; audio is 16 kHz float32, pre-roll included."""

    speech_ms: int
    audio: np.ndarray = field(repr=False, compare=False)

    @property
    def start_ms(self) -> int:
        return self.t_ms - self.speech_ms


@dataclass(frozen=True)
class SpeechDiscarded(VadEvent):
    """A burst (ending at t_ms) shorter than min_speech_ms: not a turn."""

    speech_ms: int


@dataclass(frozen=True)
class SilenceSoFar:
    """A silence inside speech that is not (yet) a pause: see :meth:`SpeechDetector.silence_so_far`."""

    ms: int  # since the end of the last voiced frame
    voiced_end_ms: int  # that end: it names this silence (a voiced frame starts another)
    end_ms: int  # the speech's end as estimated now (trailing unvoiced sounds included)


def _frames(ms: float, frame_ms: int) -> int:
    return max(1, math.ceil(ms / frame_ms))


class SpeechDetector:
    """Streaming VAD + endpointer for one input stream. Not thread-safe."""

    def __init__(self, config: VadConfig | None = None, input_rate: int = VAD_RATE) -> None:
        if isinstance(input_rate, bool) or not isinstance(input_rate, int | np.integer):
            raise ValueError(f"input_rate must be an integer in Hz, got {input_rate!r}")  # noqa: TRY004 (documented)
        if not MIN_INPUT_RATE <= int(input_rate) <= MAX_INPUT_RATE:
            raise ValueError(f"input_rate={input_rate} Hz is outside {MIN_INPUT_RATE}..{MAX_INPUT_RATE} Hz")
        self.config = cfg = config if config is not None else VadConfig()
        self.input_rate = int(input_rate)
        self.frame_ms = cfg.frame_ms
        self.frame_len = VAD_RATE * cfg.frame_ms // 1000
        self._onset_frames = _frames(cfg.onset_ms, cfg.frame_ms)
        self._max_gap = max(1, _CANDIDATE_MAX_GAP_MS // cfg.frame_ms)
        self._provisional_frames = _frames(cfg.provisional_silence_ms, cfg.frame_ms)
        self._endpoint_frames = _frames(cfg.endpoint_silence_ms, cfg.frame_ms)
        self._pre_roll_frames = math.ceil(cfg.pre_roll_ms / cfg.frame_ms)
        self._max_frames = _frames(cfg.max_utterance_s * 1000, cfg.frame_ms)
        self._unvoiced_frames = math.ceil(cfg.unvoiced_ms / cfg.frame_ms)
        history = self._pre_roll_frames + self._unvoiced_frames + self._onset_frames * (self._max_gap + 1) + 1
        self._history: deque[tuple[int, np.ndarray, bool]] = deque(maxlen=history)
        self._vad = webrtcvad.Vad(cfg.aggressiveness)
        self._resampler = StreamResampler(self.input_rate, VAD_RATE, quality=_RESAMPLE_QUALITY)
        floor = NoiseFloor(cfg.frame_ms, cfg.noise_window_s, cfg.noise_percentile, _FLOOR_DB, _WARMUP_S)
        self._gate = EnergyGate(floor, cfg.gate_margin_db, cfg.speaking_factor, cfg.barged_in_factor)
        self.reset()

    # --- public API ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything: as if newly constructed (time 0, default noise floor, listening)."""
        self._resampler.reset()
        self._gate.reset()
        self._vad = webrtcvad.Vad(self.config.aggressiveness)
        self._pending = np.zeros(0, dtype=np.float32)
        self._k = 0  # index of the next frame
        self._history.clear()
        self._reset_candidate()
        self._in_speech = False
        self._prev_end = 0  # end of the previous utterance: a start is never extended back over it
        self._utt_start = 0  # first voiced frame of the utterance
        self._audio_start = 0  # first frame of its audio (pre-roll included)
        self._utt_frames: list[np.ndarray] = []
        self._utt_loud: list[bool] = []  # per frame of _utt_frames: energy passed the bar
        self._last_voiced_end = 0  # frame index just past the last voiced frame
        self._provisional_sent = False  # in a pause of at least provisional_silence_ms
        self._provisional_emitted = False  # ... and ProvisionalEnd was emitted for it
        self._pause_start = 0  # the end estimate at ProvisionalEnd: SpeechResumed is never before it

    def set_mode(self, mode: str) -> None:
        """One of MODES: ``"listening"``, ``"speaking"``, ``"barged_in"`` (any case; a str enum works)."""
        self._gate.set_mode(mode)

    @property
    def mode(self) -> Mode:
        return self._gate.mode

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def noise_floor_db(self) -> float:
        return self._gate.floor.floor_db

    @property
    def onset_pending(self) -> bool:
        """A voiced run has begun but is not yet confirmed as speech (a barge-in may be coming)."""
        return not self._in_speech and self._cand_start is not None

    def set_echo_level(self, db: float | None) -> None:
        """The level (dBFS) the appliance's own playing reply is expected to reach in this
        microphone, or None when nothing plays; while speaking the bar stays above it."""
        self._gate.echo_db = db

    @property
    def threshold_db(self) -> float:
        """The energy (dBFS) a frame needs now, in the current mode, to count as speech."""
        return self._gate.bar_db

    @property
    def position_ms(self) -> int:
        """Input time analysed so far (whole frames)."""
        return self._k * self.frame_ms

    def utterance_audio(self) -> np.ndarray:
        """Audio (float32, 16 kHz) of the current utterance so far, pre-roll included; empty outside one."""
        if not self._in_speech or not self._utt_frames:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self._utt_frames)

    @property
    def voiced_ms(self) -> int | None:
        """Span of the utterance under way from its start to the end of its last voiced frame."""
        return self._t(self._last_voiced_end - self._utt_start) if self._in_speech else None

    @property
    def in_pause(self) -> bool:
        """In speech, silent for at least provisional_silence_ms, and no new run of voice begun."""
        return self._in_speech and self._provisional_sent and self._cand_start is None

    def silence_so_far(self) -> SilenceSoFar | None:
        """The silence under way inside speech, before its ``ProvisionalEnd``: how long it has
        lasted and where the speech ended as estimated now; None outside speech, once the pause
        has been declared, or while the speech is shorter than ``min_speech_ms``."""
        if not self._in_speech or self._provisional_sent or self._k <= self._last_voiced_end:
            return None
        end = self._extended_end(self._k - 1)
        if self._t(end - self._utt_start) < self.config.min_speech_ms:
            return None
        return SilenceSoFar(
            self._t(self._k - self._last_voiced_end), self._t(self._last_voiced_end), self._t(end)
        )

    def end_now(self) -> list[VadEvent]:
        """End the utterance at its pause (another judge says the turn is over): its ``SpeechEnd``
        (or ``SpeechDiscarded``), as at ``endpoint_silence_ms``; nothing unless :attr:`in_pause`."""
        events: list[VadEvent] = []
        if self.in_pause:
            self._end(self._k - 1, events)
        return events

    def process(self, pcm: bytes | bytearray | memoryview) -> list[VadEvent]:
        """Feed PCM16LE mono at ``input_rate``; returns the events completed by it, in order."""
        if memoryview(pcm).nbytes % 2:
            raise ValueError("PCM16 input must have an even number of bytes")
        x = self._resampler.process(pcm16_to_float(pcm))
        if self._pending.size:
            x = np.concatenate([self._pending, x])
        n = x.size // self.frame_len
        self._pending = x[n * self.frame_len :].copy()
        if n == 0:
            return []
        block = x[: n * self.frame_len].reshape(n, self.frame_len)
        energies = frame_energy_db(block)
        pcm16 = float_to_pcm16(block).tobytes()
        step = 2 * self.frame_len
        events: list[VadEvent] = []
        for i in range(n):
            raw = self._vad.is_speech(pcm16[i * step : (i + 1) * step], VAD_RATE)
            self._step(block[i], float(energies[i]), raw, events)
        return events

    # --- per-frame state machine -----------------------------------------------------------------

    def _t(self, frame: int) -> int:
        return frame * self.frame_ms

    def _reset_candidate(self) -> None:
        self._cand_start: int | None = None
        self._cand_voiced = 0
        self._cand_gap = 0

    def _candidate(self, k: int, voiced: bool) -> bool:
        """Advance the onset candidate with frame k; True when it has just been confirmed."""
        if voiced:
            if self._cand_start is None:
                self._cand_start = k
                self._cand_voiced = 0
            self._cand_voiced += 1
            self._cand_gap = 0
            return self._cand_voiced >= self._onset_frames
        if self._cand_start is not None:
            self._cand_gap += 1
            if self._cand_gap > self._max_gap:
                self._reset_candidate()
        return False

    def _step(self, frame: np.ndarray, energy: float, raw_voiced: bool, events: list[VadEvent]) -> None:
        k = self._k
        self._k += 1
        passes, loud = self._gate.judge(energy)
        voiced = raw_voiced and passes
        self._history.append((k, frame, loud))
        if self._in_speech:
            self._utt_frames.append(frame)
            self._utt_loud.append(loud)
            self._in_speech_step(k, voiced, events)
        elif self._candidate(k, voiced):
            self._start(k, events)
        self._gate.floor.update(energy, in_speech=self._in_speech or voiced)

    def _extend_back(self, start: int, lower: int) -> int:
        """Earliest loud frame in [max(lower, start - unvoiced), start), else start: a leading
        unvoiced consonant (/s/, /f/, a plosive burst) that webrtcvad did not call speech."""
        earliest = start
        limit = max(lower, start - self._unvoiced_frames)
        for i, _frame, loud in reversed(self._history):
            if i >= start:
                continue
            if i < limit:
                break
            if loud:
                earliest = i
        return earliest

    def _extended_end(self, k: int) -> int:
        """End of the last loud frame within ``unvoiced_ms`` after the last voiced one (seen up to k)."""
        lo = self._last_voiced_end
        hi = min(k + 1, lo + self._unvoiced_frames)
        if self._cand_start is not None:
            hi = min(hi, self._cand_start)  # a run in progress belongs to what comes next
        for i in range(hi - 1, lo - 1, -1):
            if self._utt_loud[i - self._audio_start]:
                return i + 1
        return lo

    def _start(self, k: int, events: list[VadEvent]) -> None:
        assert self._cand_start is not None
        start = self._extend_back(self._cand_start, lower=self._prev_end)
        self._reset_candidate()
        # The pre-roll never reaches back into the previous utterance: when the two are one turn
        # (the person went on after a pause), their audio is joined, and overlap would be heard twice.
        first = max(start - self._pre_roll_frames, self._prev_end)
        kept = [(i, f, loud) for i, f, loud in self._history if i >= first]
        self._utt_frames = [f for _i, f, _loud in kept]
        self._utt_loud = [loud for _i, _f, loud in kept]
        self._audio_start = kept[0][0]
        self._utt_start = start
        self._last_voiced_end = k + 1
        self._provisional_sent = False
        self._provisional_emitted = False
        self._in_speech = True
        events.append(SpeechStart(self._t(start)))

    def _in_speech_step(self, k: int, voiced: bool, events: list[VadEvent]) -> None:
        if not self._provisional_sent:
            if voiced:
                self._last_voiced_end = k + 1
        elif self._candidate(k, voiced):
            assert self._cand_start is not None
            if self._provisional_emitted:
                events.append(SpeechResumed(self._t(self._extend_back(self._cand_start, self._pause_start))))
            self._reset_candidate()
            self._last_voiced_end = k + 1
            self._provisional_sent = False
        silence = k + 1 - self._last_voiced_end
        if silence >= self._provisional_frames and not self._provisional_sent:
            self._provisional_sent = True
            self._pause_start = self._extended_end(k)
            span_ms = self._t(self._pause_start - self._utt_start)
            self._provisional_emitted = span_ms >= self.config.min_speech_ms
            if self._provisional_emitted:
                events.append(ProvisionalEnd(self._t(self._pause_start)))
        # a run that began inside the pause may still prove to be speech: wait for its verdict
        cand = self._cand_start
        pending = cand is not None and cand < self._last_voiced_end + self._endpoint_frames
        if silence >= self._endpoint_frames and not pending:
            self._end(k, events)  # a later candidate carries on as an onset candidate
        elif k + 1 - self._utt_start >= self._max_frames:
            self._reset_candidate()
            self._end(k, events)

    def _end(self, k: int, events: list[VadEvent]) -> None:
        end = self._extended_end(k)
        speech_ms = self._t(end - self._utt_start)
        if speech_ms < self.config.min_speech_ms:
            events.append(SpeechDiscarded(self._t(end), speech_ms))
        else:
            audio = np.concatenate(self._utt_frames[: end - self._audio_start])
            events.append(SpeechEnd(self._t(end), speech_ms, audio))
        self._in_speech = False
        self._prev_end = end
        self._utt_frames = []
        self._utt_loud = []
        self._provisional_sent = False
