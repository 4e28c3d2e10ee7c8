"""Worker-side sessions: a session id bound to a model lease, plus its playback controls.

Pause is a gate in front of the frame writer: while it is closed no frame is written, and the
frames already produced wait in order, so RESUME continues exactly where PAUSE stopped. STOP
cancels synthesis, discards pending text and ends the active stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from appliance.tts.model_manager import ModelLease

log = logging.getLogger(__name__)

WRITE_SETTLE_S = 0.25
# How long a new stream waits for the session's previous one, already stopped or abandoned by its
# caller, to finish closing (an engine call under way must return first).
SUPERSEDE_WAIT_S = 5.0
# A caller's cancellation reaches the worker a moment after the caller's next request may have.
CANCEL_NOTICE_S = 0.5
POLL_S = 0.01


class SessionError(Exception):
    """Base for session errors; ``code`` names the gRPC status the server maps it to."""

    code = "FAILED_PRECONDITION"


class SessionNotFound(SessionError):
    code = "NOT_FOUND"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"unknown session {session_id!r} (StartSession first)")


class SessionExists(SessionError):
    code = "ALREADY_EXISTS"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} already exists")


class TooManySessions(SessionError):
    code = "RESOURCE_EXHAUSTED"

    def __init__(self, limit: int) -> None:
        super().__init__(f"this worker already serves its maximum of {limit} sessions")


class StreamBusy(SessionError):
    code = "FAILED_PRECONDITION"

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} already has a Synthesize stream open")


@dataclass
class WorkerSession:
    session_id: str
    lease: ModelLease
    options: dict[str, str] = field(default_factory=dict)
    last_active: float = field(default_factory=time.monotonic)
    streaming: bool = False
    stopped: bool = False
    # Set on STOP or session end; checked by the engine thread between chunks.
    cancel: threading.Event = field(default_factory=threading.Event)
    _open: asyncio.Event = field(default_factory=asyncio.Event)  # the pause gate, set = playing
    _write_idle: asyncio.Event = field(default_factory=asyncio.Event)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)  # set = no stream open
    _caller_gone: Callable[[], bool] = lambda: False  # of the open stream

    def __post_init__(self) -> None:
        self._open.set()
        self._write_idle.set()
        self._idle.set()

    @property
    def model_id(self) -> str:
        return self.lease.model_id

    @property
    def paused(self) -> bool:
        return not self._open.is_set()

    def touch(self) -> None:
        self.last_active = time.monotonic()

    # --- the stream side -------------------------------------------------------------------

    async def begin_stream(
        self, caller_gone: Callable[[], bool] = lambda: False, wait_s: float = SUPERSEDE_WAIT_S
    ) -> None:
        """Mark a stream open. One that is still open is refused (StreamBusy), unless it is on its
        way out — stopped, or its caller gone (``caller_gone`` of that stream says so) —: barge-in
        cancels a reply and the next one may open before the worker has closed the first, or even
        before the cancellation has reached it (hence the short look first)."""
        loop = asyncio.get_running_loop()
        notice_by = loop.time() + CANCEL_NOTICE_S
        while self.streaming and not self._on_its_way_out() and loop.time() < notice_by:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_S):
                    await self._idle.wait()
        if self.streaming and self._on_its_way_out():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._idle.wait()
        if self.streaming:
            raise StreamBusy(self.session_id)
        self.streaming = True
        self._idle.clear()
        self._caller_gone = caller_gone
        self.stopped = False
        self.cancel = threading.Event()
        self._open.set()
        self.touch()

    def _on_its_way_out(self) -> bool:
        return self.cancel.is_set() or self._caller_gone()

    def end_stream(self) -> None:
        self.streaming = False
        self._idle.set()
        self.cancel.set()
        self._write_idle.set()
        self.touch()

    async def gate(self) -> bool:
        """Wait while paused; True when a frame may be written now, False once stopped."""
        await self._open.wait()  # stop() opens the gate too
        if self.stopped:
            return False
        # No await between this check and the caller's write, so a PAUSE cannot slip in between.
        self._write_idle.clear()
        return True

    def write_done(self) -> None:
        self._write_idle.set()

    # --- the control side ------------------------------------------------------------------

    async def pause(self) -> None:
        """Close the gate; return once a frame write already under way has finished."""
        self._open.clear()
        self.touch()
        await self._write_settled()

    def resume(self) -> None:
        self._open.set()
        self.touch()

    async def stop(self) -> None:
        self.stopped = True
        self.cancel.set()
        self._open.set()
        self.touch()
        await self._write_settled()

    async def _write_settled(self) -> None:
        # A write blocks only while the client's flow-control window is full, i.e. while the
        # client is not reading; an ack must not hang on such a client.
        if self._write_idle.is_set():
            return
        try:
            async with asyncio.timeout(WRITE_SETTLE_S):
                await self._write_idle.wait()
        except TimeoutError:
            log.warning(
                "control ack without write completion session=%s (client not reading)", self.session_id
            )


class SessionRegistry:
    def __init__(self, max_sessions: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: dict[str, WorkerSession] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._sessions

    def reserve(self, session_id: str) -> None:
        """Check a new session may be added (before its model is acquired)."""
        if session_id in self._sessions:
            raise SessionExists(session_id)
        if len(self._sessions) >= self.max_sessions:
            raise TooManySessions(self.max_sessions)

    def add(self, session: WorkerSession) -> None:
        self.reserve(session.session_id)
        self._sessions[session.session_id] = session
        log.info("session started session=%s model=%s", session.session_id, session.model_id)

    def get(self, session_id: str) -> WorkerSession:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise SessionNotFound(session_id) from None

    async def end(self, session_id: str, reason: str = "ended by client") -> WorkerSession:
        session = self._sessions.pop(session_id, None)
        if session is None:
            raise SessionNotFound(session_id)
        await session.stop()
        session.lease.release()
        log.info("session ended session=%s reason=%s", session_id, reason)
        return session

    def idle_sessions(self, idle_s: float) -> list[str]:
        now = time.monotonic()
        return [
            s.session_id for s in self._sessions.values() if not s.streaming and now - s.last_active >= idle_s
        ]

    def all(self) -> list[WorkerSession]:
        return list(self._sessions.values())
