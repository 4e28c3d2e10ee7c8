"""Speech for the protocol front ends: a worker session opened through the orchestrator's pool (so
routing, failover and the worker's model manager apply as they do for conversations), its reply's
48 kHz PCM16 frames as they are produced, and the session ended however the request ends (done,
failed, or the client gone)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

from appliance.audio import OUTPUT_RATE
from appliance.config import OrchestratorSettings
from appliance.orchestrator.workers import ReplyStream, TtsLink, TtsUnavailable, WorkerPool

__all__ = ["SpeechSession", "TtsUnavailable", "speech_session"]


class SpeechSession:
    """One request's text in (``feed``/``finish``), its frames out (``frames``).

    The client is taken to play what it is sent in real time from the first frame, so the audio
    it still holds is what was sent minus the time since: while that lasts, a worker that is slow
    to the next frame is not suspected of hanging. After a failover the segment under way is voiced
    again from its start; the frames of it already sent are skipped, not sent twice."""

    def __init__(self, link: TtsLink) -> None:
        self.link = link
        self._sent_s = 0.0
        self._first_at: float | None = None
        self._skip = 0
        self.reply: ReplyStream = link.reply(buffered=self._buffered, on_failover=self._failed_over)

    def _buffered(self) -> float:
        if self._first_at is None:
            return 0.0
        return max(0.0, self._sent_s - (time.monotonic() - self._first_at))

    def _failed_over(self, repeated_frames: int) -> None:
        self._skip += repeated_frames

    def feed(self, text: str) -> None:
        self.reply.feed(text)

    def finish(self) -> None:
        self.reply.finish()

    async def frames(self) -> AsyncIterator[bytes]:
        """20 ms PCM16 frames at 48 kHz; raises :class:`TtsUnavailable` when no worker can go on."""
        try:
            async for frame in self.reply.frames():
                if self._skip:
                    self._skip -= 1
                    continue
                if self._first_at is None:
                    self._first_at = time.monotonic()
                self._sent_s += len(frame) / (2 * OUTPUT_RATE)
                yield frame
        finally:
            self.reply.cancel()


@contextlib.asynccontextmanager
async def speech_session(
    pool: WorkerPool,
    settings: OrchestratorSettings,
    model_id: str,
    kind: str,
    metrics=None,
) -> AsyncIterator[SpeechSession]:
    """A session on a worker for ``model_id`` ("" for the default); raises TtsUnavailable when none
    accepts it. The session ends on exit, even when the request is cancelled."""
    p = settings.playback
    link = TtsLink(
        pool,
        f"{kind}-{uuid.uuid4().hex[:12]}",
        model_id,
        stall_s=p.tts_stall_ms / 1000,
        retry_s=p.tts_retry_s,
        metrics=metrics,
    )
    await link.open()
    try:
        yield SpeechSession(link)
    finally:
        closing = asyncio.ensure_future(link.close())
        try:
            await asyncio.shield(closing)
        except asyncio.CancelledError:
            await closing  # a cancelled request still ends its worker session
            raise
