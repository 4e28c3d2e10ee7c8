"""A turn's reply: the responder's text streamed to the TTS worker as it is written, shown to the
client a sentence at a time (by the rule the worker voices it: :mod:`appliance.sentences`), and
played out through :mod:`.playback`; then the turn's metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from appliance.orchestrator.respond import Responder, ResponderError, Turn
from appliance.orchestrator.respond.spoken_text import SpokenText
from appliance.orchestrator.session.playback import Playback
from appliance.orchestrator.session.states import State, StateMachine
from appliance.orchestrator.session.turn import TurnTimes
from appliance.orchestrator.workers import ReplyStream, TtsLink, TtsUnavailable
from appliance.sentences import split_sentences
from appliance.transport.protocol import ErrorEvent, ReplyEnd, ReplyText, ServerEvent

log = logging.getLogger(__name__)


class Replier:
    def __init__(
        self,
        session_id: str,
        responder: Responder,
        tts: TtsLink,
        playback: Playback,
        sm: StateMachine,
        *,
        emit: Callable[[ServerEvent], None],
        settle: Callable[[], None],
        metrics=None,
    ) -> None:
        self.id = session_id
        self.responder = responder
        self.tts = tts
        self.playback = playback
        self.sm = sm
        self._emit = emit
        self._settle = settle  # the turn is over: the session waits for the next one
        self.metrics = metrics
        self.history: list[Turn] = []

    async def answer(self, text: str, times: TurnTimes) -> None:
        self.history.append(Turn("user", text))
        reply = self.playback.reply(self.tts)
        times.responder_started = asyncio.get_running_loop().time()
        pump = asyncio.ensure_future(self.playback.pump(reply, times))
        said: Turn | None = None
        try:
            spoken = await self._write(text, reply, pump, times)
            if spoken:
                said = Turn("assistant", " ".join(spoken))
                self.history.append(said)
            await self._finish(reply, pump)
        except asyncio.CancelledError:  # barge-in or interrupt: remember only what was heard
            self._keep_heard(reply, said)
            raise
        self._emit(times.event())
        if self.metrics:
            self.metrics.observe_turn(times)

    def forget_last_exchange(self) -> None:
        """The last user turn and what was heard of its reply leave the history (the person was not
        done: the turn comes again, whole)."""
        while self.history and self.history[-1].role == "assistant":
            self.history.pop()
        if self.history:
            self.history.pop()

    def _keep_heard(self, reply: ReplyStream, said: Turn | None) -> None:
        """The assistant's turn in the history becomes the text voiced by the last frame played
        (so the model never believes it said what nobody heard); nothing heard, no turn."""
        heard = reply.text[: self.playback.heard_offset(reply)].strip()
        self.history = [turn for turn in self.history if turn is not said]
        if heard:
            self.history.append(Turn("assistant", heard))
        log.info(
            "reply stopped session=%s heard %d of %d chars", self.id, len(heard), len(reply.text.strip())
        )

    async def _write(
        self, text: str, reply: ReplyStream, pump: asyncio.Future, times: TurnTimes
    ) -> list[str]:
        """The responder's words to the worker as they come; the sentences said, as the client saw them."""
        loop = asyncio.get_running_loop()
        spoken: list[str] = []
        pending = ""
        said = SpokenText()  # the voice and the page get the words, not the model's markdown
        try:
            async with contextlib.aclosing(self.responder.respond(text, self.history[:-1])) as pieces:
                async for written in pieces:
                    if times.first_text_at is None:
                        times.first_text_at = loop.time()
                    piece = said.feed(written)
                    if piece:
                        reply.feed(piece)
                    done, pending = split_sentences(pending + piece)
                    self._show(done, spoken)
            if rest := said.flush():
                reply.feed(rest)
            self._show(split_sentences(pending + rest, final=True)[0], spoken)
            reply.finish()
        except ResponderError as exc:
            reply.finish()
            log.warning("responder failed session=%s code=%s %s", self.id, exc.code, exc)
            self._emit(ErrorEvent(exc.code, str(exc)))
        except BaseException:
            reply.cancel()
            pump.cancel()
            raise
        return spoken

    def _show(self, sentences: list[str], spoken: list[str]) -> None:
        """Reply text for the client, a sentence at a time (as the worker voices it)."""
        for sentence in sentences:
            spoken.append(sentence)
            self._emit(ReplyText(sentence))

    async def speak(self, text: str) -> None:
        times = TurnTimes(transcribed_at=asyncio.get_running_loop().time())
        reply = self.playback.reply(self.tts)
        times.responder_started = times.first_text_at = asyncio.get_running_loop().time()
        reply.feed(text)
        reply.finish()
        self._emit(ReplyText(text))
        await self._finish(reply, asyncio.ensure_future(self.playback.pump(reply, times)))

    async def _finish(self, reply: ReplyStream, pump: asyncio.Future) -> None:
        """Wait until the reply's audio has been sent, then say so and settle the state."""
        await self.playback.finish(reply, pump, self._tts_failed)
        if self.sm.state is State.SPEAKING:
            self._emit(ReplyEnd())
        self._settle()

    def _tts_failed(self, exc: TtsUnavailable) -> None:
        log.error("reply failed session=%s: %s", self.id, exc)
        self._emit(ErrorEvent("tts_unavailable", str(exc)))
        if self.metrics:
            self.metrics.errors.labels("tts_unavailable").inc()
