"""One Synthesize stream: text chunks in, 20 ms frames out.

Three cooperating parts, joined by a bounded frame channel:
  reader   TextChunks → segmenter → complete sentences (as soon as each one is complete)
  producer sentences → engine (off the loop) → loudness → 48 kHz → 1920-byte frames
  writer   (the RPC handler) frames → the pause gate → the wire
The channel's bound is the back-pressure: a paused or slow client stops synthesis running
far ahead, instead of buffering minutes of audio.

Each frame travels with its ``text_offset`` (AudioFrame field 7): how much of the stream's text
is fully voiced once it has played. The producer holds back one frame so that the last frame of a
segment can carry the segment's end; a client that loses the stream re-sends from there.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from appliance.audio import FRAME_MS, OUTPUT_RATE, OutputChain
from appliance.config import AudioSettings
from appliance.tts.adapters import EngineBusy, InputRejected, SynthesisTracker
from appliance.tts.scheduler import DeadlineScheduler
from appliance.tts.sessions import WorkerSession
from appliance.tts.text import TextSegmenter, is_speakable

log = logging.getLogger(__name__)

CHANNEL_FRAMES = 250  # 5 s of audio ahead of the wire
# A stream's next engine call ranks as due this long before its audio runs out: about one
# call's time plus queueing, so that it still ranks after a stream that is waiting for its first words.
PLAYOUT_MARGIN_S = 0.25
# The first segment is what time-to-first-audio waits for, so a long first sentence is cut at a
# clause. An engine that streams within a segment (Piper's windowed decoder) waits only for the
# segment's front pass, so it gets a longer first segment: fewer cuts, better prosody.
FIRST_SEGMENT = {"first_clause_max_words": 5, "first_segment_hard_max_words": 6}
FIRST_SEGMENT_STREAMING = {"first_clause_max_words": 8, "first_segment_hard_max_words": 10}


def _segment_pusher(chain: OutputChain):
    """chain.push for one segment's chunks: every chunk after the first continues the segment."""
    pushed = False

    def push(samples):
        nonlocal pushed
        frames = chain.push(samples, continues=pushed)
        pushed = True
        return frames

    return push


