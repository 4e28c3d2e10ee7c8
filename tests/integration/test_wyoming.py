"""`appliance wyoming` against the `wyoming` library's own async TCP client: describe, synthesize
(whole and streaming, checked by Whisper), transcribe at any rate/width/channels, bad input, a
client gone mid-stream, several clients at once."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from services import WyomingProcess
from speech import listen, wer
from voices import pad, piper_speech
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from appliance.tts.client import TTSClient

SAID = "The kitchen lights are now off, and the front door is locked."


@pytest.fixture(scope="module")
def wyoming(piper_worker):
    server = WyomingProcess([piper_worker.address])
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


async def _read_until(client: AsyncTcpClient, last: str) -> list:
    events = []
    while True:
        event = await asyncio.wait_for(client.read_event(), 60)
        assert event is not None, "the server closed the connection"
        events.append(event)
        if event.type in (last, "error"):
            return events


def _audio(events) -> tuple[bytes, int]:
    chunks = [AudioChunk.from_event(e) for e in events if AudioChunk.is_type(e.type)]
    assert chunks, [e.type for e in events]
    assert {(c.width, c.channels) for c in chunks} == {(2, 1)}
    return b"".join(c.audio for c in chunks), chunks[0].rate


async def synthesize(port: int, text: str, voice: str | None = None) -> tuple[list, bytes, int]:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(
            Synthesize(text=text, voice=SynthesizeVoice(name=voice) if voice else None).event()
        )
        events = await _read_until(client, "audio-stop")
    if events[-1].type == "error":
        return events, b"", 0
    assert AudioStart.is_type(events[0].type)
    return events, *_audio(events)


async def recognise(port: int, samples: np.ndarray, rate: int, width: int, channels: int) -> list:
    if width == 4:
        raw = (samples.astype(np.int32) << 16).astype("<i4")
    elif width == 3:
        raw = np.frombuffer((samples.astype(np.int32) << 8).astype("<i4").tobytes(), np.uint8).reshape(-1, 4)[
            :, :3
        ]
    else:
        raw = samples.astype("<i2")
    frames = (
        np.repeat(raw.reshape(len(samples), -1), channels, axis=0).reshape(len(samples), -1)
        if channels > 1
        else raw
    )
    data = np.ascontiguousarray(frames).tobytes()
    step = rate // 10 * width * channels
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
        for i in range(0, len(data), step):
            chunk = AudioChunk(rate=rate, width=width, channels=channels, audio=data[i : i + step])
            await client.write_event(chunk.event())
        await client.write_event(AudioStop().event())
        return await _read_until(client, "transcript-stop")


async def test_describe_lists_the_workers_voices_and_the_asr_model(wyoming):
    async with AsyncTcpClient("127.0.0.1", wyoming.port) as client:
        await client.write_event(Describe().event())
        info = Info.from_event(await client.read_event())
    (tts,) = info.tts
    assert tts.supports_synthesize_streaming
    voice = next(v for v in tts.voices if v.name == "piper-en_US-joe-medium")
    assert voice.installed and voice.languages == ["en_US"] and voice.attribution.name
    (asr,) = info.asr
    assert [m.name for m in asr.models] == ["whisper-tiny.en"] and asr.models[0].languages == ["en"]
    assert asr.supports_transcript_streaming


async def test_synthesize_sends_48khz_audio_whisper_understands(wyoming):
    events, pcm, rate = await synthesize(wyoming.port, SAID, voice="piper-en_US-joe-medium")
    assert rate == 48000 and AudioStop.is_type(events[-1].type)
    assert wer(SAID, listen(pcm, rate, SAID)) <= 0.2


async def test_streaming_synthesis_answers_as_text_arrives_and_ends_with_synthesize_stopped(wyoming):
    text = "Streaming text is spoken as it comes. The second sentence follows the first."
    async with AsyncTcpClient("127.0.0.1", wyoming.port) as client:
        await client.write_event(SynthesizeStart().event())
        for word in text.split(" ")[:8]:  # the first sentence and a bit
            await client.write_event(SynthesizeChunk(text=word + " ").event())
        first = await asyncio.wait_for(client.read_event(), 60)
        assert AudioStart.is_type(first.type)  # audio before the text is finished
        for word in text.split(" ")[8:]:
            await client.write_event(SynthesizeChunk(text=word + " ").event())
        await client.write_event(Synthesize(text=text).event())  # sent for old servers: not spoken twice
        await client.write_event(SynthesizeStop().event())
        events = [first, *await _read_until(client, "synthesize-stopped")]
    assert [e.type for e in events][-2:] == ["audio-stop", "synthesize-stopped"]
    assert sum(AudioStart.is_type(e.type) for e in events) == 1
    pcm, rate = _audio(events)
    assert wer(text, listen(pcm, rate, text)) <= 0.2


@pytest.mark.parametrize(
    ("rate", "width", "channels"), [(16000, 2, 1), (8000, 4, 2), (44100, 3, 1), (22050, 2, 2)]
)
async def test_transcribe_any_rate_width_and_channels(wyoming, rate, width, channels):
    speech = pad(piper_speech(SAID, rate=rate), rate, 0.3, 0.3)
    events = await recognise(wyoming.port, speech, rate, width, channels)
    types = [e.type for e in events]
    assert types[0] == "transcript-start" and types[-2:] == ["transcript", "transcript-stop"], types
    text = Transcript.from_event(events[-2]).text
    assert wer(SAID, text) <= 0.2
    assert " ".join(e.data["text"].strip() for e in events if e.type == "transcript-chunk") == text


async def test_events_out_of_order_get_an_error_and_the_connection_goes_on(wyoming):
    async with AsyncTcpClient("127.0.0.1", wyoming.port) as client:
        for event in (
            AudioChunk(rate=16000, width=2, channels=1, audio=b"\0\0").event(),
            AudioStop().event(),
            SynthesizeChunk(text="hello").event(),
            SynthesizeStop().event(),
        ):
            await client.write_event(event)
            answer = await asyncio.wait_for(client.read_event(), 10)
            assert answer.type == "error" and answer.data["code"] == "out_of_order", answer
        await client.write_event(AudioStart(rate=16000, width=5, channels=1).event())
        for _ in range(3):  # one error for the request, not one per chunk
            await client.write_event(AudioChunk(rate=16000, width=5, channels=1, audio=b"\0" * 10).event())
        await client.write_event(AudioStop().event())
        answer = await asyncio.wait_for(client.read_event(), 10)
        assert answer.type == "error" and answer.data["code"] == "bad_audio"
        await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="no-such-voice")).event())
        for event in (
            SynthesizeChunk(text="Hello.").event(),
            Synthesize(text="Hello.").event(),
            SynthesizeStop().event(),
        ):
            await client.write_event(event)
        answer = await asyncio.wait_for(client.read_event(), 10)
        assert answer.type == "error" and answer.data["code"] == "unknown_voice"
        await client.write_event(Describe().event())
        assert Info.is_type((await asyncio.wait_for(client.read_event(), 10)).type)


async def test_unknown_voice_and_empty_text_are_errors(wyoming):
    events, _, _ = await synthesize(wyoming.port, "Hello.", voice="no-such-voice")
    assert events[-1].type == "error" and events[-1].data["code"] == "unknown_voice"
    events, _, _ = await synthesize(wyoming.port, "   ")
    assert events[-1].type == "error" and events[-1].data["code"] == "empty_text"


async def _sessions(address: str) -> int:
    async with TTSClient(address) as client:
        return (await client.capabilities()).active_sessions


async def test_a_client_gone_mid_stream_leaves_no_worker_session(wyoming, piper_worker):
    long_text = " ".join(["This reply is long and the client hangs up while it is still being spoken."] * 6)
    reader, writer = await asyncio.open_connection("127.0.0.1", wyoming.port)
    client = AsyncTcpClient("127.0.0.1", wyoming.port)
    client._reader, client._writer = reader, writer
    await client.write_event(Synthesize(text=long_text).event())
    while not AudioChunk.is_type((await asyncio.wait_for(client.read_event(), 60)).type):
        pass
    assert await _sessions(piper_worker.address) == 1
    writer.close()
    deadline = time.monotonic() + 15
    while await _sessions(piper_worker.address) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await _sessions(piper_worker.address) == 0
    _, pcm, _ = await synthesize(wyoming.port, "Still here.")  # and the server serves the next client
    assert pcm


async def test_stopping_the_server_mid_synthesis_ends_its_worker_session(piper_worker):
    server = WyomingProcess([piper_worker.address])
    try:
        await asyncio.to_thread(server.wait_ready)
        long_text = " ".join(["The server is stopped while this reply is still being spoken."] * 6)
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            await client.write_event(Synthesize(text=long_text).event())
            await _read_until(client, "audio-chunk")
            assert await _sessions(piper_worker.address) == 1
            assert await asyncio.to_thread(server.stop) == 0  # SIGTERM, as systemctl stop sends
    finally:
        server.stop()
    # No waiting: the server ended the session before it exited (a worker reaps only after minutes).
    assert await _sessions(piper_worker.address) == 0


async def test_several_clients_at_once(wyoming):
    texts = [
        "Good morning, how did you sleep?",
        "The oven is hot and ready for the bread.",
        "Playing your evening playlist now.",
        "Your package was delivered at noon.",
    ]
    speech = pad(piper_speech(SAID, rate=16000), 16000, 0.3, 0.3)
    results = await asyncio.gather(
        *(synthesize(wyoming.port, t) for t in texts), recognise(wyoming.port, speech, 16000, 2, 1)
    )
    for text, (_, pcm, rate) in zip(texts, results[:-1], strict=True):
        assert wer(text, listen(pcm, rate, text)) <= 0.25
    assert wer(SAID, Transcript.from_event(results[-1][-2]).text) <= 0.2


async def _admitted(port: int) -> AsyncTcpClient:
    """A connection the server serves: a client that just hung up may still hold the one place."""
    deadline = time.monotonic() + 10
    while True:
        client = AsyncTcpClient("127.0.0.1", port)
        await client.connect()
        await client.write_event(Describe().event())
        if (
            Info.is_type((await asyncio.wait_for(client.read_event(), 10)).type)
            or time.monotonic() > deadline
        ):
            return client
        await client.disconnect()
        await asyncio.sleep(0.1)


async def test_audio_resampled_to_the_rate_asked_for_and_a_client_over_the_limit_refused(piper_worker):
    env = {"APPLIANCE_WYOMING__TTS_SAMPLE_RATE": "22050", "APPLIANCE_WYOMING__MAX_CLIENTS": "1"}
    server = WyomingProcess([piper_worker.address], env=env)
    try:
        await asyncio.to_thread(server.wait_ready)
        holder = await _admitted(server.port)
        async with AsyncTcpClient("127.0.0.1", server.port) as extra:
            await extra.write_event(Describe().event())
            refused = await asyncio.wait_for(extra.read_event(), 10)
        await holder.write_event(Synthesize(text=SAID).event())
        events = await _read_until(holder, "audio-stop")
        await holder.disconnect()
    finally:
        server.stop()
    assert refused.type == "error" and refused.data["code"] == "busy"
    pcm, rate = _audio(events)
    assert rate == 22050
    assert wer(SAID, listen(pcm, rate, SAID)) <= 0.2
