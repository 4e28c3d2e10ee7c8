"""`appliance wyoming` under bounded fuzzing: a real server (a real Piper worker, real Whisper) gets
over raw TCP a seeded mix of malformed events — header lines that are not JSON or not objects,
fields of the wrong type, data_length and payload_length that lie (longer or shorter than what is
sent, negative, huge, not numbers), unknown event types, audio with odd byte counts or before
audio-start, synthesize with missing or odd text, binary junk, connections dropped mid-payload —
and, through the `wyoming` library, well-formed events in random wrong orders. Afterwards the
server is alive, its log has no traceback, the worker holds no session (its /metrics say so), and a
real `wyoming` client still synthesizes and transcribes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import urllib.request
from collections.abc import AsyncIterator

import pytest
from services import WyomingProcess
from speech import wer
from voices import pad, piper_speech
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.ping import Ping
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

SEED = 20261204
CONNECTIONS = 96
EVENTS_PER_CONNECTION = 8
ORDERINGS = 24
AT_ONCE = 6
SAID = "The kitchen lights are now off, and the front door is locked."
DOCUMENTED_ERRORS = {
    "unknown_voice",
    "empty_text",
    "out_of_order",
    "bad_audio",
    "too_long",
    "unexpected_event",
}
ANSWER_S = 60  # a guard against a server that never answers, not a measurement


@pytest.fixture(scope="module")
def wyoming(piper_worker):
    server = WyomingProcess([piper_worker.address])
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def frame(header: object, data: bytes = b"", payload: bytes = b"") -> bytes:
    line = header if isinstance(header, bytes) else json.dumps(header).encode()
    return line + b"\n" + data + payload


def event(type_: object, data: object = None, payload: bytes = b"", **header) -> bytes:
    """An event as the wire carries it; ``header`` may set data_length/payload_length to lies."""
    head: dict = {"type": type_, "version": "1.0.0"}
    raw = b""
    if data is not None:
        raw = json.dumps(data).encode()
        head["data_length"] = len(raw)
    if payload:
        head["payload_length"] = len(payload)
    head.update(header)
    return frame(head, raw, payload)


def odd_value(rng: random.Random) -> object:
    return rng.choice([None, 0, -1, 1.5, True, "", "x", [], {}, [1], {"a": 1}, 10**20, "16000"])


def audio_format(rng: random.Random) -> dict:
    fmt = {"rate": 16000, "width": 2, "channels": 1}
    if rng.random() < 0.5:
        key = rng.choice(list(fmt))
        if rng.random() < 0.2:
            del fmt[key]
        else:
            fmt[key] = rng.choice([odd_value(rng), 0, -16000, 10**9, 3, 5, 8000, 44100, 64])
    return fmt


def junk(rng: random.Random) -> tuple[bytes, bool]:
    """One malformed frame; True when it breaks the framing (what follows may be read as its data)."""
    choices = [
        lambda: (rng.randbytes(rng.randrange(1, 200)).replace(b"\n", b" ") + b"\n", False),
        lambda: (
            rng.choice([b"not json", b"{", b"[1,2]", b"42", b'"describe"', b"null", b"{}"]) + b"\n",
            False,
        ),
        lambda: (frame({"type": odd_value(rng)}), False),
        lambda: (frame({"no": "type"}), False),
        lambda: (
            event(rng.choice(["nope", "info", "DESCRIBE", "audio-chunk ", "transcript", "error"])),
            False,
        ),
        lambda: (frame({"type": "describe", "data": odd_value(rng)}), False),
        lambda: (event("synthesize", {"text": "Hi."}, data_length=odd_value(rng)), True),
        lambda: (event("synthesize", {"text": "Hi."}, data_length=rng.choice([-5, 3, 400, 10**12])), True),
        lambda: (
            event("audio-chunk", audio_format(rng), rng.randbytes(64), payload_length=odd_value(rng)),
            True,
        ),
        lambda: (
            event(
                "audio-chunk",
                audio_format(rng),
                rng.randbytes(64),
                payload_length=rng.choice([-1, 7, 10**12]),
            ),
            True,
        ),
        lambda: (frame({"type": "synthesize", "data_length": 9}, b"not json!"), False),
        lambda: (frame({"type": "synthesize", "data_length": 3}, b"[1]"), False),
        lambda: (
            event("audio-chunk", audio_format(rng), rng.randbytes(rng.choice([1, 3, 333, 3200]))),
            False,
        ),
        lambda: (event("audio-start", audio_format(rng)), False),
        lambda: (event("audio-stop", rng.choice([None, {"timestamp": "x"}])), False),
        lambda: (event("transcribe", {"language": odd_value(rng)}), False),
        lambda: (event("synthesize", rng.choice([{}, {"voice": {"name": "piper-en_US-joe-medium"}}])), False),
        lambda: (event("synthesize", {"text": odd_value(rng), "voice": odd_value(rng)}), False),
        lambda: (event("synthesize", {"text": "Hi.", "voice": {"name": odd_value(rng)}}), False),
        lambda: (event("synthesize", {"text": "word " * rng.choice([5_000, 30_000])}), False),
        lambda: (event("synthesize-start", {"voice": odd_value(rng)}), False),
        lambda: (event("synthesize-chunk", {"text": odd_value(rng)}), False),
        lambda: (event(rng.choice(["synthesize-stop", "synthesize-start", "ping", "describe"])), False),
        lambda: (event("ping", {"text": odd_value(rng)}), False),
        lambda: (b"x" * 70_000 + b"\n", True),  # a header line over the reader's 64 KiB limit
        lambda: (rng.randbytes(rng.randrange(1, 4000)), True),  # binary, no newline
    ]
    return rng.choice(choices)()


async def drain(reader: asyncio.StreamReader) -> None:
    """Read whatever the server says until it closes (so that it never waits on a full socket)."""
    try:
        while await reader.read(1 << 16):
            pass
    except (ConnectionError, OSError):
        pass


async def fuzz_one(port: int, rng: random.Random) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    draining = asyncio.create_task(drain(reader))
    try:
        for _ in range(rng.randrange(1, EVENTS_PER_CONNECTION)):
            data, breaks_framing = junk(rng)
            if rng.random() < 0.1:  # dropped mid-event
                writer.write(data[: rng.randrange(1, len(data) + 1)])
                break
            writer.write(data)
            await writer.drain()
            if breaks_framing:
                break
    except (ConnectionError, OSError):
        pass
    finally:
        if rng.random() < 0.5:
            writer.transport.abort()  # a reset, no goodbye
        else:
            writer.close()
        draining.cancel()
        await asyncio.gather(draining, return_exceptions=True)


def library_event(rng: random.Random) -> Event:
    fmt = {
        "rate": rng.choice([8000, 16000, 22050]),
        "width": rng.choice([1, 2, 4]),
        "channels": rng.choice([1, 2]),
    }
    choices = [
        lambda: Describe().event(),
        lambda: Ping(text=rng.choice([None, "hi"])).event(),
        lambda: Synthesize(text=rng.choice(["Hi.", " ", "", "a\x00b\x1b."])).event(),
        lambda: Synthesize(
            text="Hi.", voice=SynthesizeVoice(name=rng.choice(["no-such-voice", "x" * 300]))
        ).event(),
        lambda: SynthesizeStart().event(),
        lambda: SynthesizeStart(voice=SynthesizeVoice(language=rng.choice(["en_US", "xx"]))).event(),
        lambda: SynthesizeChunk(text=rng.choice(["One. ", "two ", ""])).event(),
        lambda: SynthesizeStop().event(),
        lambda: Transcribe(language=rng.choice([None, "en", "de_DE"])).event(),
        lambda: AudioStart(**fmt).event(),
        lambda: AudioChunk(**fmt, audio=rng.randbytes(rng.choice([0, 1, 320, 3201]))).event(),
        lambda: AudioStop().event(),
    ]
    return rng.choice(choices)()


async def read_until(client: AsyncTcpClient, done) -> list[Event]:
    events = []
    while True:
        got = await asyncio.wait_for(client.read_event(), ANSWER_S)
        assert got is not None, f"the server closed the connection after {[e.type for e in events]}"
        events.append(got)
        if done(got):
            return events


@contextlib.asynccontextmanager
async def admitted(port: int) -> AsyncIterator[AsyncTcpClient]:
    """A connection the server serves: clients that just hung up may still hold every place
    (their transcriptions still queued for Whisper), and a client over the limit is told busy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ANSWER_S
    while True:
        client = AsyncTcpClient("127.0.0.1", port)
        await client.connect()
        await client.write_event(Describe().event())
        answer = await asyncio.wait_for(client.read_event(), ANSWER_S)
        if answer is not None and Info.is_type(answer.type):
            break
        await client.disconnect()
        assert answer is not None and answer.data.get("code") == "busy", answer
        assert loop.time() < deadline, "the server stayed busy"
        await asyncio.sleep(0.2)
    try:
        yield client
    finally:
        await client.disconnect()


