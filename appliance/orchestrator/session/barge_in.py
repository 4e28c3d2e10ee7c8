"""Barge-in: the user speaks while the assistant does.

  speech onset while SPEAKING → hold the pacer (nothing queued leaks out) and PAUSE the worker;
  the speech is confirmed as a turn (lasts min_speech_ms) → STOP, drop the reply, new turn;
  it was a false alarm (discarded burst, or nothing confirmed in barge_in_confirm_ms) → RESUME.

With ``[turn] backchannels`` on, speech over a reply is confirmed only once it outlasts
``backchannel_max_ms``; shorter speech is transcribed when it ends, and a transcript made only of
listener words ("mm-hm", "yeah", "okay", "right": ``backchannel_words``) RESUMEs the reply where it
paused, while anything else ("wait, stop") STOPs it and becomes the new turn.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable

from appliance.config import OrchestratorSettings
from appliance.orchestrator.session.listening import Listener
from appliance.orchestrator.session.playback import Playback
from appliance.orchestrator.session.states import State, StateMachine
from appliance.orchestrator.workers import TtsLink
from appliance.transport.protocol import BargeIn, ServerEvent
from appliance.tts.client import Control

log = logging.getLogger(__name__)

_WORD = re.compile(r"[a-z']+")


def _squash(phrase: str) -> str:
    return " ".join(_WORD.findall(phrase.lower().replace("-", "")))


def is_backchannel(text: str, words: Iterable[str]) -> bool:
    """Is ``text`` only listener words (each of ``words`` a word or phrase; case, punctuation and
    hyphens aside; "mm-hmm" and "mhm" also match "mm-hm"), with nothing else said?"""
    phrases = {_squash(w) for w in words} - {""}
    phrases |= {re.sub(r"(.)\1+", r"\1", p) for p in phrases}  # mmhmm ~ mhm ~ mm-hm
    tokens = _squash(text).split()
    if not tokens:
        return False
    i = 0
    while i < len(tokens):
        for n in (3, 2, 1):
            piece = " ".join(tokens[i : i + n])
            if len(tokens) - i >= n and (piece in phrases or re.sub(r"(.)\1+", r"\1", piece) in phrases):
                i += n
                break
        else:
            return False
    return True


class BargeInControl:
    def __init__(
        self,
        session_id: str,
        settings: OrchestratorSettings,
        sm: StateMachine,
        playback: Playback,
        tts: TtsLink,
        *,
        emit: Callable[[ServerEvent], None],
        spawn: Callable[..., asyncio.Task],
        stop_turn: Callable[[], None],
        metrics=None,
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
        self.deciding = False  # a short utterance over the reply is being transcribed: backchannel?
        self._speech_on = False

    @property
    def backchannels(self) -> bool:
        return self.settings.turn.backchannels

    def is_backchannel(self, text: str) -> bool:
        return self.backchannels and is_backchannel(text, self.settings.turn.backchannel_words)

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
        self._speech_on = spoken is not None
        if self.backchannels:  # only speech longer than a backchannel is an interruption before it ends
            spoken, confirm_ms = listening.voiced_ms(), self.settings.turn.backchannel_max_ms
        else:
            confirm_ms = self.settings.vad.min_speech_ms
        if self.sm.state is State.BARGED_IN and spoken is not None and spoken >= confirm_ms:
            self.confirm()

    def begin(self) -> None:
        self.playback.hold()
        self._spawn(self.tts.control(Control.PAUSE))
        self.sm.to(State.BARGED_IN)
        self._emit(BargeIn())
        if self.metrics:
            self.metrics.barge_ins.inc()
        self._arm()

    def _arm(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(
            self.settings.playback.barge_in_confirm_ms / 1000, self._timeout
        )

    def _timeout(self) -> None:
        if self.backchannels and (self.deciding or self._speech_on):
            self._arm()  # the speech is still going on, or being judged
        else:
            self.false_alarm("no turn confirmed")

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
