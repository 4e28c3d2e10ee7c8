"""The orchestrator's side of one worker session: replies as Synthesize streams, and the
controls barge-in needs (PAUSE, RESUME, STOP)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc

from appliance.orchestrator.pool import TtsUnavailable, WorkerPool
from appliance.rpc import tts_pb2 as pb
from appliance.tts.client import TTSClient

__all__ = ["Reply", "TtsLink", "TtsUnavailable", "WorkerPool"]

log = logging.getLogger(__name__)


_END = object()


class Reply:
    """One Synthesize stream: ``feed`` text as the responder produces it, ``finish``, and read ``frames``."""

    def __init__(self, client: TTSClient, session_id: str) -> None:
        self._texts: asyncio.Queue = asyncio.Queue()
        self.session_id = session_id
        self.call = client.stub.Synthesize(self._chunks())
        self._seq = 0

    async def _chunks(self):
        while True:
            text = await self._texts.get()
            if text is _END:
                yield pb.TextChunk(session_id=self.session_id, is_final=True, sequence_number=self._seq)
                return
            yield pb.TextChunk(session_id=self.session_id, text=text, sequence_number=self._seq)
            self._seq += 1

    def feed(self, text: str) -> None:
        self._texts.put_nowait(text)

    def finish(self) -> None:
        self._texts.put_nowait(_END)

    async def frames(self) -> AsyncIterator[bytes]:
        async for frame in self.call:
            if frame.is_final:
                return
            yield frame.audio_data

    def cancel(self) -> None:
        self.call.cancel()


class TtsLink:
    def __init__(self, pool: WorkerPool, session_id: str, model_id: str = "") -> None:
        self.pool = pool
        self.session_id = session_id
        self.model_id = model_id
        self.client: TTSClient | None = None

    async def open(self) -> None:
        self.client = await self.pool.start_session(self.session_id, self.model_id)
        log.info("tts session session=%s worker=%s", self.session_id, self.client.address)

    def reply(self) -> Reply:
        assert self.client is not None
        return Reply(self.client, self.session_id)

    async def control(self, command: str) -> bool:
        if self.client is None:
            return False
        try:
            await self.client.control(self.session_id, command)
            return True
        except grpc.aio.AioRpcError as exc:
            log.warning("control %s failed session=%s: %s %s", command, self.session_id, exc.code().name, exc.details())
            return False

    async def close(self) -> None:
        if self.client is None:
            return
        try:
            await self.client.end_session(self.session_id)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                log.warning("EndSession failed session=%s: %s", self.session_id, exc.code().name)
        self.client = None
