"""`appliance bench openai`: the /v1 API of a real orchestrator (and Piper worker) on loopback.

``POST /v1/audio/speech`` with a streaming read: time to the first byte of the body, and to its
end, per response format; ``POST /v1/audio/transcriptions`` of the speech it made (WAV): the
request's whole time. One request at a time, after an untimed warm-up."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
import time
import urllib.request

import httpx

from appliance.bench.tts import SENTENCES, _stats
from appliance.process import free_port, terminate

FORMATS = ("pcm", "mp3", "opus", "wav")


async def speech_ttfb(client: httpx.AsyncClient, text: str, fmt: str) -> tuple[float, float, bytes]:
    """ms to the first body byte, ms to the end, the body."""
    t0 = time.perf_counter()
    body = {"model": "tts-1", "voice": "default", "input": text, "response_format": fmt}
    first, parts = None, []
    async with client.stream("POST", "/v1/audio/speech", json=body) as response:
        response.raise_for_status()
        async for chunk in response.aiter_bytes():
            if chunk and first is None:
                first = time.perf_counter()
            parts.append(chunk)
    end = time.perf_counter()
    return ((first or end) - t0) * 1000, (end - t0) * 1000, b"".join(parts)


async def transcription_ms(client: httpx.AsyncClient, wav: bytes) -> float:
    t0 = time.perf_counter()
    response = await client.post(
        "/v1/audio/transcriptions",
        data={"model": "whisper-1"},
        files={"file": ("speech.wav", wav, "audio/wav")},
    )
    response.raise_for_status()
    return (time.perf_counter() - t0) * 1000


def _spawn(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "appliance", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout:.0f}s")


async def run_bench(trials: int = 20) -> dict:
    worker, http = free_port(), free_port()
    env = {**os.environ, "APPLIANCE_LOG_LEVEL": "warning", "APPLIANCE_API__LOOPBACK_WITHOUT_KEY": "true"}
    procs = [
        _spawn(
            ["tts-worker", "--host", "127.0.0.1", "--port", str(worker), "--metrics-port", str(free_port())],
            env,
        )
    ]
    try:
        procs.append(
            _spawn(
                [
                    "orchestrator",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(http),
                    "--worker",
                    f"127.0.0.1:{worker}",
                ],
                env,
            )
        )
        await asyncio.to_thread(_wait_http, f"http://127.0.0.1:{http}/healthz", procs[-1])
        sentences = [SENTENCES[i % len(SENTENCES)] for i in range(max(trials, 1))]
        result: dict = {"trials": len(sentences), "host": platform.node(), "cpus": os.cpu_count()}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http}", timeout=120) as client:
            for fmt in FORMATS:
                await speech_ttfb(client, "Warming up.", fmt)
                firsts, totals = [], []
                for text in sentences:
                    first, total, _ = await speech_ttfb(client, text, fmt)
                    firsts.append(first)
                    totals.append(total)
                result[f"speech_{fmt}_ttfb_ms"] = _stats(firsts)
                result[f"speech_{fmt}_total_ms"] = _stats(totals)
            wavs = [(await speech_ttfb(client, text, "wav"))[2] for text in sentences]
            await transcription_ms(client, wavs[0])
            result["transcription_ms"] = _stats([await transcription_ms(client, w) for w in wavs])
        return result
    finally:
        for proc in reversed(procs):
            terminate(proc)
