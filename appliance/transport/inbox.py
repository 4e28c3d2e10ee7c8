"""A channel's inbound messages, in order, for transports whose callbacks deliver them (WebRTC,
LiveKit): the microphone's audio is bounded, so a session that lags drops its oldest audio, never
an event, and a channel that ends wakes its reader."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

from appliance.transport.protocol import AudioIn, Inbound

log = logging.getLogger(__name__)


class Inbox:
    def __init__(self, rate: int, max_audio_s: float, where: Callable[[], str]) -> None:
        self.rate = rate
        self.max_audio_s = max_audio_s
        self.where = where  # for the log line
        self.consuming = False  # microphone audio is queued only once someone reads it
        self._queue: collections.deque[Inbound] = collections.deque()
        self._audio_s = 0.0
        self._wake = asyncio.Event()
        self._lagging = self._closed = False

    def put(self, message: Inbound) -> None:
        self._queue.append(message)
        self._wake.set()

    def put_audio(self, pcm: bytes) -> None:
        self._queue.append(AudioIn(pcm))
        self._audio_s += self._seconds(pcm)
        while self._audio_s > self.max_audio_s:  # drop the oldest audio, never an event
            i = next(i for i, m in enumerate(self._queue) if isinstance(m, AudioIn))
            self._audio_s -= self._seconds(self._queue[i].pcm)
            del self._queue[i]
            if not self._lagging:
                self._lagging = True
                log.warning(
                    "session lags %.0f s behind the microphone: dropping the oldest audio %s",
                    self.max_audio_s,
                    self.where(),
                )
        self._wake.set()

    async def get(self) -> Inbound | None:
        """The next message; None once the channel has ended."""
        self.consuming = True
        while not self._closed:
            if self._queue:
                message = self._queue.popleft()
                if isinstance(message, AudioIn):
                    self._audio_s -= self._seconds(message.pcm)
                if not self._queue:
                    self._lagging = False
                return message
            self._wake.clear()
            await self._wake.wait()
        return None

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    def _seconds(self, pcm: bytes) -> float:
        return len(pcm) / 2 / self.rate