async def wrong_order(port: int, rng: random.Random) -> None:
    """Well-formed events in a random order; a describe at the end is still answered."""
    async with admitted(port) as client:
        sent = [library_event(rng) for _ in range(rng.randrange(2, 10))]
        for e in sent:
            await client.write_event(e)
        await client.write_event(Describe().event())
        infos = [1 + sum(Describe.is_type(e.type) for e in sent)]  # one info per describe

        def last_info(e: Event) -> bool:
            infos[0] -= Info.is_type(e.type)
            return not infos[0]

        events = await read_until(client, last_info)
    codes = {e.data.get("code") for e in events if e.type == "error"}
    assert codes <= DOCUMENTED_ERRORS, ([e.type for e in sent], codes)


def worker_sessions(worker) -> float:
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=10).read().decode()
    )
    found = re.search(r"^appliance_tts_active_sessions (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def test_fuzzed_wyoming_clients_crash_nothing_and_leak_no_session(wyoming, piper_worker):
    rng = random.Random(SEED)
    for _ in range(CONNECTIONS // AT_ONCE):
        await asyncio.gather(*(fuzz_one(wyoming.port, random.Random(rng.random())) for _ in range(AT_ONCE)))
    for _ in range(ORDERINGS // 4):
        await asyncio.gather(*(wrong_order(wyoming.port, random.Random(rng.random())) for _ in range(4)))

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while worker_sessions(piper_worker) and loop.time() < deadline:
        await asyncio.sleep(0.5)
    assert worker_sessions(piper_worker) == 0, "worker sessions left open\n" + wyoming.log()[-6000:]
    assert wyoming.proc.poll() is None, wyoming.log()
    assert "Traceback" not in wyoming.log(), wyoming.log()[-6000:]

    async with admitted(wyoming.port) as client:
        await client.write_event(Synthesize(text="Still here.").event())
        events = await read_until(client, lambda e: e.type in ("audio-stop", "error"))
    audio = b"".join(AudioChunk.from_event(e).audio for e in events if AudioChunk.is_type(e.type))
    assert events[-1].type == "audio-stop" and len(audio) > 24_000, [e.type for e in events]

    speech = pad(piper_speech(SAID, rate=16000), 16000, 0.3, 0.3).astype("<i2").tobytes()
    async with admitted(wyoming.port) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        for i in range(0, len(speech), 3200):
            await client.write_event(
                AudioChunk(rate=16000, width=2, channels=1, audio=speech[i : i + 3200]).event()
            )
        await client.write_event(AudioStop().event())
        events = await read_until(client, lambda e: e.type in ("transcript-stop", "error"))
    transcript = next(Transcript.from_event(e) for e in events if Transcript.is_type(e.type))
    assert wer(SAID, transcript.text) <= 0.2, transcript.text
