"""WebRTC audio in both directions: any incoming frame to mono 48 kHz PCM16 (as soon as its packet
is in order), and the reply track that plays queued 20 ms frames in real time (silence in between)."""

from __future__ import annotations

import asyncio
import collections
import fractions

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from appliance.audio import FRAME_BYTES, FRAME_SAMPLES, OUTPUT_RATE

RATE = OUTPUT_RATE  # the microphone is taken at the rate reply audio goes out at
SILENCE = bytes(FRAME_BYTES)
TIME_BASE = fractions.Fraction(1, RATE)
# aiortc holds each received audio packet until four more have come (prefetch=4: ~80 ms at 20 ms
# packets), smoothing for a listener. Nobody listens to the microphone here: the VAD and Whisper
# only need the packets in order, which the buffer ensures whatever its prefetch (it releases a
# frame only once every packet before it is in), so one packet of look-ahead is enough.
UPLINK_PREFETCH = 1


def decode_on_arrival(receiver) -> bool:
    """Give ``receiver`` (an aiortc ``RTCRtpReceiver`` for audio) a jitter buffer that releases each
    frame as soon as the next packet shows it complete; False if this aiortc keeps it elsewhere."""
    try:
        from aiortc.jitterbuffer import JitterBuffer

        capacity = receiver._RTCRtpReceiver__jitter_buffer.capacity
    except (ImportError, AttributeError):
        return False
    receiver._RTCRtpReceiver__jitter_buffer = JitterBuffer(capacity=capacity, prefetch=UPLINK_PREFETCH)
    return True


class Downmixer:
    """Any ``av.AudioFrame`` → mono PCM16LE at 48 kHz (numpy for 48 kHz s16, else av's resampler)."""

    _resampler: av.AudioResampler | None = None

    def __call__(self, frame: av.AudioFrame) -> bytes:
        channels = len(frame.layout.channels)
        if frame.sample_rate == RATE and frame.format.name in ("s16", "s16p"):
            a = frame.to_ndarray()
            a = a.reshape(channels, -1) if frame.format.is_planar else a.reshape(-1, channels).T
            mono = a[0] if channels == 1 else np.round(a.astype(np.int32).mean(axis=0)).astype(np.int16)
            return mono.astype("<i2").tobytes()
        try:
            out = (self._resampler or self._new()).resample(frame)
        except ValueError:  # the input format changed mid-stream: start a new resampler
            out = self._new().resample(frame)
        return b"".join(f.to_ndarray().astype("<i2").tobytes() for f in out)

    def _new(self) -> av.AudioResampler:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        return self._resampler


class OutboundAudio(MediaStreamTrack):
    """The reply audio track: 20 ms s16 mono 48 kHz frames in real time, silence when none is queued."""

    kind = "audio"

    def __init__(self, max_frames: int = 6) -> None:
        super().__init__()
        self.max_frames = max_frames
        self._frames: collections.deque[bytes] = collections.deque()
        self._start: float | None = None
        self._pts = 0
        self.dropped = 0

    def push(self, pcm: bytes) -> None:
        for i in range(0, len(pcm), FRAME_BYTES):
            self._frames.append(pcm[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\0"))
        while len(self._frames) > self.max_frames:  # the pacer keeps less: only a stalled track gets here
            self._frames.popleft()
            self.dropped += 1

    def flush(self) -> int:
        dropped, self._frames = len(self._frames), collections.deque()
        return dropped

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            self._pts += FRAME_SAMPLES
            wait = self._start + self._pts / RATE - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -0.1:  # the loop stalled: carry on from now instead of bursting to catch up
                self._start -= wait
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(self._frames.popleft() if self._frames else SILENCE)
        frame.pts, frame.sample_rate, frame.time_base = self._pts, RATE, TIME_BASE
        return frame
