"""Barge-in: the user speaks while the assistant does.

  speech onset while SPEAKING → hold the pacer (nothing queued leaks out) and PAUSE the worker;
  the speech is confirmed as a turn (lasts min_speech_ms) → STOP, drop the reply, new turn;
  it was a false alarm (discarded burst, or nothing confirmed in barge_in_confirm_ms) → RESUME.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from appliance.config import OrchestratorSettings
from appliance.orchestrator.session.listening import Listener
from appliance.orchestrator.session.playback import Playback
from appliance.orchestrator.session.states import State, StateMachine
from appliance.orchestrator.workers import TtsLink
from appliance.transport.protocol import BargeIn, ServerEvent
from appliance.tts.client import Control

log = logging.getLogger(__name__)


class BargeInControl:
    def __init__(
        self, session_id: str, settings: OrchestratorSettings, sm: StateMachine, playback: Playback, tts: TtsLink, *,
        emit: Callable[[ServerEvent], None], spawn: Callable[..., asyncio.Task], stop_turn: Callable[[], None], metrics=None,
    ) -> None:
        self.session_id = session_id
        self.settings = settings
        self.sm = sm
        self.playback = playback
        self.tts = tts
        self._emit = emit
        self._spawn = spawn
        self._stop_turn = stop_turn
        self.metrics = metrics
        self._timer: asyncio.TimerHandle | None = None

    def heard(self, listening: Listener) -> None:
        """After each input chunk: hold or release the pacer, confirm a barge-in that became a turn."""
        if self.sm.state is State.SPEAKING:
            # Stop feeding the client at the first voiced frame above the bar, before the onset
            # is confirmed: a pacer hold costs nothing and is undone if the run fizzles out.
            if listening.onset_pending:
                self.playback.hold()
            elif self.playback.held:
                self.playback.release()
        spoken = listening.spoken_ms()
        if self.sm.state is State.BARGED_IN and spoken is not None and spoken >= self.settings.vad.min_speech_ms:
            self.confirm()

    def begin(self) -> None:
        self.playback.hold()
        self._spawn(self.tts.control(Control.PAUSE))
        self.sm.to(State.BARGED_IN)
        self._emit(BargeIn())
        if self.metrics:
            self.metrics.barge_ins.inc()
        self._timer = asyncio.get_running_loop().call_later(
            self.settings.playback.barge_in_confirm_ms / 1000, self.false_alarm, "no turn confirmed"
        )

    def cancel_timer(self) -> None:
        if self._timer:
            self._timer.cancel()
            self._timer = None

    def confirm(self) -> None:
        self.cancel_timer()
        log.info("barge-in confirmed session=%s", self.session_id)
        self.stop_reply()
        self.sm.to(State.LISTENING)

    def false_alarm(self, why: str) -> None:
        self.cancel_timer()
        if self.sm.state is not State.BARGED_IN:
            return
        log.info("barge-in false alarm session=%s (%s): resuming", self.session_id, why)
        if self.metrics:
            self.metrics.false_barge_ins.inc()
        self._spawn(self.tts.control(Control.RESUME))
        self.sm.to(State.SPEAKING)
        self.playback.release()

    def stop_reply(self) -> None:
        self.playback.stop()
        self._stop_turn()
        self._spawn(self.tts.control(Control.STOP))

    def now(self) -> None:
        """Stop the reply under way at once (an interrupt, or a turn that replaces it)."""
        if self.sm.state is State.SPEAKING:
            self.sm.to(State.BARGED_IN)
            self._emit(BargeIn())
        self.cancel_timer()
        self.stop_reply()
