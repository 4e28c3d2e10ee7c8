"""Real-time pacing of reply audio to the client, at most ``lead`` ahead of playback.

The client plays what it receives at once, so what it holds is "how far ahead of real time the
audio sent so far reaches". Keeping that at most ``lead`` means a barge-in leaves at most
``lead`` of reply audio in the client's hands. ``hold()`` stops sending at once (before the
next frame); ``clear()`` drops the frames queued here; ``release()`` continues. A frame may carry
a ``mark`` (what it stands for, e.g. how much of the reply text it completes); ``sent_mark`` is
the mark of the last frame sent.

A transport that plays from a queue of its own (WebRTC, LiveKit) can give audio back: ``take_back``
drops what it has not played yet and says how many frames that was. A hold then takes them back
and puts them first in line here, so the reply goes quiet at once instead of a lead later, and a
release (a false alarm) plays them again: nothing is skipped."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

FRAME_S = 0.020
RECENT = 64  # frames sent that a hold can still take back: more than any lead plus a stall


class Pacer:
    def __init__(
        self,
        send: Callable[[bytes], Awaitable[None]],
        lead_s: float = 0.1,
        take_back: Callable[[], int] | None = None,
    ) -> None:
        self._send = send
        self.lead_s = lead_s
        self._take_back = take_back
        self._frames: collections.deque[tuple[bytes, object]] = collections.deque()
        self._recent: collections.deque[tuple[bytes, object]] = collections.deque(maxlen=RECENT)
        self.sent_mark: object = None
        self._ready = asyncio.Event()
        self._open = asyncio.Event()
        self._open.set()
        self._drained = asyncio.Event()
        self._drained.set()
        self._playout_end = 0.0  # loop time when the client will have played all we sent
        self._sending = False
        self._gone = False  # the client went (a send failed): the pacer has stopped
        self.sent = 0
        self._on_next_send: Callable[[], None] | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pacer")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def on_next_send(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, right after the next frame is sent (first reply frame timing)."""
        self._on_next_send = callback

    def push(self, frame: bytes, mark: object = None) -> None:
        if self._gone:
            return  # the client went: nobody to send it to, and nothing left to drain
        self._frames.append((frame, mark))
        self._drained.clear()
        self._ready.set()

    @property
    def queued(self) -> int:
        return len(self._frames)

    @property
    def held(self) -> bool:
        return not self._open.is_set()

    def hold(self) -> None:
        if self._open.is_set():
            self._open.clear()
            self._unsend()

    def _unsend(self) -> None:
        """Take back what the transport has not played yet: first in line again, nothing lost."""
        if self._take_back is None:
            return
        n = min(self._take_back(), len(self._recent))
        if not n:
            return
        for _ in range(n):
            self._frames.appendleft(self._recent.pop())
        self.sent_mark = self._recent[-1][1] if self._recent else None
        self.sent -= n
        now = asyncio.get_running_loop().time()
        self._playout_end = max(now, self._playout_end - n * FRAME_S)
        self._drained.clear()
        self._ready.set()

    def release(self) -> None:
        self._open.set()

    def drop_last(self, n: int) -> int:
        """Drop up to ``n`` of the newest queued frames (those not sent yet)."""
        dropped = min(n, len(self._frames))
        for _ in range(dropped):
            self._frames.pop()
        if not self._frames and not self._sending:
            self._drained.set()
        return dropped

    def clear(self) -> int:
        dropped = len(self._frames)
        self._frames.clear()
        self._recent.clear()  # a stopped reply's audio is never played again
        if not self._sending:
            self._drained.set()
        return dropped

    async def drained(self) -> None:
        """Wait until every queued frame has been sent (and the audio has reached the client)."""
        await self._drained.wait()

    def playout_remaining(self) -> float:
        return max(0.0, self._playout_end - asyncio.get_running_loop().time())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._frames:
                self._drained.set()
                self._ready.clear()
                await self._ready.wait()
                continue
            await self._open.wait()
            now = loop.time()
            ahead = self._playout_end - now
            if ahead + FRAME_S > self.lead_s:
                await asyncio.sleep(ahead + FRAME_S - self.lead_s)
                continue  # re-check: a hold or clear may have come meanwhile
            if not self._frames or not self._open.is_set():
                continue
            frame, mark = self._frames.popleft()
            self._playout_end = max(self._playout_end, now) + FRAME_S
            self._sending = True
            try:
                await self._send(frame)
            except ConnectionError:
                self._gone = True
                self._frames.clear()
                self._drained.set()
                return
            finally:
                self._sending = False
            self.sent += 1
            self.sent_mark = mark
            self._recent.append((frame, mark))
            if not self._open.is_set():
                self._unsend()  # held while this frame was on its way: take it back too
            if self._on_next_send is not None:
                callback, self._on_next_send = self._on_next_send, None
                callback()
