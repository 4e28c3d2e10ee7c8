"""The speaker side of a conversation: a reply's frames, from its worker stream through the pacer
to the client. The first frame of a reply switches the session to SPEAKING; barge-in holds the
pacer (nothing queued leaks out) and a stopped reply's frames are dropped."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from appliance.audio import FRAME_MS
from appliance.orchestrator.session.pacer import Pacer
from appliance.orchestrator.session.states import State, StateMachine
from appliance.orchestrator.session.turn import TurnTimes
from appliance.orchestrator.workers import ReplyStream, TtsLink, TtsUnavailable


class Playback:
    def __init__(
        self,
        send: Callable[[bytes], Awaitable[None]],
        lead_s: float,
        sm: StateMachine,
        take_back: Callable[[], int] | None = None,
    ) -> None:
        self.pacer = Pacer(send, lead_s, take_back)
        self.sm = sm

    def start(self) -> None:
        self.pacer.start()

    async def close(self) -> None:
        await self.pacer.close()

    @property
    def held(self) -> bool:
        return self.pacer.held

    def hold(self) -> None:
        self.pacer.hold()

    def release(self) -> None:
        self.pacer.release()

    def stop(self) -> None:
        """Hold and drop what is queued: the reply was stopped."""
        self.pacer.hold()
        self.pacer.clear()

    def reply(self, link: TtsLink) -> ReplyStream:
        """A new reply on ``link`` that knows how much audio is still held for the client, and
        drops the queued frames of a segment that a failover voices again from its start."""
        return link.reply(buffered=self._buffered_s, on_failover=self.pacer.drop_last)

    def heard_offset(self, reply: ReplyStream) -> int:
        """How much of ``reply.text`` the client has been sent whole: the text offset of the last
        frame of this reply that went out (a sentence cut off mid-way does not count)."""
        mark = self.pacer.sent_mark
        if isinstance(mark, tuple) and mark[0] is reply:
            return mark[1]
        return 0

    def _buffered_s(self) -> float:
        return self.pacer.queued * FRAME_MS / 1000 + self.pacer.playout_remaining()

    async def pump(self, reply: ReplyStream, times: TurnTimes) -> None:
        """Worker frames → the pacer; the first one switches the session to SPEAKING."""
        loop = asyncio.get_running_loop()
        self.pacer.clear()  # nothing of an earlier, stopped reply may play before this one
        self.pacer.release()
        async for frame in reply.frames():
            if times.first_frame_at is None:
                times.first_frame_at = loop.time()
                if self.sm.state in (State.LISTENING, State.WAITING_FOR_INPUT):
                    self.sm.to(State.SPEAKING)
                self.pacer.on_next_send(lambda: setattr(times, "first_sent_at", loop.time()))
            if self.sm.state not in (State.SPEAKING, State.BARGED_IN):
                return  # the reply was stopped
            self.pacer.push(frame, (reply, reply.voiced))  # once played, reply.text[:voiced] was heard

    async def finish(
        self,
        reply: ReplyStream,
        pump: asyncio.Future,
        unavailable: Callable[[TtsUnavailable], None],
    ) -> None:
        """Wait until the reply's audio has been sent. A failover that found no worker ends the reply
        with what was voiced (``unavailable`` is told at once, before the rest plays out)."""
        try:
            await pump
        except TtsUnavailable as exc:
            unavailable(exc)
        finally:
            reply.cancel()
            pump.cancel()
        await self.pacer.drained()
