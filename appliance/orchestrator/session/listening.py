"""The microphone side of a conversation: VAD events become turns, with ASR started early.

Every input chunk goes through the VAD (:mod:`appliance.audio.vad`), whose bar is kept above the
echo of the appliance's own reply (:mod:`appliance.audio.echo`). A ``ProvisionalEnd`` (a short
pause) starts a *speculative* transcription of the utterance so far; if the turn then ends where
that one did, its transcript is used as it is (speech that went on makes it stale). In smart mode
the turn model judges the same pause (:mod:`.end_of_turn`) and may end the turn there. During a
long turn a partial transcript is sent every ``[asr] partial_interval_ms``. All recognition goes
through the engine's scheduler (:mod:`appliance.asr.scheduler`): the final pass first, optional
passes only when the engine's measured pass time says they cannot hold up a final. What the
speech means for the session (barge-in, a new turn) is the host's to decide.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

import numpy as np

from appliance.asr import AsrEngine, Transcript
from appliance.asr.scheduler import Priority, scheduler_for
from appliance.audio import vad
from appliance.audio.echo import EchoEstimate
from appliance.config import OrchestratorSettings
from appliance.orchestrator.session.end_of_turn import EndOfTurn
from appliance.orchestrator.session.states import State, StateMachine
from appliance.orchestrator.session.timeline import InputTimeline
from appliance.orchestrator.session.turn import TurnTimes
from appliance.transport.protocol import ServerEvent, VadEvent
from appliance.transport.protocol import Transcript as TranscriptEvent

log = logging.getLogger(__name__)

SPECULATION_MATCH_MS = 40  # a speculative transcript is used if the turn ended this close to where it did


class ListeningHost(Protocol):
    def speech_started(self) -> None: ...

    def speech_ended(self) -> bool:
        """Speech ended: is it a turn (rather than speech under the barge-in bar while speaking)?"""
        ...

    def turn_heard(self, audio: np.ndarray, speculative: asyncio.Task | None, times: TurnTimes) -> None: ...

    def speech_discarded(self) -> None: ...


class Listener:
    def __init__(
        self,
        settings: OrchestratorSettings,
        sample_rate: int,
        asr: AsrEngine,
        sm: StateMachine,
        host: ListeningHost,
        *,
        emit: Callable[[ServerEvent], None],
        spawn: Callable[..., asyncio.Task],
        end_of_turn: EndOfTurn | None = None,
    ) -> None:
        self.settings = settings
        self.sample_rate = sample_rate
        self.asr = scheduler_for(asr)
        self.sm = sm
        self.host = host
        self._emit = emit
        self._spawn = spawn
        self.end_of_turn = end_of_turn or EndOfTurn(settings.turn, None)
        self.vad_config = self.end_of_turn.vad_config(settings.vad)
        self.detector = vad.SpeechDetector(self.vad_config, sample_rate)
        self.echo = EchoEstimate(settings.vad.echo_return_loss_db)
        self.timeline = InputTimeline()
        self.speech_start_ms: float | None = None
        self._speculative: tuple[float, asyncio.Task] | None = None  # (utterance end ms, ASR task)
        self._partial: asyncio.Task | None = None
        self._partial_at_ms = 0.0  # utterance length at the last partial transcript
        self._pause = 0  # counts pauses and resumptions: a verdict for an earlier pause is stale
        self._verdict_ms: float | None = None  # the turn model's time at this utterance's last pause

    @property
    def onset_pending(self) -> bool:
        """A voiced frame above the bar, not confirmed as speech yet."""
        return self.detector.onset_pending

    def spoken_ms(self) -> float | None:
        """How long the speech under way has lasted (None: none is)."""
        return None if self.speech_start_ms is None else self.timeline.position_ms - self.speech_start_ms

    def voiced_ms(self) -> float | None:
        """How long the speech under way has lasted up to its last voiced frame (None: none is)."""
        return self.detector.voiced_ms

    def set_state(self, state: State) -> None:
        self.detector.set_mode(
            {State.SPEAKING: "speaking", State.BARGED_IN: "barged_in"}.get(state, "listening")
        )

    def played(self, frame: bytes, at: float) -> None:
        """A reply frame went to the client: it may come back in the microphone."""
        self.echo.played(frame, at)

    def hear(self, pcm: bytes) -> None:
        now = asyncio.get_running_loop().time()
        self.timeline.add(len(pcm) / 2 / self.sample_rate * 1000, now)
        self.detector.set_echo_level(self.echo.level_db(now))
        self._handle(self.detector.process(pcm))
        self._maybe_partial_transcript()

    def _handle(self, events: list[vad.VadEvent]) -> None:
        for event in events:
            if isinstance(event, vad.SpeechStart):
                self.speech_start_ms = event.t_ms
                self._partial_at_ms = 0.0
                self._emit(VadEvent("speech_start"))
                self.host.speech_started()
                self._verdict_ms = None
            elif isinstance(event, vad.ProvisionalEnd):
                self._pause += 1
                self._start_speculative_asr(event.t_ms)
                if self.end_of_turn.smart:
                    self._spawn(self._judge_pause(self._pause, self.detector.utterance_audio()))
            elif isinstance(event, vad.SpeechResumed):
                self._pause += 1
                self._drop_speculative()
            elif isinstance(event, vad.SpeechEnd):
                self._pause += 1
                self._on_speech_end(event)
            elif isinstance(event, vad.SpeechDiscarded):
                self._pause += 1
                self.speech_start_ms = None
                self._drop_speculative()
                self.host.speech_discarded()

    async def _judge_pause(self, pause: int, audio: np.ndarray) -> None:
        """The turn model on the utterance at this pause: complete ends the turn here and now."""
        verdict = await self.end_of_turn.judge(audio)
        self._verdict_ms = verdict.ms
        if not verdict.complete:
            return
        if (
            self.end_of_turn.needs_transcript(verdict)
            and pause == self._pause
            and self._speculative is not None
        ):
            task = self._speculative[1]
            try:
                text = (await asyncio.shield(task)).text
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise  # this judgement itself is cancelled
                return  # speech went on and the pass was dropped
            except Exception:  # noqa: BLE001 (the final pass transcribes the turn: the model decides)
                text = ""
            if pause == self._pause and self.end_of_turn.sounds_unfinished(text):
                log.info(
                    "turn goes on session=%s: the transcript stops mid-phrase text=%r",
                    self.sm.session_id,
                    text[-60:],
                )
                return
        if pause == self._pause and self.detector.in_pause:
            self._handle(self.detector.end_now())

    def _on_speech_end(self, event: vad.SpeechEnd) -> None:
        self.speech_start_ms = None
        self._emit(VadEvent("speech_end"))
        if not self.host.speech_ended():
            return
        loop = asyncio.get_running_loop()
        times = TurnTimes(
            speech_end_arrival=self.timeline.arrival_of(event.t_ms),
            endpoint_at=loop.time(),
            turn_model_ms=self._verdict_ms,
        )
        self.host.turn_heard(event.audio, self._take_speculative(event.t_ms), times)

    async def transcribe(self, audio: np.ndarray, speculative: asyncio.Task | None) -> Transcript:
        """The turn's transcript: the speculative one if it is still good, else a fresh one."""
        if speculative is not None:
            try:
                return await speculative
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():
                    raise  # this turn itself is cancelled, not only the speculative pass
        return await self.asr.transcribe(audio, Priority.FINAL)

    def _maybe_partial_transcript(self) -> None:
        """During a long turn, a `transcript` with final: false every partial_interval_ms."""
        interval = self.settings.asr.partial_interval_ms
        spoken = self.spoken_ms()
        if not interval or spoken is None or self.sm.state is not State.LISTENING:
            return
        busy = (self._partial and not self._partial.done()) or self._speculative is not None
        if spoken - self._partial_at_ms < interval or busy or self.detector.in_pause:
            return
        self._partial_at_ms = spoken
        # A pass no longer than the least silence that ends a turn can never hold up its final; one
        # up to the interval only now and then, and by less than a pass (asr_queue_ms says how long);
        # an engine slower than the interval gets no partials at all.
        budget = max(self.end_of_turn.soonest_end_ms(self.vad_config), interval)
        if not self.asr.worth_starting(Priority.PARTIAL, budget):
            return
        self._partial = self._spawn(self._partial_transcript(self.detector.utterance_audio()))

    async def _partial_transcript(self, audio: np.ndarray) -> None:
        transcript = await self.asr.transcribe(audio, Priority.PARTIAL)
        if self.speech_start_ms is not None and transcript.text.strip():
            self._emit(TranscriptEvent(transcript.text.strip(), final=False))

    def _start_speculative_asr(self, end_ms: float) -> None:
        self._drop_speculative()
        if self.sm.state in (State.SPEAKING, State.BARGED_IN):
            return
        if not self.asr.worth_starting(Priority.SPECULATIVE, self._speculation_budget_ms()):
            return
        audio = self.detector.utterance_audio()
        self._speculative = (end_ms, asyncio.ensure_future(self.asr.transcribe(audio, Priority.SPECULATIVE)))

    def _speculation_budget_ms(self) -> float:
        """How long a speculative pass may take and still be over before a final needs the engine
        should it turn stale: smart mode, the long bound (a complete verdict makes it the final
        itself); silence mode, the soonest that speech resuming now could end again."""
        if self.end_of_turn.smart:
            return self.settings.turn.incomplete_timeout_ms
        return self.vad_config.onset_ms + self.vad_config.endpoint_silence_ms

    def _drop_speculative(self) -> None:
        if self._speculative:
            self._speculative[1].cancel()
            self._speculative = None

    def _take_speculative(self, end_ms: float) -> asyncio.Task | None:
        """The speculative transcript, if the utterance did not change after it was started."""
        spec, self._speculative = self._speculative, None
        if spec and abs(spec[0] - end_ms) <= SPECULATION_MATCH_MS:
            return spec[1]
        if spec:
            spec[1].cancel()
        return None

    def close(self) -> None:
        self._drop_speculative()
