"""One conversation: a transport channel joined to VAD, ASR, the responder and a TTS worker.

Inbound audio is handled on the channel's reading task and must never wait on a model: VAD is
microseconds per frame, and everything slow (ASR, the responder, synthesis) runs in the turn
task. The parts: :mod:`.listening` (VAD and ASR), :mod:`.barge_in`, :mod:`.playback` (reply
audio), :mod:`.limits` and :mod:`.outbox` (events to the client); the session states are those of
the WebSocket protocol (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

from appliance.asr import AsrEngine
from appliance.config import OrchestratorSettings
from appliance.orchestrator.respond import Responder, ResponderError, Turn
from appliance.orchestrator.session.barge_in import BargeIn
from appliance.orchestrator.session.limits import SessionEnded, SessionLimits
from appliance.orchestrator.session.listening import Listener
from appliance.orchestrator.session.outbox import Outbox
from appliance.orchestrator.session.playback import Playback
from appliance.orchestrator.session.states import State, StateMachine
from appliance.orchestrator.session.turn import TurnTimes
from appliance.orchestrator.workers import ReplyStream, TtsLink, TtsUnavailable
from appliance.transport.base import AudioIn, Bye, Channel, CloseCode, Interrupt, Say, TextTurn

log = logging.getLogger(__name__)

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


class Conversation:
    def __init__(
        self, session_id: str, channel: Channel, settings: OrchestratorSettings, *, asr: AsrEngine,
        responder: Responder, tts: TtsLink, metrics=None, responder_description: str | None = None,
    ) -> None:
        self.id = session_id
        self.channel = channel
        self.settings = settings
        self.responder = responder
        self.responder_description = responder_description or responder.name
        self.tts = tts
        self.metrics = metrics
        self.outbox = Outbox(channel)
        self.sm = StateMachine(session_id, self._on_state)
        self.listening = Listener(settings, channel.hello.sample_rate, asr, self.sm, self,
                                  emit=self.outbox.emit, spawn=self._spawn)
        self.playback = Playback(self._send_audio, settings.playback.lead_ms / 1000, self.sm)
        self.barge_in = BargeIn(session_id, settings, self.sm, self.playback, tts, emit=self.outbox.emit,
                                spawn=self._spawn, stop_turn=self._stop_turn, metrics=metrics)
        self.limits = SessionLimits(settings.session)
        self.history: list[Turn] = []
        self.turns = 0
        self._turn_task: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()

    # --- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        self.playback.start()
        self.outbox.start()
        await self.channel.send_event(
            {"type": "ready", "session_id": self.id, "sample_rate": 48000, "frame_ms": 20,
             "responder": self.responder_description}
        )
        self.sm.to(State.LISTENING)
        try:
            while True:
                message = await self.limits.receive(self.channel)
                if message is None or isinstance(message, Bye):
                    break
                if isinstance(message, AudioIn):
                    self._on_audio(message.pcm)
                elif isinstance(message, TextTurn):
                    self._start_turn(self._text_turn(message.text))
                elif isinstance(message, Say):
                    self._start_turn(self._speak(message.text))
                elif isinstance(message, Interrupt):
                    await self._interrupt()
        except SessionEnded as end:
            log.info("session ending session=%s reason=%s", self.id, end.code)
            self.outbox.emit({"type": "error", "code": end.code, "message": str(end)})
            if not self.sm.terminated:
                self.sm.to(State.TERMINATED)
            await self.outbox.flush()  # the TERMINATED state reaches the client before the close
            await self.channel.close(end.close_code, str(end))
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        self.barge_in.cancel_timer()
        if not self.channel.closed:
            await self.outbox.flush()
        if self._turn_task:
            self._turn_task.cancel()
            await asyncio.gather(self._turn_task, return_exceptions=True)
        self.listening.close()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.outbox.close()
        await self.playback.close()
        await self.tts.close()
        if not self.sm.terminated:
            self.sm.state = State.TERMINATED  # the client is gone: nobody to tell
            log.info("state session=%s -> TERMINATED (client gone)", self.id)
        await self.channel.close(1000, "bye")

    def _on_state(self, old: State, new: State) -> None:
        self.listening.set_state(new)
        self.outbox.emit({"type": "state", "state": new.value})

    async def _send_audio(self, frame: bytes) -> None:
        await self.channel.send_audio(frame)
        self.listening.played(frame, asyncio.get_running_loop().time())

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # --- listening (the Listener's host) -----------------------------------------------------

    def _on_audio(self, pcm: bytes) -> None:
        self.listening.hear(pcm)
        self.barge_in.heard(self.listening)

    def speech_started(self) -> None:
        if self.sm.state is State.SPEAKING:
            self.barge_in.begin()
        elif self.sm.state is State.WAITING_FOR_INPUT:
            self.sm.to(State.LISTENING)

    def speech_ended(self) -> bool:
        if self.sm.state is State.BARGED_IN:
            self.barge_in.confirm()
        return self.sm.state is not State.SPEAKING  # speech below the barge-in bar while speaking: no turn

    def turn_heard(self, audio, speculative: asyncio.Task | None, times: TurnTimes) -> None:
        if self.sm.state is State.WAITING_FOR_INPUT:
            self.sm.to(State.LISTENING)
        self._start_turn(self._spoken_turn(audio, speculative, times))

    def speech_discarded(self) -> None:
        if self.sm.state is State.BARGED_IN:
            self.barge_in.false_alarm("burst too short to be a turn")

    # --- barge-in ----------------------------------------------------------------------------

    def _stop_turn(self) -> None:
        if self._turn_task and not self._turn_task.done():
            self._turn_task.cancel()
        self._turn_task = None

    async def _interrupt(self) -> None:
        if self.sm.state in (State.SPEAKING, State.BARGED_IN):
            self.barge_in.now()
            self.sm.to(State.LISTENING)
            self.sm.to(State.WAITING_FOR_INPUT)
        elif self._turn_task and not self._turn_task.done():
            self.barge_in.stop_reply()

    # --- turns -------------------------------------------------------------------------------

    def _start_turn(self, coro) -> None:
        limit = self.settings.session.max_turns
        if self.turns >= limit:
            coro.close()
            raise SessionEnded("max_turns", f"this session reached its limit of {limit} turns", CloseCode.MAX_TURNS)
        if self._turn_task and not self._turn_task.done():  # a new turn replaces the running one
            self.barge_in.now()
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
            self.outbox.emit({"type": "error", "code": "internal", "message": "this turn failed; please try again"})
            self._settle_after_turn()

    async def _spoken_turn(self, audio, speculative: asyncio.Task | None, times: TurnTimes) -> None:
        transcript = await self.listening.transcribe(audio, speculative)
        times.asr_ms = transcript.asr_ms
        times.transcribed_at = asyncio.get_running_loop().time()
        text = transcript.text.strip()
        self.outbox.emit({"type": "transcript", "text": text, "final": True})
        log.info("transcript session=%s asr_ms=%.0f text=%r", self.id, transcript.asr_ms, text[:200])
        if not text:
            self._settle_after_turn()
            return
        await self._answer(text, times)

    async def _text_turn(self, text: str) -> None:
        if self.sm.state is State.WAITING_FOR_INPUT:
            self.sm.to(State.LISTENING)
        times = TurnTimes(transcribed_at=asyncio.get_running_loop().time())
        self.outbox.emit({"type": "transcript", "text": text, "final": True})
        await self._answer(text, times)

    async def _answer(self, text: str, times: TurnTimes) -> None:
        self.history.append(Turn("user", text))
        reply = self.playback.reply(self.tts)
        times.responder_started = asyncio.get_running_loop().time()
        pump = asyncio.ensure_future(self.playback.pump(reply, times))
        said: Turn | None = None
        try:
            spoken = await self._reply(text, reply, pump, times)
            if spoken:
                said = Turn("assistant", " ".join(spoken))
                self.history.append(said)
            await self._finish_reply(reply, pump)
        except asyncio.CancelledError:  # barge-in or interrupt: remember only what was heard
            self._keep_heard(reply, said)
            raise
        self.outbox.emit(times.message())
        if self.metrics:
            self.metrics.observe_turn(times)

    def _keep_heard(self, reply: ReplyStream, said: Turn | None) -> None:
        """The assistant's turn in the history becomes the text voiced by the last frame played
        (so the model never believes it said what nobody heard); nothing heard, no turn."""
        heard = reply.text[: self.playback.heard_offset(reply)].strip()
        self.history = [turn for turn in self.history if turn is not said]
        if heard:
            self.history.append(Turn("assistant", heard))
        log.info("reply stopped session=%s heard %d of %d chars", self.id, len(heard), len(reply.text.strip()))

    async def _reply(self, text: str, reply: ReplyStream, pump: asyncio.Future, times: TurnTimes) -> list[str]:
        """Feed the responder's reply to the worker; the sentences said go to the client as they complete."""
        loop = asyncio.get_running_loop()
        spoken: list[str] = []
        pending = ""
        try:
            async with contextlib.aclosing(self.responder.respond(text, self.history[:-1])) as pieces:
                async for piece in pieces:
                    if times.first_text_at is None:
                        times.first_text_at = loop.time()
                    reply.feed(piece)
                    *done, pending = _SENTENCE_END.split(pending + piece)
                    spoken += done
                    for sentence in done:
                        self.outbox.emit({"type": "reply", "text": sentence})
            if pending.strip():
                spoken.append(pending.strip())
                self.outbox.emit({"type": "reply", "text": pending.strip()})
            reply.finish()
        except ResponderError as exc:
            reply.finish()
            log.warning("responder failed session=%s code=%s %s", self.id, exc.code, exc)
            self.outbox.emit({"type": "error", "code": exc.code, "message": str(exc)})
        except BaseException:
            reply.cancel()
            pump.cancel()
            raise
        return spoken

    async def _speak(self, text: str) -> None:
        times = TurnTimes(transcribed_at=asyncio.get_running_loop().time())
        reply = self.playback.reply(self.tts)
        times.responder_started = times.first_text_at = asyncio.get_running_loop().time()
        reply.feed(text)
        reply.finish()
        self.outbox.emit({"type": "reply", "text": text})
        await self._finish_reply(reply, asyncio.ensure_future(self.playback.pump(reply, times)))

    async def _finish_reply(self, reply: ReplyStream, pump: asyncio.Future) -> None:
        """Wait until the reply's audio has been sent, then say so and settle the state."""
        await self.playback.finish(reply, pump, self._tts_failed)
        if self.sm.state is State.SPEAKING:
            self.outbox.emit({"type": "reply_end"})
        self._settle_after_turn()

    def _tts_failed(self, exc: TtsUnavailable) -> None:
        log.error("reply failed session=%s: %s", self.id, exc)
        self.outbox.emit({"type": "error", "code": "tts_unavailable", "message": str(exc)})
        if self.metrics:
            self.metrics.errors.labels("tts_unavailable").inc()

    def _settle_after_turn(self) -> None:
        if self.sm.state in (State.LISTENING, State.SPEAKING):
            self.sm.to(State.WAITING_FOR_INPUT)
