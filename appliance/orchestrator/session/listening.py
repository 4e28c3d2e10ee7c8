"""The microphone side of a conversation: VAD events become turns, with ASR started early.

Every input chunk goes through the VAD (:mod:`appliance.audio.vad`), whose bar is kept above the
echo of the appliance's own reply (:mod:`appliance.audio.echo`). A ``ProvisionalEnd`` (a short
pause) starts a *speculative* transcription of the utterance so far; if the turn then ends where
that one did, its transcript is used as it is (speech that went on makes it stale). In smart mode
the turn model judges the same pause (:mod:`.end_of_turn`) and may end the turn there; both start
a little before it, at ``[turn] lookahead_ms`` of silence, and are dropped if speech goes on. During a
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
        # work started early on the silence under way: (its voiced end, the end it saw, the verdict)
        self._early: tuple[int, int, asyncio.Task] | None = None
        self._looked_at: int | None = None  # the voiced end of the last silence the look-ahead tried

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
        self._look_ahead()
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
                early = self._take_look_ahead(event.t_ms)
                if early is not None:
                    self._spawn(self._end_if(self._pause, early))
                    continue
                self._start_speculative_asr(event.t_ms)
                if self.end_of_turn.smart:
                    verdict = self._spawn(self._turn_ends(self.detector.utterance_audio(), self._speculative))
                    self._spawn(self._end_if(self._pause, verdict))
            elif isinstance(event, vad.SpeechResumed):
                self._pause += 1
                self._drop_speculative()
            elif isinstance(event, vad.SpeechEnd):
                self._pause += 1
                self._drop_look_ahead()
                self._on_speech_end(event)
            elif isinstance(event, vad.SpeechDiscarded):
                self._pause += 1
                self._drop_look_ahead()
                self.speech_start_ms = None
                self._drop_speculative()
                self.host.speech_discarded()

    def _look_ahead(self) -> None:
        """Smart mode, listening: once a silence has lasted ``[turn] lookahead_ms`` the speculative
        transcript and the turn model start on it, so their verdict is ready when it becomes a
        pause (``pause_ms``); a voiced frame before then makes that work stale. Most such silences
        are gaps between words, so the look-ahead is only taken where the engine's measured pass
        is short enough not to hold up the next pause's own pass (see ``_look_ahead_budget_ms``)."""
        lookahead = self.settings.turn.lookahead_ms
        if not self.end_of_turn.smart or not 0 < lookahead < self.settings.turn.pause_ms:
            return
        silence = self.detector.silence_so_far()
        if self._early is not None and (silence is None or silence.voiced_end_ms != self._early[0]):
            self._drop_look_ahead(speculative=True)  # the speech went on (a pause takes it first)
        if (
            silence is None
            or silence.ms < lookahead
            or silence.voiced_end_ms == self._looked_at
            or self.sm.state is not State.LISTENING
        ):
            return
        self._looked_at = silence.voiced_end_ms  # one try per silence
        self._start_speculative_asr(silence.end_ms, self._look_ahead_budget_ms())
        if self._speculative is None:
            return  # the engine is busy or too slow: the pause does it all, as without look-ahead
        verdict = self._spawn(self._turn_ends(self.detector.utterance_audio(), self._speculative))
        self._early = (silence.voiced_end_ms, silence.end_ms, verdict)

    def _look_ahead_budget_ms(self) -> float:
        """A look-ahead pass wasted on a gap between words must be over before the speech could go
        on and pause again (a confirmed onset, then the pause): else it would hold up that pause's pass."""
        return self.vad_config.onset_ms + self.settings.turn.pause_ms

    def _take_look_ahead(self, end_ms: int) -> asyncio.Task | None:
        """At a pause: the verdict started early on the same silence, if the end it saw still holds."""
        early, self._early = self._early, None
        if early is not None and abs(early[1] - end_ms) <= SPECULATION_MATCH_MS:
            return early[2]
        if early is not None:
            early[2].cancel()
            self._drop_speculative()
        return None

    def _drop_look_ahead(self, speculative: bool = False) -> None:
        if self._early is not None:
            self._early[2].cancel()
            self._early = None
            if speculative:
                self._drop_speculative()

    async def _turn_ends(self, audio: np.ndarray, speculative: tuple[float, asyncio.Task] | None) -> bool:
        """Does the turn end at this pause: the turn model's verdict on the utterance so far, and
        (unless it is certain) the speculative transcript's check that no phrase is left hanging."""
        verdict = await self.end_of_turn.judge(audio)
        self._verdict_ms = verdict.ms
        if not verdict.complete:
            return False
        if not self.end_of_turn.needs_transcript(verdict) or speculative is None:
            return True
        task = speculative[1]
        try:
            text = (await asyncio.shield(task)).text
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # this judgement itself is cancelled
            return False  # speech went on and the pass was dropped
        except Exception:  # noqa: BLE001 (the final pass transcribes the turn: the model decides)
            return True
        if self.end_of_turn.sounds_unfinished(text):
            log.info(
                "turn goes on session=%s: the transcript stops mid-phrase text=%r",
                self.sm.session_id,
                text[-60:],
            )
            return False
        return True

    async def _end_if(self, pause: int, verdict: asyncio.Task) -> None:
        """End the turn at this pause if the verdict says so and the pause still holds."""
        try:
            ends = await verdict
        except asyncio.CancelledError:
            if verdict.cancelled() and not asyncio.current_task().cancelling():
                return  # the look-ahead was dropped
            raise
        if ends and pause == self._pause and self.detector.in_pause:
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

    def _start_speculative_asr(self, end_ms: float, budget_ms: float | None = None) -> None:
        """The utterance so far, transcribed at the speculative priority. At a pause whose verdict
        waits for the transcript check it is asked for even when the engine is busy: the check (and,
        for a complete turn, the reply) needs it, and a final pass still goes before it. Otherwise
        only when the engine is idle and one pass fits in ``budget_ms``."""
        self._drop_speculative()
        if self.sm.state in (State.SPEAKING, State.BARGED_IN):
            return
        budget = self._speculation_budget_ms() if budget_ms is None else budget_ms
        needed = budget_ms is None and self.end_of_turn.checks_transcript
        if not needed and not self.asr.worth_starting(Priority.SPECULATIVE, budget):
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
        self._drop_look_ahead()
        self._drop_speculative()