class StreamError(Exception):
    """Ends the stream with a gRPC status ``code`` and this message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


DRAIN_S = 1.0
# Control characters (NUL among them) that engines choke on: each becomes a space, so the text's
# offsets stay those of the text the client sent.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


async def drain_requests(chunks: AsyncIterator, limit_s: float = DRAIN_S) -> None:
    """Read the client's remaining chunks (up to is_final, for at most ``limit_s``) before an
    error status is sent. grpc.aio clients that are still writing when the status arrives
    otherwise report INTERNAL instead of the real code (grpc/grpc#36066)."""

    async def consume() -> None:
        async for chunk in chunks:
            if chunk.is_final:
                return

    # A client that stops writing, or is gone, still gets the error status: nothing to handle here.
    with contextlib.suppress(Exception):
        async with asyncio.timeout(limit_s):
            await consume()


class FrameChannel:
    """A bounded FIFO of frames that can be closed (end of audio) or failed from either side."""

    def __init__(self, maxsize: int = CHANNEL_FRAMES) -> None:
        self._items: collections.deque[bytes] = collections.deque()
        self._maxsize = maxsize
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self.closed = False
        self.error: BaseException | None = None

    async def put(self, frame: bytes) -> None:
        while len(self._items) >= self._maxsize and not self.closed:
            self._writable.clear()
            await self._writable.wait()
        if self.closed:
            return
        self._items.append(frame)
        self._readable.set()

    def close(self, error: BaseException | None = None) -> None:
        if error is not None and self.error is None:
            self.error = error
        self.closed = True
        self._readable.set()
        self._writable.set()

    async def get(self) -> bytes | None:
        """The next frame; None at the end. Raises the error a failed channel carries."""
        while True:
            if self.error is not None:
                raise self.error
            if self._items:
                frame = self._items.popleft()
                self._writable.set()
                return frame
            if self.closed:
                return None
            self._readable.clear()
            await self._readable.wait()


@dataclass
class StreamStats:
    started: float = 0.0
    first_frame: float | None = None
    frames: int = 0
    segments: int = 0
    chars: int = 0
    synth_s: float = 0.0

    @property
    def ttfa_s(self) -> float | None:
        return None if self.first_frame is None else self.first_frame - self.started

    @property
    def audio_s(self) -> float:
        return self.frames * FRAME_MS / 1000

    @property
    def rtf(self) -> float | None:
        return self.synth_s / self.audio_s if self.audio_s else None


class SynthesisStream:
    def __init__(
        self,
        session: WorkerSession,
        *,
        scheduler: DeadlineScheduler,
        tracker: SynthesisTracker,
        audio: AudioSettings,
        max_chars: int,
    ) -> None:
        self.session = session
        self.scheduler = scheduler
        self.tracker = tracker
        self.audio = audio
        self.max_chars = max_chars
        self.stats = StreamStats(started=time.perf_counter())
        self.channel = FrameChannel()
        self._segments: asyncio.Queue[tuple[str, int] | None] = asyncio.Queue()  # (segment, end offset)
        streams = session.lease.adapter.streams_within_segment
        self._segmenter = TextSegmenter(**(FIRST_SEGMENT_STREAMING if streams else FIRST_SEGMENT))
        self._tasks: list[asyncio.Task] = []
        self._arrived = asyncio.get_running_loop().time()
        self._audio_start: float | None = None
        self.voiced = 0  # text offset voiced by the frames produced so far
        self._held: bytes | None = None  # the newest frame, until it is known whether it ends a segment

    def start(self, chunks: AsyncIterator) -> None:
        self._tasks = [
            asyncio.create_task(self._read(chunks), name=f"tts-read-{self.session.session_id}"),
            asyncio.create_task(self._produce(), name=f"tts-produce-{self.session.session_id}"),
        ]

    def stop(self) -> None:
        """STOP: discard pending text and end the audio now."""
        self._segmenter.reset()
        self.channel.close()

    async def close(self) -> None:
        self.session.cancel.set()
        self.channel.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def frames(self) -> AsyncIterator[tuple[bytes, int]]:
        """(frame, text offset voiced once it has played) until the end of the audio."""
        while (item := await self.channel.get()) is not None:
            yield item

    # --- reader ----------------------------------------------------------------------------

    async def _read(self, chunks: AsyncIterator) -> None:
        sid = self.session.session_id
        try:
            async for chunk in chunks:
                if chunk.session_id and chunk.session_id != sid:
                    raise StreamError(
                        "INVALID_ARGUMENT",
                        f"TextChunk for session {chunk.session_id!r} on the stream of {sid!r}",
                    )
                self.stats.chars += len(chunk.text)
                if self.stats.chars > self.max_chars:
                    raise StreamError(
                        "INVALID_ARGUMENT",
                        f"text exceeds {self.max_chars} characters per stream ({self.stats.chars} received); "
                        "send it in several utterances",
                    )
                self.session.touch()
                for item in self._segmenter.push_spans(_CONTROL.sub(" ", chunk.text)):
                    self._segments.put_nowait(item)
                if chunk.is_final:
                    break
            # End of the request stream counts as is_final: flush what is left.
            for item in self._segmenter.flush_spans():
                self._segments.put_nowait(item)
        except StreamError as exc:
            await drain_requests(chunks)
            self.channel.close(exc)
        finally:
            self._segments.put_nowait(None)

    # --- producer --------------------------------------------------------------------------

    async def _produce(self) -> None:
        chain: OutputChain | None = None
        try:
            while (item := await self._segments.get()) is not None:
                segment, end = item
                if self.channel.closed or self.session.cancel.is_set():
                    break
                if not is_speakable(segment):
                    self.voiced = end  # nothing to say: voiced as soon as what came before is
                    continue
                adapter = self.session.lease.adapter  # read each time: RELOAD may swap it
                if chain is None or chain.in_rate != adapter.sample_rate:
                    if chain is not None:  # a RELOAD changed the rate: finish the old chain's tail
                        for frame in chain.flush():
                            await self._emit(frame)
                    chain = self._new_chain(adapter.sample_rate)
                self.stats.segments += 1
                # The output chain (loudness, resampling, framing) runs in the engine call too,
                # so the event loop only moves finished frames.
                async for pcm in adapter.stream(
                    segment,
                    cancel=self.session.cancel,
                    run=self._runner(chain),
                    tracker=self.tracker,
                    post=_segment_pusher(chain),
                    options=self.session.options,
                ):
                    self.stats.synth_s += pcm.synth_s
                    for frame in pcm.processed:
                        await self._emit(frame)
                self.voiced = end  # (but for the resampler's few-ms tail, still in the chain)
                await self._release_held()
            if chain is not None and not self.session.cancel.is_set():
                for frame in chain.flush():
                    await self._emit(frame)
            await self._release_held()
            self.channel.close()
        except asyncio.CancelledError:
            raise
        except InputRejected as exc:
            log.info("text refused by the engine session=%s: %s", self.session.session_id, exc)
            self.channel.close(StreamError("INVALID_ARGUMENT", str(exc)))
        except EngineBusy as exc:
            log.warning("engine busy session=%s: %s", self.session.session_id, exc)
            self.channel.close(StreamError("UNAVAILABLE", str(exc)))
        except Exception as exc:  # an engine failure ends this stream, not the worker
            log.exception("synthesis failed session=%s", self.session.session_id)
            self.channel.close(StreamError("INTERNAL", f"synthesis failed: {type(exc).__name__}: {exc}"))

    def _runner(self, chain: OutputChain):
        """Engine calls for this stream, scheduled by when their audio will be needed: the
        first audio at once, later audio when what was produced before it has nearly played
        out. Worked out per call, since one segment takes several calls (decoder windows)."""

        def run(fn):
            if self._audio_start is None:
                deadline = self._arrived
            else:
                deadline = self._audio_start + chain.samples_out / OUTPUT_RATE - PLAYOUT_MARGIN_S
            return self.scheduler.run(fn, deadline)

        return run

    def _new_chain(self, rate: int) -> OutputChain:
        return OutputChain(
            rate,
            normalize=self.audio.normalize,
            target_lufs=self.audio.target_lufs,
            ceiling_dbfs=self.audio.limiter_ceiling_dbfs,
        )

    async def _emit(self, frame: bytes) -> None:
        if self._audio_start is None:
            self._audio_start = asyncio.get_running_loop().time()
        await self._release_held()
        self._held = frame

    async def _release_held(self) -> None:
        if self._held is not None:
            frame, self._held = self._held, None
            await self.channel.put((frame, self.voiced))
