"""The orchestrator's side of one worker session: its replies (:mod:`.reply_stream`), and the
controls barge-in needs (PAUSE, RESUME, STOP), always sent to the worker that serves the session now.

When no worker accepts the session (a failover found none, or a reply starts while the only
worker is down), the session is started again with backoff for up to ``retry_s``, on any worker
including the one that failed: a one-worker appliance's worker may be restarted on the same
address. Cancelling the reply (barge-in, STOP, the client gone) ends the wait at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc

from appliance.orchestrator.workers.pool import TtsUnavailable, WorkerPool
from appliance.orchestrator.workers.reply_stream import ReplyStream
from appliance.orchestrator.workers.wait import wait_for_worker
from appliance.rpc import tts_pb2 as pb
from appliance.tts.client import Control, TTSClient

log = logging.getLogger(__name__)

CONTROL_TIMEOUT_S = 1.0  # a control (or EndSession) a hung worker does not answer is given up on
FAILOVER_START_TIMEOUT_S = 3.0  # StartSession on another worker during a failover (or a wait's attempt)


class TtsLink:
    def __init__(
        self,
        pool: WorkerPool,
        session_id: str,
        model_id: str = "",
        *,
        stall_s: float = 1.2,
        retry_s: float = 0.0,
        metrics=None,
    ) -> None:
        self.pool = pool
        self.session_id = session_id
        self.model_id = model_id
        self.stall_s = stall_s
        self.retry_s = retry_s  # how long to wait for a worker when none is available (0: fail at once)
        self.metrics = metrics
        self.client: TTSClient | None = None
        self.paused = False  # a PAUSE is in force (barge-in): a failover holds the new stream back
        self._unpaused = asyncio.Event()
        self._unpaused.set()
        self._starting: asyncio.Task | None = None
        self._controls: set[asyncio.Future] = set()  # sent, not answered yet
        self._last_control: asyncio.Future | None = None
        self._background: set[asyncio.Task] = set()
        self._unended: dict[
            str, TTSClient
        ] = {}  # workers failed away from whose EndSession did not get through

    async def open(self) -> None:
        self.client = await self.pool.start_session(self.session_id, self.model_id)
        log.info("tts session session=%s worker=%s", self.session_id, self.client.address)

    def reply(
        self,
        *,
        buffered: Callable[[], float] | None = None,
        on_failover: Callable[[int], None] | None = None,
    ) -> ReplyStream:
        """A new reply on this session; see :class:`ReplyStream` for the callbacks."""
        return ReplyStream(self, metrics=self.metrics, buffered=buffered, on_failover=on_failover)

    async def current(self) -> TTSClient:
        """The worker serving the session; after a failover that found none, try again. A control
        still on its way is answered first: a STOP sent for the reply a barge-in ended would
        otherwise reach the worker after the next reply's stream opened, and end that one."""
        if self._controls:  # (a worker that answers none is left to the stall check, as a hung one)
            await asyncio.wait(set(self._controls), timeout=CONTROL_TIMEOUT_S)
        if self._starting is not None:  # a failover still moving the session (its reply was cancelled)
            await asyncio.gather(self._starting, return_exceptions=True)
            self._starting = None
        if self.client is None:
            await self._start_or_wait(exclude=set())
        assert self.client is not None
        return self.client

    async def failover(
        self, dead: TTSClient, cause: str, exclude: set[str], replace: bool = True
    ) -> TTSClient | None:
        """Take ``dead`` out of rotation and move the session to another worker (not in ``exclude``).
        With none, waits for any (``dead`` included) for up to ``retry_s``; raises TtsUnavailable
        when none accepts it by then. ``replace=False``: only drop the dead one."""
        self.pool.mark_down(dead.address, cause)
        if self.client is dead:
            self.client = None
        self._spawn(self._end_on(dead))  # it may come back with the session still open
        if not replace:
            return None
        await self._start_or_wait(exclude)
        return self.client

    async def _start_or_wait(self, exclude: set[str]) -> None:
        try:
            await self._start(exclude)
        except TtsUnavailable as exc:
            if self.retry_s <= 0:
                raise
            await wait_for_worker(
                self._retry_start,
                self.retry_s,
                str(exc),
                session_id=self.session_id,
                metrics=self.metrics,
                serving=lambda: self.client.address if self.client else None,
            )

    async def _retry_start(self, timeout_s: float) -> None:
        await self._end_unended()
        await self._start(set(), timeout_s=min(FAILOVER_START_TIMEOUT_S, timeout_s))

    async def _start(self, exclude: set[str], timeout_s: float = FAILOVER_START_TIMEOUT_S) -> None:
        # Shielded: a reply cancelled meanwhile (barge-in) must not leave the session half-moved.
        self._starting = asyncio.ensure_future(self._start_session(exclude, timeout_s))
        self._starting.add_done_callback(
            lambda t: t.cancelled() or t.exception()
        )  # retrieved, even if orphaned
        try:
            await asyncio.shield(self._starting)
        finally:
            if self._starting.done():
                self._starting = None

    async def _start_session(self, exclude: set[str], timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                client = await self.pool.start_session(self.session_id, self.model_id, exclude=exclude)
        except TimeoutError:
            raise TtsUnavailable(f"no TTS worker accepted the session within {timeout_s:.1f}s") from None
        self.client = client
        log.info("tts session session=%s worker=%s (failover)", self.session_id, client.address)

    async def unpaused(self) -> None:
        await self._unpaused.wait()

    def control(self, command: Control) -> asyncio.Task[bool]:
        """Send a control, after those sent before it have been answered; the task ends with the
        worker's answer (False: not delivered). The next reply knows of it before the caller's
        next await, and opens its stream only once it is answered."""
        if command is Control.PAUSE:
            self.paused = True
            self._unpaused.clear()
        elif command in (Control.RESUME, Control.STOP):
            self.paused = False  # a PAUSE is in force (barge-in): a failover holds the new stream back
            self._unpaused.set()
        sent = asyncio.ensure_future(self._send_control(command, after=self._last_control))
        self._last_control = sent
        self._controls.add(sent)
        sent.add_done_callback(self._controls.discard)
        return sent

    async def _send_control(self, command: Control, after: asyncio.Future | None) -> bool:
        # In order: a RESUME that overtook its PAUSE would leave the worker paused. (wait, not
        # gather: cancelling this control must not cancel the one before it.)
        if after is not None and not after.done():
            await asyncio.wait({after})
        client = self.client
        if client is None:
            return False
        try:
            request = pb.ControlRequest(session_id=self.session_id, command=int(command))
            await client.stub.Control(request, timeout=CONTROL_TIMEOUT_S)
            return True
        except grpc.aio.AioRpcError as exc:
            log.warning(
                "control %s failed session=%s worker=%s: %s %s",
                command.name.lower(),
                self.session_id,
                client.address,
                exc.code().name,
                exc.details(),
            )
            return False

    async def close(self) -> None:
        for task in [*self._background, *self._controls]:
            task.cancel()
        await asyncio.gather(*self._controls, return_exceptions=True)
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
        # A worker failed away from that was only stalled holds the session until it is told.
        await self._end_unended()
        if self.client is None:
            return
        client, self.client = self.client, None
        await self._end_on(client)

    async def _end_on(self, client: TTSClient) -> None:
        try:
            await client.stub.EndSession(
                pb.EndSessionRequest(session_id=self.session_id), timeout=CONTROL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                if client.address not in self._unended:
                    log.info(
                        "EndSession failed session=%s worker=%s: %s",
                        self.session_id,
                        client.address,
                        exc.code().name,
                    )
                self._unended[client.address] = client
                return
        self._unended.pop(client.address, None)

    async def _end_unended(self) -> None:
        """End the session on workers failed away from that did not hear it: one that was only
        stalled still holds the session and would refuse it (ALREADY_EXISTS) when it recovers."""
        await asyncio.gather(*(self._end_on(c) for c in list(self._unended.values())))

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
