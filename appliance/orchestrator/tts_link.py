"""The orchestrator's side of one worker session: replies as Synthesize streams (``reply.py``,
with failover), and the controls barge-in needs (PAUSE, RESUME, STOP), always sent to the worker
that serves the session now."""

from __future__ import annotations

import asyncio
import logging

import grpc

from appliance.orchestrator.pool import TtsUnavailable, WorkerPool
from appliance.orchestrator.reply import Reply
from appliance.rpc import tts_pb2 as pb
from appliance.tts.client import COMMANDS, TTSClient

__all__ = ["Reply", "TtsLink", "TtsUnavailable", "WorkerPool"]

log = logging.getLogger(__name__)

CONTROL_TIMEOUT_S = 1.0  # a control (or EndSession) a hung worker does not answer is given up on
START_TIMEOUT_S = 3.0  # StartSession on another worker during a failover


class TtsLink:
    def __init__(
        self, pool: WorkerPool, session_id: str, model_id: str = "", *, stall_s: float = 1.2, metrics=None
    ) -> None:
        self.pool = pool
        self.session_id = session_id
        self.model_id = model_id
        self.stall_s = stall_s
        self.metrics = metrics
        self.client: TTSClient | None = None
        self.paused = False  # a PAUSE is in force (barge-in): a failover holds the new stream back
        self._unpaused = asyncio.Event()
        self._unpaused.set()
        self._starting: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()

    async def open(self) -> None:
        self.client = await self.pool.start_session(self.session_id, self.model_id)
        log.info("tts session session=%s worker=%s", self.session_id, self.client.address)

    def reply(self) -> Reply:
        return Reply(self)

    async def current(self) -> TTSClient:
        """The worker serving the session; after a failover that found none, try again."""
        if self._starting is not None:  # a failover still moving the session (its reply was cancelled)
            await asyncio.gather(self._starting, return_exceptions=True)
            self._starting = None
        if self.client is None:
            await self._start(exclude=set())
        assert self.client is not None
        return self.client

    async def failover(self, dead: TTSClient, cause: str, exclude: set[str], replace: bool = True) -> TTSClient | None:
        """Take ``dead`` out of rotation and move the session to another worker (not in ``exclude``).
        Raises TtsUnavailable when none accepts it. ``replace=False``: only drop the dead one."""
        self.pool.mark_down(dead.address, cause)
        if self.client is dead:
            self.client = None
        self._spawn(self._end_on(dead))  # it may come back with the session still open
        if not replace:
            return None
        await self._start(exclude)
        return self.client

    async def _start(self, exclude: set[str]) -> None:
        # Shielded: a reply cancelled meanwhile (barge-in) must not leave the session half-moved.
        self._starting = asyncio.ensure_future(self._start_session(exclude))
        self._starting.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved, even if orphaned
        try:
            await asyncio.shield(self._starting)
        finally:
            if self._starting.done():
                self._starting = None

    async def _start_session(self, exclude: set[str]) -> None:
        try:
            client = await asyncio.wait_for(
                self.pool.start_session(self.session_id, self.model_id, exclude=exclude), START_TIMEOUT_S
            )
        except TimeoutError:
            raise TtsUnavailable(f"no TTS worker accepted the session within {START_TIMEOUT_S:.0f}s") from None
        self.client = client
        log.info("tts session session=%s worker=%s (failover)", self.session_id, client.address)

    async def unpaused(self) -> None:
        await self._unpaused.wait()

    async def control(self, command: str) -> bool:
        command = command.lower()
        if command == "pause":
            self.paused = True
            self._unpaused.clear()
        elif command in ("resume", "stop"):
            self.paused = False
            self._unpaused.set()
        client = self.client
        if client is None:
            return False
        try:
            request = pb.ControlRequest(session_id=self.session_id, command=COMMANDS[command])
            await client.stub.Control(request, timeout=CONTROL_TIMEOUT_S)
            return True
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "control %s failed session=%s worker=%s: %s %s",
                command, self.session_id, client.address, exc.code().name, exc.details(),
            )
            return False

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
        if self.client is None:
            return
        client, self.client = self.client, None
        await self._end_on(client)

    async def _end_on(self, client: TTSClient) -> None:
        try:
            await client.stub.EndSession(pb.EndSessionRequest(session_id=self.session_id), timeout=CONTROL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                log.info("EndSession failed session=%s worker=%s: %s", self.session_id, client.address, exc.code().name)

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

