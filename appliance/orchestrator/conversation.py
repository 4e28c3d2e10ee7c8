"""One conversation: a transport channel joined to VAD, ASR, the responder and a TTS worker.

Inbound audio is handled on the channel's reading task and must never wait on a model: VAD is
microseconds per frame, and everything slow (ASR, the responder, synthesis) runs in the turn
task. Barge-in semantics (DESIGN.md, issue 3):
  speech onset while SPEAKING → hold the pacer (nothing queued leaks out) and PAUSE the worker;
  the speech is confirmed as a turn (lasts min_speech_ms) → STOP, drop the reply, new turn;
  it was a false alarm (discarded burst, or nothing confirmed in barge_in_confirm_ms) → RESUME.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time

from appliance.asr import AsrEngine, Transcript
from appliance.config import OrchestratorSettings
from appliance.orchestrator import vad as vadlib
from appliance.orchestrator.echo import EchoEstimate
from appliance.orchestrator.pacer import Pacer
from appliance.orchestrator.responder import Responder, ResponderError, Turn
from appliance.orchestrator.states import State, StateMachine
from appliance.orchestrator.timeline import InputTimeline
from appliance.orchestrator.tts_link import TtsLink, TtsUnavailable
from appliance.orchestrator.turn import TurnTimes
from appliance.transport.base import AudioIn, Bye, Channel, CloseCode, Interrupt, Say, TextTurn

log = logging.getLogger(__name__)

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


class SessionEnded(Exception):
    def __init__(self, code: str, message: str, close_code: int) -> None:
        super().__init__(message)
        self.code = code
        self.close_code = close_code


class Conversation:
    def __init__(
        self,
        session_id: str,
        channel: Channel,
        settings: OrchestratorSettings,
        *,
        asr: AsrEngine,
        responder: Responder,
        tts: TtsLink,
        metrics=None,
    ) -> None:
        self.id = session_id
        self.channel = channel
        self.settings = settings
        self.asr = asr
        self.responder = responder
        self.tts = tts
        self.metrics = metrics
        self.sm = StateMachine(session_id, self._on_state)
        vad = settings.vad.model_dump(exclude={"echo_return_loss_db"})
        self.detector = vadlib.SpeechDetector(vadlib.VadConfig(**vad), channel.hello.sample_rate)
        self.echo = EchoEstimate(settings.vad.echo_return_loss_db)
        self.timeline = InputTimeline()
        self.pacer = Pacer(self._send_audio, settings.playback.lead_ms / 1000)
        self.history: list[Turn] = []
        self.turns = 0
        self._turn_task: asyncio.Task | None = None
        self._speculative: tuple[float, asyncio.Task] | None = None  # (utterance end ms, ASR task)
        self._partial: asyncio.Task | None = None
        self._partial_at_ms = 0.0  # utterance length at the last partial transcript
        self._speech_start_ms: float | None = None
        self._barge_timer: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task] = set()
        self._outbox: asyncio.Queue[dict] = asyncio.Queue()
        self._started = time.monotonic()
        self._last_activity = time.monotonic()

    # --- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        self.pacer.start()
        self._spawn(self._send_events())
        await self.channel.send_event(
            {"type": "ready", "session_id": self.id, "sample_rate": 48000, "frame_ms": 20}
        )
        self.sm.to(State.LISTENING)
        try:
            while True:
                message = await self._receive_with_limits()
                if message is None or isinstance(message, Bye):
                    break
                self._last_activity = time.monotonic()
                if isinstance(message, AudioIn):
                    self._on_audio(message.pcm)
                elif isinstance(message, TextTurn):
                    self._start_turn(self._text_turn(message.text))
                elif isinstance(message, Say):
                    self._start_turn(self._speak(message.text, None))
                elif isinstance(message, Interrupt):
                    await self._interrupt()
        except SessionEnded as end:
            log.info("session ending session=%s reason=%s", self.id, end.code)
            self._emit({"type": "error", "code": end.code, "message": str(end)})
            self._terminate()
            await self._flush_events()  # the TERMINATED state reaches the client before the close
            await self.channel.close(end.close_code, str(end))
        finally:
            await self._shutdown()

    async def _receive_with_limits(self):
        s = self.settings.session
        idle_left = s.idle_timeout_s - (time.monotonic() - self._last_activity)
        total_left = s.max_duration_s - (time.monotonic() - self._started)
        if total_left <= 0:
            raise SessionEnded("max_duration", f"this session reached its maximum duration of {s.max_duration_s:.0f} s", CloseCode.MAX_DURATION)
        try:
            return await asyncio.wait_for(self.channel.receive(), max(0.01, min(idle_left, total_left)))
        except asyncio.TimeoutError:
            if time.monotonic() - self._started >= s.max_duration_s:
                raise SessionEnded("max_duration", f"this session reached its maximum duration of {s.max_duration_s:.0f} s", CloseCode.MAX_DURATION) from None
            raise SessionEnded("idle_timeout", f"no input for {s.idle_timeout_s:.0f} s; session closed", CloseCode.IDLE_TIMEOUT) from None

    def _terminate(self) -> None:
        if not self.sm.terminated:
            self.sm.to(State.TERMINATED)

    async def _shutdown(self) -> None:
        self._cancel_barge_timer()
        if not self.channel.closed:
            await self._flush_events()
        if self._turn_task:
            self._turn_task.cancel()
            await asyncio.gather(self._turn_task, return_exceptions=True)
        if self._speculative:
            self._speculative[1].cancel()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.pacer.close()
        await self.tts.close()
        if not self.sm.terminated:
            self.sm.state = State.TERMINATED  # the client is gone: nobody to tell
            log.info("state session=%s -> TERMINATED (client gone)", self.id)
        await self.channel.close(1000, "bye")

    # --- outbound ----------------------------------------------------------------------------

    def _on_state(self, old: State, new: State) -> None:
        mode = {State.SPEAKING: "speaking", State.BARGED_IN: "barged_in"}.get(new, "listening")
        self.detector.set_mode(mode)
        self._emit({"type": "state", "state": new.value})

    def _emit(self, event: dict) -> None:
        """Queue an event for the client. One sender keeps them in order, and inbound handling
        never waits on the client."""
        self._outbox.put_nowait(event)

    async def _send_events(self) -> None:
        while True:
            event = await self._outbox.get()
            try:
                await self.channel.send_event(event)
            except ConnectionError:
                pass
            finally:
                self._outbox.task_done()

    async def _flush_events(self, timeout: float = 1.0) -> None:
        try:
            await asyncio.wait_for(self._outbox.join(), timeout)
        except asyncio.TimeoutError:
            pass

    async def _send_audio(self, frame: bytes) -> None:
        await self.channel.send_audio(frame)
        self.echo.played(frame, asyncio.get_running_loop().time())

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # --- listening ---------------------------------------------------------------------------

    def _on_audio(self, pcm: bytes) -> None:
        now = asyncio.get_running_loop().time()
        self.timeline.add(len(pcm) / 2 / self.channel.hello.sample_rate * 1000, now)
        self.detector.set_echo_level(self.echo.level_db(now))
        for event in self.detector.process(pcm):
            if isinstance(event, vadlib.SpeechStart):
                self._on_speech_start(event)
            elif isinstance(event, vadlib.ProvisionalEnd):
                self._start_speculative_asr(event.t_ms)
            elif isinstance(event, vadlib.SpeechResumed):
                self._drop_speculative()
            elif isinstance(event, vadlib.SpeechEnd):
                self._on_speech_end(event)
            elif isinstance(event, vadlib.SpeechDiscarded):
                self._speech_start_ms = None
                self._drop_speculative()
                if self.sm.state is State.BARGED_IN:
                    self._resume_after_false_alarm("burst too short to be a turn")
        self._maybe_partial_transcript()
        if self.sm.state is State.SPEAKING:
            # Stop feeding the client at the first voiced frame above the bar, before the onset
            # is confirmed: a pacer hold costs nothing and is undone if the run fizzles out.
            if self.detector.onset_pending:
                self.pacer.hold()
            elif self.pacer.held:
                self.pacer.release()
        if (
            self.sm.state is State.BARGED_IN
            and self._speech_start_ms is not None
            and self.timeline.position_ms - self._speech_start_ms >= self.settings.vad.min_speech_ms
        ):
            self._confirm_barge_in()

    def _on_speech_start(self, event) -> None:
        self._speech_start_ms = event.t_ms
        self._partial_at_ms = 0.0
        self._emit({"type": "vad", "event": "speech_start"})
        if self.sm.state is State.SPEAKING:
            self._begin_barge_in()
        elif self.sm.state is State.WAITING_FOR_INPUT:
            self.sm.to(State.LISTENING)

    def _on_speech_end(self, event) -> None:
        self._speech_start_ms = None
        self._emit({"type": "vad", "event": "speech_end"})
        if self.sm.state is State.BARGED_IN:
            self._confirm_barge_in()
        elif self.sm.state is State.SPEAKING:
            return  # speech below the barge-in bar while speaking: not a turn
        times = TurnTimes(speech_end_arrival=self.timeline.arrival_of(event.t_ms), endpoint_at=asyncio.get_running_loop().time())
        speculative = self._take_speculative(event.t_ms)
        if self.sm.state is State.WAITING_FOR_INPUT:
            self.sm.to(State.LISTENING)
        self._start_turn(self._spoken_turn(event.audio, speculative, times))

    def _maybe_partial_transcript(self) -> None:
        """During a long turn, a `transcript` with final: false every partial_interval_ms."""
        interval = self.settings.asr.partial_interval_ms
        if not interval or self._speech_start_ms is None or self.sm.state is not State.LISTENING:
            return
        spoken = self.timeline.position_ms - self._speech_start_ms
        busy = (self._partial and not self._partial.done()) or self._speculative is not None
        if spoken - self._partial_at_ms < interval or busy:
            return
        self._partial_at_ms = spoken
        self._partial = self._spawn(self._partial_transcript(self.detector.utterance_audio()))

    async def _partial_transcript(self, audio) -> None:
        transcript = await self.asr.transcribe(audio, partial=True)
        if self._speech_start_ms is not None and transcript.text.strip():
            self._emit({"type": "transcript", "text": transcript.text.strip(), "final": False})

    def _start_speculative_asr(self, t_ms: float) -> None:
        self._drop_speculative()
        if self.sm.state in (State.SPEAKING, State.BARGED_IN):
            return
        audio = self.detector.utterance_audio()
        self._speculative = (t_ms, asyncio.ensure_future(self.asr.transcribe(audio)))

    def _drop_speculative(self) -> None:
        if self._speculative:
            self._speculative[1].cancel()
            self._speculative = None

    def _take_speculative(self, end_ms: float) -> asyncio.Task | None:
        """The speculative transcript, if the utterance did not change after it was started."""
        spec, self._speculative = self._speculative, None
        if spec and abs(spec[0] - end_ms) <= 40:
            return spec[1]
        if spec:
            spec[1].cancel()
        return None

    # --- barge-in ----------------------------------------------------------------------------

    def _begin_barge_in(self) -> None:
        self.pacer.hold()
        self._spawn(self.tts.control("pause"))
        self.sm.to(State.BARGED_IN)
        self._emit({"type": "barge_in"})
        if self.metrics:
            self.metrics.barge_ins.inc()
        loop = asyncio.get_running_loop()
        self._barge_timer = loop.call_later(
            self.settings.playback.barge_in_confirm_ms / 1000, self._resume_after_false_alarm, "no turn confirmed"
        )

    def _cancel_barge_timer(self) -> None:
        if self._barge_timer:
            self._barge_timer.cancel()
            self._barge_timer = None

    def _confirm_barge_in(self) -> None:
        self._cancel_barge_timer()
        log.info("barge-in confirmed session=%s", self.id)
        self._stop_reply()
        self.sm.to(State.LISTENING)

    def _resume_after_false_alarm(self, why: str) -> None:
        self._cancel_barge_timer()
        if self.sm.state is not State.BARGED_IN:
            return
        log.info("barge-in false alarm session=%s (%s): resuming", self.id, why)
        if self.metrics:
            self.metrics.false_barge_ins.inc()
        self._spawn(self.tts.control("resume"))
        self.sm.to(State.SPEAKING)
        self.pacer.release()

    def _stop_reply(self) -> None:
        self.pacer.hold()
        self.pacer.clear()
        if self._turn_task and not self._turn_task.done():
            self._turn_task.cancel()
        self._turn_task = None
        self._spawn(self.tts.control("stop"))

    async def _interrupt(self) -> None:
        if self.sm.state in (State.SPEAKING, State.BARGED_IN):
            if self.sm.state is State.SPEAKING:
                self.sm.to(State.BARGED_IN)
                self._emit({"type": "barge_in"})
            self._cancel_barge_timer()
            self._stop_reply()
            self.sm.to(State.LISTENING)
            self.sm.to(State.WAITING_FOR_INPUT)
        elif self._turn_task and not self._turn_task.done():
            self._stop_reply()

    # --- turns -------------------------------------------------------------------------------

    def _start_turn(self, coro) -> None:
        limit = self.settings.session.max_turns
        if self.turns >= limit:
            coro.close()
            raise SessionEnded("max_turns", f"this session reached its limit of {limit} turns", CloseCode.MAX_TURNS)
        if self._turn_task and not self._turn_task.done():  # a new turn replaces the running one
            if self.sm.state is State.SPEAKING:
                self.sm.to(State.BARGED_IN)
                self._emit({"type": "barge_in"})
            self._cancel_barge_timer()
            self._stop_reply()
            if self.sm.state is State.BARGED_IN:
                self.sm.to(State.LISTENING)
        self.turns += 1
        self._turn_task = asyncio.ensure_future(self._guarded(coro))

    async def _guarded(self, coro) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except ConnectionError:
            pass
        except Exception:
            log.exception("turn failed session=%s", self.id)
            self._emit({"type": "error", "code": "internal", "message": "this turn failed; please try again"})
            self._settle_after_turn()

    async def _spoken_turn(self, audio, speculative: asyncio.Task | None, times: TurnTimes) -> None:
        transcript: Transcript | None = None
        if speculative is not None:
            try:
                transcript = await speculative
            except asyncio.CancelledError:
                transcript = None
        if transcript is None:
            transcript = await self.asr.transcribe(audio)
        times.asr_ms = transcript.asr_ms
        times.transcribed_at = asyncio.get_running_loop().time()
        text = transcript.text.strip()
        self._emit({"type": "transcript", "text": text, "final": True})
        log.info("transcript session=%s asr_ms=%.0f text=%r", self.id, transcript.asr_ms, text[:200])
        if not text:
            self._settle_after_turn()
            return
        await self._answer(text, times)

    async def _text_turn(self, text: str) -> None:
        if self.sm.state is State.WAITING_FOR_INPUT:
            self.sm.to(State.LISTENING)
        times = TurnTimes(transcribed_at=asyncio.get_running_loop().time())
        self._emit({"type": "transcript", "text": text, "final": True})
        await self._answer(text, times)

    async def _answer(self, text: str, times: TurnTimes) -> None:
        self.history.append(Turn("user", text))
        reply = self.tts.reply()
        times.responder_started = asyncio.get_running_loop().time()
        spoken: list[str] = []
        pending = ""
        pump = asyncio.ensure_future(self._pump(reply, times))
        try:
            async with contextlib.aclosing(self.responder.respond(text, self.history[:-1])) as pieces:
                async for piece in pieces:
                    if times.first_text_at is None:
                        times.first_text_at = asyncio.get_running_loop().time()
                    reply.feed(piece)
                    pending += piece
                    *done, pending = _SENTENCE_END.split(pending)
                    for sentence in done:
                        spoken.append(sentence)
                        self._emit({"type": "reply", "text": sentence})
            if pending.strip():
                spoken.append(pending.strip())
                self._emit({"type": "reply", "text": pending.strip()})
            reply.finish()
        except ResponderError as exc:
            reply.finish()
            log.warning("responder failed session=%s code=%s %s", self.id, exc.code, exc)
            self._emit({"type": "error", "code": exc.code, "message": str(exc)})
        except BaseException:
            reply.cancel()
            pump.cancel()
            raise
        if spoken:
            self.history.append(Turn("assistant", " ".join(spoken)))
        await self._finish_reply(reply, pump)
        self._emit(times.message())
        if self.metrics:
            self.metrics.observe_turn(times)

    async def _speak(self, text: str, times: TurnTimes | None) -> None:
        times = times or TurnTimes(transcribed_at=asyncio.get_running_loop().time())
        reply = self.tts.reply()
        times.responder_started = times.first_text_at = asyncio.get_running_loop().time()
        reply.feed(text)
        reply.finish()
        self._emit({"type": "reply", "text": text})
        await self._finish_reply(reply, asyncio.ensure_future(self._pump(reply, times)))

    async def _finish_reply(self, reply, pump: asyncio.Future) -> None:
        """Wait until the reply's audio has been sent, then say so and settle the state."""
        try:
            await pump
        except TtsUnavailable as exc:  # failover found no worker: the reply ends with what was voiced
            log.error("reply failed session=%s: %s", self.id, exc)
            self._emit({"type": "error", "code": "tts_unavailable", "message": str(exc)})
            if self.metrics:
                self.metrics.errors.labels("tts_unavailable").inc()
        finally:
            reply.cancel()
            pump.cancel()
        await self.pacer.drained()
        if self.sm.state is State.SPEAKING:
            self._emit({"type": "reply_end"})
        self._settle_after_turn()

    async def _pump(self, reply, times: TurnTimes) -> None:
        """Worker frames → the pacer; the first one switches the session to SPEAKING."""
        loop = asyncio.get_running_loop()
        self.pacer.clear()  # nothing of an earlier, stopped reply may play before this one
        self.pacer.release()
        reply.buffered = lambda: self.pacer.queued * 0.02 + self.pacer.playout_remaining()
        reply.on_failover = self.pacer.drop_last  # an unfinished segment is voiced again from its start
        async for frame in reply.frames():
            if times.first_frame_at is None:
                times.first_frame_at = loop.time()
                if self.sm.state in (State.LISTENING, State.WAITING_FOR_INPUT):
                    self.sm.to(State.SPEAKING)
                self.pacer.on_next_send(lambda: setattr(times, "first_sent_at", loop.time()))
            if self.sm.state not in (State.SPEAKING, State.BARGED_IN):
                return  # the reply was stopped
            self.pacer.push(frame)

    def _settle_after_turn(self) -> None:
        if self.sm.state in (State.LISTENING, State.SPEAKING):
            self.sm.to(State.WAITING_FOR_INPUT)
