"""Runs a conversation's turns one at a time.

A new turn replaces the one still running (the person went on, or barged in), and each turn is
guarded: a failure is logged, told to the client as an `error` event, and the session goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import numpy as np

from appliance.asr import Transcript as AsrTranscript
from appliance.orchestrator.session.limits import SessionEnded
from appliance.orchestrator.session.states import State, StateMachine
from appliance.orchestrator.session.turn import TurnTimes
from appliance.transport.protocol import CloseCode, ErrorEvent, Transcript

log = logging.getLogger(__name__)


class TurnRunner:
    def __init__(
        self,
        session_id: str,
        max_turns: int,
        sm: StateMachine,
        *,
        emit: Callable,
        barge_in: Callable[[], None],
        transcribe: Callable[..., Awaitable[AsrTranscript]],
        answer: Callable[[str, TurnTimes], Awaitable[None]],
    ) -> None:
        self.session_id = session_id
        self.max_turns = max_turns
        self.sm = sm
        self.emit = emit
        self.barge_in = barge_in  # stops the running turn's reply as a barge-in does
        self.transcribe = transcribe
        self.answer = answer
        self.count = 0
        self._task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, coro) -> None:
        if self.count >= self.max_turns:
            coro.close()
            raise SessionEnded(
                "max_turns",
                f"this session reached its limit of {self.max_turns} turns",
                CloseCode.MAX_TURNS,
            )
        if self.running:
            self.barge_in()
            if self.sm.state is State.BARGED_IN:
                self.sm.to(State.LISTENING)
        self.count += 1
        self._task = asyncio.ensure_future(self._guarded(coro))

    def stop(self) -> None:
        if self.running:
            self._task.cancel()
        self._task = None

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def settle(self) -> None:
        """The turn is over without a reply being spoken (or after one failed)."""
        if self.sm.state in (State.LISTENING, State.SPEAKING):
            self.sm.to(State.WAITING_FOR_INPUT)

    # --- the turns themselves ---------------------------------------------------------------

    async def spoken(self, audio: np.ndarray, speculative: asyncio.Task | None, times: TurnTimes) -> None:
        await self.transcribed(await self.transcribe(audio, speculative), times)

    async def transcribed(self, transcript: AsrTranscript, times: TurnTimes) -> None:
        times.asr_ms = transcript.asr_ms
        times.asr_queue_ms = transcript.queue_ms
        times.transcribed_at = asyncio.get_running_loop().time()
        text = transcript.text.strip()
        self.emit(Transcript(text, final=True))
        log.info("transcript session=%s asr_ms=%.0f text=%r", self.session_id, transcript.asr_ms, text[:200])
        if not text:
            self.settle()
            return
        await self.answer(text, times)

    async def typed(self, text: str) -> None:
        if self.sm.state is State.WAITING_FOR_INPUT:
            self.sm.to(State.LISTENING)
        times = TurnTimes(transcribed_at=asyncio.get_running_loop().time())
        self.emit(Transcript(text, final=True))
        await self.answer(text, times)

    async def _guarded(self, coro) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except ConnectionError:
            pass
        except Exception:
            log.exception("turn failed session=%s", self.session_id)
            self.emit(ErrorEvent("internal", "this turn failed; please try again"))
            self.settle()
