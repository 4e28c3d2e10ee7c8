"""One reply's audio: text in, 20 ms frames out, as a Synthesize stream that survives worker failures.

Every frame says how much of the text is fully voiced once it has played
(``AudioFrame.text_offset``: the last frame of a segment carries the segment's end). When the
worker dies (the stream fails: connection lost, the worker's own error) or hangs (no frame while
one is due, for ``stall_s``), the reply fails over: the worker is marked down, the session is
started on another one, and the text from the end of the last fully voiced segment — plus whatever
is fed later — is sent there on a new stream. ``frames()`` keeps yielding as if nothing happened;
the client hears a gap (and the segment that was under way again from its start), never a loss.
With no worker left, ``frames()`` raises :class:`TtsUnavailable`.

A frame is *due* when there is text the worker can voice (a finished reply, or a complete sentence
not yet voiced, by the rule the worker's segmenter uses: :mod:`appliance.sentences`), the reply is not paused by barge-in, and the audio the orchestrator still holds
for the client is down to ``LOW_WATER_S``: a worker that synthesises ahead is never suspected
while the client still has audio to play, however long the next sentence takes.

Late is not hung. Half a stall time into a late frame the worker is asked what it is doing
(``GetCapabilities``, answered by its event loop, not its engine threads): a worker that answers
with engine work running or queued (``engine_jobs``) is busy — several sessions' first sentences
on a slow CPU — and the stream waits another stall time, up to ``BUSY_LIMIT`` stall times in all.
A worker that does not answer (stopped, its loop blocked, the host gone) or answers idle is hung,
and fails over at ``stall_s`` as before.

A reply sees its session (:class:`.link.TtsLink`) only through :class:`StreamHost`, and its player
only through the two callbacks it is given: the dependency runs one way, session → reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

import grpc

from appliance.orchestrator.workers.pool import TtsUnavailable
from appliance.rpc import tts_pb2 as pb
from appliance.sentences import find_voiceable_end
from appliance.tts.client import TTSClient

__all__ = ["Failover", "ReplyStream", "StreamHost"]

log = logging.getLogger(__name__)

CHECK_S = 0.05  # how often a silent stream is checked for a stall
LOW_WATER_S = 0.2  # frames are due once the audio held for the client is down to this
# Statuses that mean "this worker cannot finish the stream"; the others (bad text, …) are the
# request's fault and would fail on any worker.
FAILOVER_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.NOT_FOUND,
    }
)
# Streams in a row that fail before their first frame: a reply that fails this way on every try
# (text the engines cannot voice) gives up instead of failing over for ever.
MAX_FRUITLESS_TRIES = 4
BUSY_LIMIT = 10  # stall times a busy worker may be late with a frame before it is given up on
_EOS = object()
_CANCELLED = object()


class StreamHost(Protocol):
    """What a reply needs from its session."""

    session_id: str
    stall_s: float  # no frame this long while one is due: the worker hangs
    paused: bool  # a PAUSE is in force (barge-in): frames are not due, a new stream waits

    async def unpaused(self) -> None: ...

    async def current(self) -> TTSClient:
        """The worker serving the session (waits for one if there is none)."""
        ...

    async def failover(
        self, dead: TTSClient, cause: str, exclude: set[str], replace: bool = True
    ) -> TTSClient | None:
        """Take ``dead`` out of rotation; with ``replace``, the worker the session moved to."""
        ...


class WorkerFailed(Exception):
    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(detail)
        self.cause = cause  # "lost" | "stalled"


@dataclass
class Failover:
    worker: str
    cause: str
    detail: str
    last_frame_at: float  # loop time of the last frame from the failed worker (or its stream's start)
    detected_at: float
    resend_from: int
    text_len: int
    repeated: int = 0  # frames received of the segment under way (voiced again from its start)
    to: str = "-"
    gap_s: float | None = None  # last frame from the failed worker → first frame from the next


class ReplyStream:
    """``feed`` text as the responder produces it, ``finish``, and read ``frames``.

    ``buffered``: seconds of reply audio the player still holds for the client (frames are due
    once it is low). ``on_failover``: called with how many frames of an unfinished segment it was
    given — that segment is voiced again from its start, so frames of it not yet sent should be
    dropped."""

    def __init__(
        self,
        host: StreamHost,
        *,
        metrics=None,
        buffered: Callable[[], float] | None = None,
        on_failover: Callable[[int], None] | None = None,
    ) -> None:
        self.host = host
        self.session_id = host.session_id
        self.metrics = metrics
        self.buffered = buffered or (lambda: 0.0)
        self.on_failover = on_failover
        self.text = ""  # everything fed
        self.finished = False
        self.voiced = 0  # text[:voiced] is fully voiced by the frames yielded so far
        self.partial_frames = 0  # frames yielded since: an unfinished segment
        self.failovers: list[Failover] = []
        self._more = asyncio.Event()  # text fed, or finished: wakes the request stream
        self._generation = 0  # streams of earlier generations stop sending
        self._call = None
        self._cancelled = False
        self._due_since: float | None = None
        self._last_frame_at = 0.0
        self._busy_at = 0.0  # when the worker last said it has engine work (the stream is waiting its turn)
        self._probe: asyncio.Task | None = None

    def feed(self, text: str) -> None:
        self.text += text
        self._more.set()

    def finish(self) -> None:
        self.finished = True
        self._more.set()

    def cancel(self) -> None:
        self._cancelled = True
        self._generation += 1
        self._more.set()
        if self._call is not None:
            self._call.cancel()

    async def frames(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        client = await self.host.current()
        exclude: set[str] = set()
        pending: Failover | None = None
        fruitless = 0  # streams in a row that failed before their first frame
        while True:
            if pending is not None:
                await self.host.unpaused()  # a PAUSE in force holds the new stream back until RESUME
            self._call = self._open(client)
            try:
                async for frame in self._receive(self._call, client):
                    if pending is not None:
                        pending.gap_s = loop.time() - pending.last_frame_at
                        self._report(pending)
                        pending = None
                    fruitless = 0
                    yield frame
                return
            except WorkerFailed as failure:
                if pending is not None:  # the next worker failed too, before its first frame
                    self._report(pending)
                pending = self._failed(client.address, failure)
                fruitless += 1
            finally:
                self._call.cancel()
            exclude.add(client.address)
            if fruitless >= MAX_FRUITLESS_TRIES:
                self._report(pending)
                raise TtsUnavailable(
                    f"the reply failed {fruitless} times in a row before any audio (last: {pending.detail})"
                )
            if self.finished and self.voiced >= len(self.text):  # only the final frame was missing
                self._report(pending)
                await self.host.failover(client, pending.cause, exclude, replace=False)
                return
            try:
                client = await self.host.failover(client, pending.cause, exclude)
            except TtsUnavailable:
                self._report(pending)
                raise
            pending.to = client.address

    def _open(self, client: TTSClient):
        self._generation += 1
        self._due_since = None
        self._last_frame_at = asyncio.get_running_loop().time()
        self._busy_at = 0.0
        self._base = self.voiced
        return client.stub.Synthesize(self._chunks(self._generation, self.voiced))

    async def _chunks(self, generation: int, start: int):
        pos, seq = start, 0
        while generation == self._generation:
            if pos < len(self.text):
                text, pos = self.text[pos:], len(self.text)
                yield pb.TextChunk(session_id=self.session_id, text=text, sequence_number=seq)
                seq += 1
            elif self.finished:
                yield pb.TextChunk(session_id=self.session_id, is_final=True, sequence_number=seq)
                return
            else:
                self._more.clear()
                await self._more.wait()

    async def _receive(self, call, client: TTSClient) -> AsyncIterator[bytes]:
        """The stream's audio; raises WorkerFailed when the worker fails or stalls."""
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        reader = asyncio.ensure_future(_read(call, items))
        try:
            while True:
                try:
                    if items.qsize():
                        item = items.get_nowait()
                    else:
                        # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation
                        # that lands as the item arrives, and a stopped reply would play on.
                        async with asyncio.timeout(CHECK_S):
                            item = await items.get()
                except TimeoutError:
                    if self._stalled(loop.time(), client):
                        raise WorkerFailed("stalled", self._stall_detail(loop.time())) from None
                    continue
                if self._cancelled or item is _CANCELLED:
                    return
                if item is _EOS:
                    raise WorkerFailed("lost", "the stream ended without its final frame")
                if isinstance(item, grpc.aio.AioRpcError):
                    if item.code() not in FAILOVER_CODES:
                        raise item
                    raise WorkerFailed("lost", f"{item.code().name}: {item.details()}")
                self._last_frame_at = loop.time()
                self._due_since = None
                if item.audio_data:
                    self.partial_frames += 1
                if self._base + item.text_offset > self.voiced:
                    self.voiced = self._base + item.text_offset
                    self.partial_frames = 0
                if item.is_final:
                    return
                if item.audio_data:
                    yield item.audio_data
        finally:
            reader.cancel()
            if self._probe is not None:
                self._probe.cancel()

    def _stalled(self, now: float, client: TTSClient) -> bool:
        due = (
            not self.host.paused
            and (self.finished or find_voiceable_end(self.text, self.voiced) is not None)
            and self.buffered() <= LOW_WATER_S
        )
        if not due:
            self._due_since = None
            return False
        if self._due_since is None:
            # Due since the last frame, or since it became due (text fed, RESUME, buffer low).
            self._due_since = max(self._last_frame_at, now - CHECK_S)
        stall_s = self.host.stall_s
        if now - self._due_since >= BUSY_LIMIT * stall_s:
            return True
        late = now - max(self._due_since, self._busy_at)
        if late >= stall_s / 2 and self._probe is None:
            self._probe = asyncio.ensure_future(self._ask_if_busy(client))
        return late >= stall_s

    async def _ask_if_busy(self, client: TTSClient) -> None:
        loop = asyncio.get_running_loop()
        try:
            caps = await client.stub.GetCapabilities(
                pb.GetCapabilitiesRequest(), timeout=self.host.stall_s / 2
            )
            if caps.engine_jobs > 0:
                if not self._busy_at:
                    log.info(
                        "tts worker busy session=%s worker=%s engine_jobs=%d: audio late, waiting its turn",
                        self.session_id,
                        client.address,
                        caps.engine_jobs,
                    )
                self._busy_at = loop.time()
        except grpc.aio.AioRpcError:
            pass  # no answer in time: the stall decides
        finally:
            self._probe = None

    def _stall_detail(self, now: float) -> str:
        if self._due_since is not None and now - self._due_since >= BUSY_LIMIT * self.host.stall_s:
            return f"no audio for {now - self._due_since:.1f}s while it was due, the worker busy all along"
        return f"no audio for {self.host.stall_s:.1f}s while it was due"

    def _failed(self, address: str, failure: WorkerFailed) -> Failover:
        loop = asyncio.get_running_loop()
        record = Failover(
            worker=address,
            cause=failure.cause,
            detail=str(failure),
            last_frame_at=self._last_frame_at,
            detected_at=loop.time(),
            resend_from=self.voiced,
            text_len=len(self.text),
            repeated=self.partial_frames,
        )
        self.failovers.append(record)
        if self.metrics is not None:
            self.metrics.failovers.labels(address, failure.cause).inc()
        if self.on_failover is not None and self.partial_frames:
            self.on_failover(self.partial_frames)
        self.partial_frames = 0
        return record

    def _report(self, f: Failover) -> None:
        if f.gap_s is not None and self.metrics is not None:
            self.metrics.failover_gap.observe(f.gap_s)
        log.warning(
            "tts failover session=%s worker=%s cause=%s (%s) to=%s resend_from=%d/%d%s repeated_frames=%d "
            "detect_ms=%.0f gap_ms=%s",
            self.session_id,
            f.worker,
            f.cause,
            f.detail,
            f.to,
            f.resend_from,
            f.text_len,
            "" if self.finished else "+",
            f.repeated,
            (f.detected_at - f.last_frame_at) * 1000,
            "-" if f.gap_s is None else f"{f.gap_s * 1000:.0f}",
        )


async def _read(call, items: asyncio.Queue) -> None:
    try:
        async for frame in call:
            items.put_nowait(frame)
        items.put_nowait(_EOS)
    except grpc.aio.AioRpcError as exc:
        items.put_nowait(exc)
    except asyncio.CancelledError:  # the call was cancelled (or this reader, then nobody reads this)
        items.put_nowait(_CANCELLED)
        raise
