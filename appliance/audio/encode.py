"""Containers and codecs through PyAV (FFmpeg): reply audio encoded as it is produced, and uploaded
audio of any format decoded to PCM16 mono.

:class:`StreamEncoder` takes PCM16 mono chunks and returns whatever bytes the muxer has written so
far, so a reply can be sent while it is still being synthesised. The output is written to a sink
that cannot seek, as to a socket: the WAV header then carries FFmpeg's "length unknown" sizes,
which players (and FFmpeg itself) read to the end of the stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

from appliance.audio.resampling import StreamResampler


@dataclass(frozen=True)
class Format:
    container: str  # FFmpeg muxer name ("" for raw PCM)
    codec: str
    content_type: str
    rate: int | None = None  # the rate this format is always written at (None: the input's)
    options: tuple[tuple[str, str], ...] = ()  # muxer options


FORMATS: dict[str, Format] = {
    # Raw PCM is headerless, so the OpenAI API fixes its rate at 24 kHz; the others say their rate.
    "pcm": Format("", "pcm_s16le", "audio/pcm", rate=24_000),
    "wav": Format("wav", "pcm_s16le", "audio/wav"),
    "mp3": Format("mp3", "libmp3lame", "audio/mpeg"),
    # Opus in Ogg, as OpenAI serves it; a page per packet, not per second, so it streams.
    "opus": Format("ogg", "libopus", "audio/ogg", options=(("page_duration", "20000"),)),
    "flac": Format("flac", "flac", "audio/flac"),
    "aac": Format("adts", "aac", "audio/aac"),
}


class _Sink:
    """A write-only file for the muxer: no seek, so nothing it writes is rewritten later."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


class StreamEncoder:
    """PCM16 mono at ``rate`` in, ``name``'s bytes out (``feed`` … ``finish``). Not thread-safe;
    CPU-bound: call it off the event loop."""

    def __init__(self, name: str, rate: int, speed: float = 1.0) -> None:
        if name not in FORMATS:
            raise ValueError(f"unsupported format {name!r}; one of {', '.join(FORMATS)}")
        self.format = fmt = FORMATS[name]
        self.out_rate = fmt.rate or rate
        self._resampler = StreamResampler(rate, self.out_rate) if self.out_rate != rate else None
        self._tempo = _Tempo(self.out_rate, speed) if speed != 1.0 else None
        self._pts = 0
        self._sink = _Sink()
        self._container = None
        if fmt.container:
            self._container = av.open(self._sink, mode="w", format=fmt.container, options=dict(fmt.options))
            self._stream = self._container.add_stream(fmt.codec, rate=self.out_rate, layout="mono")
            self._fifo = av.AudioFifo()
            self._frame_size = self._stream.codec_context.frame_size or 1024

    @property
    def content_type(self) -> str:
        return self.format.content_type

    def feed(self, pcm: bytes) -> bytes:
        samples = np.frombuffer(pcm, dtype="<i2")
        if self._resampler is not None:
            samples = _to_int16(self._resampler.process(samples.astype(np.float32) / 32768))
        if self._tempo is not None:
            samples = self._tempo.process(samples)
        return self._write(samples)

    def finish(self) -> bytes:
        tail = np.zeros(0, np.int16)
        if self._resampler is not None:
            tail = _to_int16(self._resampler.flush())
        if self._tempo is not None:
            tail = np.concatenate([self._tempo.process(tail), self._tempo.flush()])
        out = self._write(tail, last=True)
        if self._container is not None:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            out += self._sink.take()
        return out

    def _write(self, samples: np.ndarray, last: bool = False) -> bytes:
        if self._container is None:
            return samples.astype("<i2").tobytes()
        if samples.size:
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = self.out_rate
            frame.pts = None
            self._fifo.write(frame)
        # Encoders with a fixed frame size (MP3, AAC, Opus) take exactly that many samples a call.
        while self._fifo.samples >= self._frame_size or (last and self._fifo.samples):
            frame = self._fifo.read(min(self._frame_size, self._fifo.samples))
            frame.pts = self._pts
            self._pts += frame.samples
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        return self._sink.take()


class _Tempo:
    """Faster or slower speech at the same pitch: FFmpeg's ``atempo`` filter."""

    def __init__(self, rate: int, speed: float) -> None:
        if not 0.25 <= speed <= 4.0:
            raise ValueError(f"speed must be between 0.25 and 4.0, got {speed}")
        self.rate = rate
        self.graph = av.filter.Graph()
        src = self.graph.add_abuffer(format="s16", sample_rate=rate, layout="mono")
        # atempo takes 0.5–2.0 per stage: chain stages for the rest of the range.
        stages, left = [], speed
        while left > 2.0 or left < 0.5:
            stage = 2.0 if left > 2.0 else 0.5
            stages.append(stage)
            left /= stage
        stages.append(left)
        node = src
        for stage in stages:
            tempo = self.graph.add("atempo", f"{stage:.6f}")
            node.link_to(tempo)
            node = tempo
        sink = self.graph.add("abuffersink")
        node.link_to(sink)
        self.graph.configure()
        self._pts = 0

    def process(self, samples: np.ndarray) -> np.ndarray:
        if not samples.size:
            return np.zeros(0, np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts = self.rate, self._pts
        self._pts += samples.size
        self.graph.push(frame)
        return self._pull()

    def flush(self) -> np.ndarray:
        self.graph.push(None)
        return self._pull()

    def _pull(self) -> np.ndarray:
        out = []
        while True:
            try:
                frame = self.graph.pull()
            except (av.BlockingIOError, av.EOFError):
                break
            out.append(frame.to_ndarray().reshape(-1).astype(np.int16))
        return np.concatenate(out) if out else np.zeros(0, np.int16)


def _to_int16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1.0, 1.0) * 32767).astype(np.int16)


class UndecodableAudio(ValueError):
    """An upload that is not audio FFmpeg can read (a wrong header, a truncated file, no audio stream)."""


def decode_audio(data: bytes, rate: int = 16_000) -> np.ndarray:
    """Any container/codec/rate/width/channels FFmpeg reads → int16 mono at ``rate``. CPU-bound."""
    import io

    if not data:
        raise UndecodableAudio("the file is empty")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise UndecodableAudio("the file holds no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            parts = []
            for frame in container.decode(audio=0):
                parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
            parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    except av.FFmpegError as exc:
        raise UndecodableAudio(f"the file is not audio that can be decoded: {exc}") from None
    if not parts:
        raise UndecodableAudio("the file holds no audio samples")
    return np.concatenate(parts).astype(np.int16)
