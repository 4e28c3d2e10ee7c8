"""One Wyoming connection: describe, synthesize (whole and streaming), transcribe.

Events are read one at a time; a synthesize is answered before the next event is read, while a
streaming synthesis (``synthesize-start`` … ``synthesize-stop``) sends audio from a task as the
worker produces it, so text chunks keep arriving meanwhile. An event that does not fit the state
(audio with no ``audio-start``, a chunk with no ``synthesize-start``) is answered with an ``error``
event and the connection stays usable (a malformed event too, but for broken framing, which closes
it). Whatever way the connection ends, its worker session ends.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import grpc
import numpy as np
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from appliance.audio import OUTPUT_RATE, StreamResampler
from appliance.audio.pcm import pcm_to_mono_float
from appliance.interop.speech import TtsUnavailable, speech_session
from appliance.interop.wyoming_events import BadEvent, bad_fields, read_event

if TYPE_CHECKING:
    from appliance.interop.wyoming_server import WyomingService

log = logging.getLogger(__name__)

WIDTH, CHANNELS = 2, 1  # TTS audio is PCM16 mono
CHUNK_FRAMES = 5  # 20 ms frames per audio-chunk after the first (which goes out alone, at once)


class WyomingHandler(AsyncEventHandler):
    def __init__(
        self, service: WyomingService, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super().__init__(reader, writer)
        self.service = service
        self.peer = writer.get_extra_info("peername")
        self.rate = service.settings.wyoming.tts_sample_rate or OUTPUT_RATE
        self._refused = not service.allows(self.peer)
        self._busy = self._refused or not service.admit(self)
        self._stream_session = None  # the context of an open streaming synthesis
        self._stream_task: asyncio.Task | None = None
        self._speech = None
        self._audio: list[np.ndarray] | None = None  # transcribe: mono float32 at _audio_rate
        self._audio_rate = 0
        self._audio_s = 0.0
        self._language: str | None = None
        # A request already answered with an error ("synthesize": a stream, "audio": a transcription):
        # the rest of its events are dropped quietly, up to its stop event, not answered one by one.
        self._dropping: str | None = None

    async def run(self) -> None:
        if self._refused:  # said at once, before the client asks anything, and the connection closed
            await self._error("access_denied", f"{self.peer[0]} is not in [access] wyoming_allow")
            self.writer.close()
            return
        # The library's loop, but with a reader that bounds and checks the framing.
        self._is_running = True
        try:
            while self._is_running:
                try:
                    event = await read_event(self.reader)
                except BadEvent as exc:
                    if not self._busy:
                        await self._error("bad_event", f"{exc}; closing the connection")
                    break
                if event is None or not await self.handle_event(event):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):  # the client went away mid-event
            log.info("wyoming client gone peer=%s", self.peer)
        finally:
            await self.disconnect()
            self.writer.close()

    async def handle_event(self, event: Event) -> bool:
        if self._busy:
            await self._error(
                "busy", f"the appliance is serving its maximum of {self.service.max_clients} clients"
            )
            return False
        problem = bad_fields(event)
        if problem is not None:
            await self._error("bad_event", problem)
            return True
        try:
            return await self._dispatch(event)
        except (ConnectionError, asyncio.IncompleteReadError):
            return False
        except Exception as exc:  # a bug must not leave the client waiting for an answer
            log.exception("wyoming event %s failed peer=%s", event.type, self.peer)
            await self._error("internal", f"{event.type} failed: {exc}")
            return True

    async def _dispatch(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event((await self.service.info()).event())
        elif Ping.is_type(event.type):
            await self.write_event(Pong(text=Ping.from_event(event).text).event())
        elif SynthesizeStart.is_type(event.type):
            self._dropping = None
            await self._synthesize_start(SynthesizeStart.from_event(event))
        elif self._dropping == "synthesize" and event.type in (
            "synthesize-chunk",
            "synthesize",
            "synthesize-stop",
        ):
            self._dropping = None if SynthesizeStop.is_type(event.type) else self._dropping
        elif self._dropping == "audio" and event.type in ("audio-chunk", "audio-stop"):
            self._dropping = None if AudioStop.is_type(event.type) else self._dropping
        elif SynthesizeChunk.is_type(event.type):
            if self._speech is None:
                await self._error("out_of_order", "synthesize-chunk without synthesize-start")
            else:
                self._speech.feed(SynthesizeChunk.from_event(event).text)
        elif SynthesizeStop.is_type(event.type):
            await self._synthesize_stop()
        elif Synthesize.is_type(event.type):
            if self._stream_session is None:  # inside a stream it only repeats the chunks, for old servers
                await self._synthesize(Synthesize.from_event(event))
        elif Transcribe.is_type(event.type):
            self._language = Transcribe.from_event(event).language
        elif AudioStart.is_type(event.type):
            self._audio, self._audio_rate, self._audio_s = [], AudioStart.from_event(event).rate, 0.0
            self._dropping = None
        elif AudioChunk.is_type(event.type):
            await self._audio_chunk(AudioChunk.from_event(event))
        elif AudioStop.is_type(event.type):
            await self._audio_stop()
        else:
            await self._error("unexpected_event", f"{event.type!r} is not an event this server handles")
        return True

    # --- TTS --------------------------------------------------------------------------------

    async def _voice(self, voice) -> str | None:
        name = voice.name if voice is not None else None
        model_id = await self.service.catalog.resolve(name)
        if model_id is None:
            await self._error("unknown_voice", f"no worker offers the voice {name!r}")
        return model_id

    async def _synthesize(self, request: Synthesize) -> None:
        if not request.text.strip():
            await self._error("empty_text", "synthesize needs some text")
            return
        model_id = await self._voice(request.voice)
        if model_id is None:
            return
        task = asyncio.current_task()
        self.service.speaking.add(task)
        try:
            async with speech_session(
                self.service.pool, self.service.settings, model_id, "wyoming"
            ) as speech:
                speech.feed(request.text)
                speech.finish()
                await self._send_audio(speech)
        except TtsUnavailable as exc:
            await self._error("tts_unavailable", str(exc))
        except grpc.aio.AioRpcError as exc:  # the worker refused the text (e.g. over its max_text_chars)
            await self._error("tts_refused", f"{exc.code().name}: {exc.details()}")
        finally:
            self.service.speaking.discard(task)

    async def _synthesize_start(self, request: SynthesizeStart) -> None:
        if self._stream_session is not None:
            await self._error("out_of_order", "synthesize-start while a streaming synthesis is open")
            return
        model_id = await self._voice(request.voice)
        if model_id is None:
            self._dropping = "synthesize"
            return
        session = speech_session(self.service.pool, self.service.settings, model_id, "wyoming")
        try:
            self._speech = await session.__aenter__()
        except TtsUnavailable as exc:
            self._dropping = "synthesize"
            await self._error("tts_unavailable", str(exc))
            return
        self._stream_session = session
        self._stream_task = asyncio.create_task(self._send_audio(self._speech), name="wyoming-stream")

    async def _synthesize_stop(self) -> None:
        if self._stream_session is None:
            await self._error("out_of_order", "synthesize-stop without synthesize-start")
            return
        self._speech.finish()
        try:
            await self._stream_task
        except TtsUnavailable as exc:
            await self._error("tts_unavailable", str(exc))
        except grpc.aio.AioRpcError as exc:
            await self._error("tts_refused", f"{exc.code().name}: {exc.details()}")
        finally:
            await self._end_stream()
        await self.write_event(SynthesizeStopped().event())

    async def _end_stream(self) -> None:
        session, task = self._stream_session, self._stream_task
        self._stream_session = self._stream_task = self._speech = None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if session is not None:
            await session.__aexit__(None, None, None)

    async def _send_audio(self, speech) -> None:
        """audio-start, the frames as they come (resampled when asked), audio-stop."""
        resampler = StreamResampler(OUTPUT_RATE, self.rate) if self.rate != OUTPUT_RATE else None
        started, held = False, []
        async for frame in speech.frames():
            if not started:
                await self.write_event(AudioStart(rate=self.rate, width=WIDTH, channels=CHANNELS).event())
                started = True
                await self._write_pcm(frame, resampler)  # the first frame alone, at once
                continue
            held.append(frame)
            if len(held) >= CHUNK_FRAMES:
                await self._write_pcm(b"".join(held), resampler)
                held = []
        if not started:
            await self.write_event(AudioStart(rate=self.rate, width=WIDTH, channels=CHANNELS).event())
        tail = b"".join(held)
        if resampler is not None:
            tail = _pcm16(resampler.process(_float(tail))) + _pcm16(resampler.flush())
            resampler = None
        if tail:
            await self._write_pcm(tail, None)
        await self.write_event(AudioStop().event())

    async def _write_pcm(self, pcm: bytes, resampler) -> None:
        if resampler is not None:
            pcm = _pcm16(resampler.process(_float(pcm)))
        if pcm:
            await self.write_event(
                AudioChunk(rate=self.rate, width=WIDTH, channels=CHANNELS, audio=pcm).event()
            )

    # --- ASR --------------------------------------------------------------------------------

    async def _audio_chunk(self, chunk: AudioChunk) -> None:
        if self._audio is None:
            await self._error("out_of_order", "audio-chunk without audio-start")
            return
        if chunk.rate != self._audio_rate:
            self._audio, self._dropping = None, "audio"
            await self._error(
                "bad_audio", f"audio-chunk at {chunk.rate} Hz after audio-start at {self._audio_rate} Hz"
            )
            return
        try:
            samples = pcm_to_mono_float(chunk.audio, chunk.width, chunk.channels)
        except ValueError as exc:
            self._audio, self._dropping = None, "audio"
            await self._error("bad_audio", str(exc))
            return
        self._audio_s += samples.size / chunk.rate
        if self._audio_s > self.service.settings.wyoming.max_audio_s:
            self._audio, self._dropping = None, "audio"
            await self._error(
                "too_long", f"more than {self.service.settings.wyoming.max_audio_s:g} s of audio"
            )
            return
        self._audio.append(samples)

    async def _audio_stop(self) -> None:
        if self._audio is None:
            await self._error("out_of_order", "audio-stop without audio-start")
            return
        audio, rate, self._audio = self._audio, self._audio_rate, None
        samples = np.concatenate(audio) if audio else np.zeros(0, np.float32)
        asr = self.service.asr
        if self._language and self._language.split("_")[0].split("-")[0] != asr.language:
            await self._error(
                "unsupported_language", f"the ASR model transcribes {asr.language!r}, not {self._language!r}"
            )
            return
        transcript = await asr.transcribe(samples, sample_rate=rate)
        language = transcript.language
        await self.write_event(TranscriptStart(language=language).event())
        for segment in transcript.segments or []:
            if segment.text:
                await self.write_event(TranscriptChunk(text=segment.text + " ").event())
        await self.write_event(Transcript(text=transcript.text, language=language).event())
        await self.write_event(TranscriptStop().event())
        self._language = None

    # --- the rest ---------------------------------------------------------------------------

    async def _error(self, code: str, text: str) -> None:
        log.info("wyoming error peer=%s code=%s: %s", self.peer, code, text)
        try:
            await self.write_event(Error(text=text, code=code).event())
        except ConnectionError:
            pass

    async def disconnect(self) -> None:
        await self._end_stream()
        self.service.leave(self)


def _float(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0


def _pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1.0, 1.0) * 32767).astype("<i2").tobytes()
