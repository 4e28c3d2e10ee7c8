"""One conversation: a transport channel joined to VAD, ASR, the responder and a TTS worker.

Inbound audio is handled on the channel's reading task and must never wait on a model: VAD is
microseconds per frame, and everything slow (ASR, the responder, synthesis) runs in the turn
task. The parts: :mod:`.listening` (VAD and ASR), :mod:`.barge_in`, :mod:`.replying` and
:mod:`.playback` (reply text and audio), :mod:`.limits`, and :mod:`.outbox` (events to the
client). The session states and events are those of the WebSocket protocol (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from appliance.asr import AsrEngine
from appliance.config import OrchestratorSettings
from appliance.orchestrator.respond import Responder
from appliance.orchestrator.session.barge_in import BargeInControl
from appliance.orchestrator.session.end_of_turn import EndOfTurn
from appliance.orchestrator.session.limits import SessionEnded, SessionLimits
from appliance.orchestrator.session.listening import Listener
from appliance.orchestrator.session.outbox import Outbox
from appliance.orchestrator.session.playback import Playback
from appliance.orchestrator.session.replying import Replier
from appliance.orchestrator.session.states import State, StateMachine
from appliance.orchestrator.session.turn import TurnTimes
from appliance.orchestrator.session.turn_runner import TurnRunner
from appliance.orchestrator.workers import TtsLink
from appliance.transport.base import Channel
from appliance.transport.protocol import (
    AudioIn,
    Bye,
    ErrorEvent,
    Interrupt,
    Ready,
    Say,
    StateChanged,
    TextTurn,
)

log = logging.getLogger(__name__)

# Speech that begins this soon after a reply's first frame went out was not a reaction to the reply
# (hearing it and starting to talk takes longer): the person was going on with the turn it answers.
CONTINUATION_S = 0.5


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
        responder_description: str | None = None,
        turn_model=None,
    ) -> None:
        self.id = session_id
        self.channel = channel
        self.settings = settings
        self.responder_description = responder_description or responder.name  # the ready event names it
        self.tts = tts
        self.metrics = metrics
        self.outbox = Outbox(channel)
        self.sm = StateMachine(session_id, self._on_state)
        self.turn_runner = TurnRunner(
            session_id,
            settings.session.max_turns,
            self.sm,
            emit=self.outbox.emit,
            barge_in=lambda: self.barge_in.now(),
            transcribe=lambda audio, speculative: self.listening.transcribe(audio, speculative),
            answer=lambda text, times: self.replier.answer(text, times),
        )
        self.listening = Listener(
            settings,
            channel.hello.sample_rate,
            asr,
            self.sm,
            self,
            emit=self.outbox.emit,
            spawn=self._spawn,
            end_of_turn=EndOfTurn(settings.turn, turn_model),
        )
        self.playback = Playback(
            self._send_audio, settings.playback.lead_ms / 1000, self.sm, take_back=channel.take_back
        )
        self.barge_in = BargeInControl(
            session_id,
            settings,
            self.sm,
            self.playback,
            tts,
            emit=self.outbox.emit,
            spawn=self._spawn,
            stop_turn=self.turn_runner.stop,
            metrics=metrics,
        )
        self.limits = SessionLimits(settings.session)
        self.replier = Replier(
            session_id,
            responder,
            tts,
            self.playback,
            self.sm,
            emit=self.outbox.emit,
            settle=self.turn_runner.settle,
            metrics=metrics,
        )
        self._heard: tuple[np.ndarray, TurnTimes] | None = None  # a spoken turn not answered aloud yet
        self._carried: tuple[np.ndarray, TurnTimes] | None = None  # ... stopped because the person went on
        self._going_on: tuple[np.ndarray, TurnTimes] | None = None  # ... whose reply had just begun
        self._background: set[asyncio.Task] = set()

    # --- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        self.playback.start()
        self.outbox.start()
        try:  # from here on, however the session ends, _shutdown stops what was started
            await self.channel.send_event(Ready(self.id, responder=self.responder_description))
            self.sm.to(State.LISTENING)
            while True:
                message = await self.limits.receive(self.channel)
                if message is None or isinstance(message, Bye):
                    break
                if isinstance(message, AudioIn):
                    self._on_audio(message.pcm)
                elif isinstance(message, TextTurn):
                    self._start_turn(self.turn_runner.typed(message.text))
                elif isinstance(message, Say):
                    self._start_turn(self.replier.speak(message.text))
                elif isinstance(message, Interrupt):
                    await self._interrupt()
        except SessionEnded as end:
            log.info("session ending session=%s reason=%s", self.id, end.code)
            self.outbox.emit(ErrorEvent(end.code, str(end)))
            if not self.sm.terminated:
                self.sm.to(State.TERMINATED)
            await self.outbox.flush()  # the TERMINATED state reaches the client before the close
            await self.channel.close(end.close_code, str(end))
        except ConnectionError:  # the client went while a message was on its way to it
            log.info("session=%s client gone", self.id)
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        self.barge_in.cancel_timer()
        if not self.channel.closed:
            await self.outbox.flush()
        await self.turn_runner.close()
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
        self.outbox.emit(StateChanged(new.value))

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
        self._going_on = None  # of this utterance only: a stale one would join a later turn
        if self.sm.state is State.SPEAKING:
            self._going_on = self._heard if self._reply_just_began() else None
            self.barge_in.begin()
        elif self.sm.state is State.WAITING_FOR_INPUT:
            self.sm.to(State.LISTENING)
        elif self._answering_silently():
            # The person goes on before the reply is heard: no reply may start while they talk, and
            # what they say next belongs to the same turn.
            self._carried, self._heard = self._heard, None
            self.barge_in.stop_reply()

    def _reply_just_began(self) -> bool:
        sent = self._heard[1].first_sent_at if self._heard is not None else None
        return sent is not None and asyncio.get_running_loop().time() - sent < CONTINUATION_S

    def _answering_silently(self) -> bool:
        return self.sm.state is State.LISTENING and self.turn_runner.running and self._heard is not None

    def speech_ended(self) -> bool:
        if self.sm.state is State.BARGED_IN and not self.barge_in.backchannels:
            self.barge_in.confirm()
        return self.sm.state is not State.SPEAKING  # speech below the barge-in bar while speaking: no turn

    def turn_heard(self, audio, speculative: asyncio.Task | None, times: TurnTimes) -> None:
        if self.sm.state is State.BARGED_IN:  # short speech over the reply: a backchannel, or a turn?
            self._spawn(self._backchannel_or_turn(audio, times))
            return
        if self.sm.state is State.WAITING_FOR_INPUT:
            self.sm.to(State.LISTENING)
        if self._carried is not None:  # the rest of a turn whose reply was stopped before it was heard
            audio, speculative = np.concatenate([self._carried[0], audio]), None
            self._carried = None
        elif (going_on := self._take_going_on()) is not None:  # ... or had only just begun
            self._start_joined(going_on, audio, times)
            return
        self._start_turn(self.turn_runner.spoken(audio, speculative, times))
        self._heard = (audio, times)

    def _take_going_on(self) -> tuple[np.ndarray, TurnTimes] | None:
        going_on, self._going_on = self._going_on, None
        return going_on

    def _start_joined(
        self, earlier: tuple[np.ndarray, TurnTimes], audio: np.ndarray, times: TurnTimes
    ) -> None:
        """The person went on talking as the reply to their turn began: that reply is dropped, from
        the history too, and the turn is both parts as one."""
        joined = np.concatenate([earlier[0], audio])
        log.info("the person went on as the reply began session=%s: one turn of both parts", self.id)

        async def turn() -> None:
            self.replier.forget_last_exchange()  # after the stopped turn kept what was heard of it
            await self.turn_runner.spoken(joined, None, times)

        self._start_turn(turn())
        self._heard = (joined, times)

    def speech_discarded(self) -> None:
        if self.sm.state is State.BARGED_IN:
            self.barge_in.false_alarm("burst too short to be a turn")
        elif self._carried is not None and self.sm.state is State.LISTENING:  # a click, not more words
            (audio, times), self._carried = self._carried, None
            self._start_turn(self.turn_runner.spoken(audio, None, times))
            self._heard = (audio, times)

    async def _backchannel_or_turn(self, audio, times: TurnTimes) -> None:
        self.barge_in.deciding = True
        try:
            transcript = await self.listening.transcribe(audio, None)
        finally:
            self.barge_in.deciding = False
        if self.sm.state is not State.BARGED_IN:
            return
        text = transcript.text.strip()
        if not text or self.barge_in.is_backchannel(text):
            log.info("backchannel session=%s text=%r: the reply goes on", self.id, text[:80])
            self.barge_in.false_alarm("backchannel" if text else "nothing said")
            return
        self.barge_in.confirm()
        going_on = self._take_going_on()
        if going_on is not None:
            self._start_joined(going_on, audio, times)
            return
        self._start_turn(self.turn_runner.transcribed(transcript, times))

    # --- barge-in ----------------------------------------------------------------------------

    async def _interrupt(self) -> None:
        if self.sm.state in (State.SPEAKING, State.BARGED_IN):
            self.barge_in.now()
            self.sm.to(State.LISTENING)
            self.sm.to(State.WAITING_FOR_INPUT)
        elif self.turn_runner.running:
            self.barge_in.stop_reply()

    # --- turns -------------------------------------------------------------------------------

    @property
    def turns(self) -> int:
        return self.turn_runner.count

    def _start_turn(self, coro) -> None:
        self.turn_runner.start(coro)
        self._heard = None
