"""`appliance bench tts`: TTFA, RTF and control latency through a real gRPC worker, with the raw
PiperVoice call measured in the same run as the floor. JSON out; p50/p95 over ≥20 trials."""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import subprocess
import time
import uuid
from contextlib import asynccontextmanager

import grpc

from appliance.audio import FRAME_S
from appliance.process import free_port, terminate, worker_command
from appliance.tts.client import Control, TTSClient

SENTENCES = [
    "Hello!",
    "Good morning, how did you sleep?",
    "The weather today is sunny with a light breeze from the west.",
    "Turn left at the next junction and keep going for about two miles.",
    "I have set a timer for ten minutes.",
    "Your next meeting starts at half past three in the small conference room.",
    "Sure, I can help with that.",
    "The kitchen lights are now off.",
    "It looks like rain tomorrow afternoon, so you may want to take an umbrella with you.",
    "Here is a quick summary of the news from this morning.",
    "That song was released in nineteen eighty four by a band from Manchester.",
    "I did not catch that, could you say it again?",
    "The oven has reached two hundred degrees.",
    "Remember to water the plants on the balcony before you leave for the weekend trip.",
    "Okay.",
    "Traffic on the bridge is heavier than usual, so the drive will take about forty minutes.",
    "Your package was delivered to the front door at noon.",
    "The recipe needs two eggs, a cup of flour and a pinch of salt.",
    "Playing your evening playlist now.",
    "The library closes at eight tonight, and it opens again at nine tomorrow morning.",
    "Good night, sleep well.",
    "Three new messages arrived while you were out, one of them from your brother.",
    "The battery in the smoke alarm upstairs is running low and should be replaced soon.",
    "Do you want me to add milk to the shopping list?",
]
LONG_TEXT = " ".join(SENTENCES[2:12])


def _stats(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(values),
        "p50": round(statistics.median(ordered), 2),
        "p95": round(p95, 2),
        "min": round(ordered[0], 2),
        "max": round(ordered[-1], 2),
    }


@asynccontextmanager
async def _worker(address: str | None, model: str):
    if address:
        yield address
        return
    port = free_port()
    cmd = worker_command(port, name="bench")
    env = {**os.environ, "APPLIANCE_MODELS__DEFAULT": model, "APPLIANCE_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: ASYNC220 — starting it does not block
    try:
        yield f"127.0.0.1:{port}"
    finally:
        terminate(proc)


class RawPiper:
    """The floor: PiperVoice called directly in this process, as a library user would."""

    def __init__(self) -> None:
        from piper import PiperVoice

        from appliance.tts.catalog import Catalog

        files = Catalog().get("piper-en_US-joe-medium").locate(None)
        self.voice = PiperVoice.load(files["onnx"], config_path=files["config"])
        self.rate = self.voice.config.sample_rate
        for _ in self.voice.synthesize("Warm up."):
            pass

    def measure(self, text: str) -> tuple[float, float, float]:
        """First chunk ms, total ms, audio seconds."""
        t0 = time.perf_counter()
        chunks = iter(self.voice.synthesize(text))
        first = next(chunks)
        t_first = time.perf_counter()
        samples = len(first.audio_float_array) + sum(len(c.audio_float_array) for c in chunks)
        t_end = time.perf_counter()
        return (t_first - t0) * 1000, (t_end - t0) * 1000, samples / self.rate


class RawEngine:
    """The floor for any other model: its engine adapter called directly in this process, one
    sentence at a time (as the worker hands it sentences), first chunk to last."""

    def __init__(self, model: str) -> None:
        from appliance.tts.adapters import create_adapter
        from appliance.tts.catalog import Catalog

        self.adapter = create_adapter(Catalog().get(model), "auto")
        self.adapter.load()
        self.rate = self.adapter.sample_rate
        self.adapter.warmup()

    def measure(self, text: str) -> tuple[float, float, float]:
        """First chunk ms, total ms, audio seconds."""
        t0 = time.perf_counter()
        chunks = iter(self.adapter.synthesize(text))
        first = next(chunks)
        t_first = time.perf_counter()
        samples = len(first) + sum(len(c) for c in chunks)
        t_end = time.perf_counter()
        return (t_first - t0) * 1000, (t_end - t0) * 1000, samples / self.rate


async def _ttfa(client: TTSClient, sid: str, text: str) -> tuple[float, float, float, float]:
    """Worker TTFA ms (first TextChunk sent → first audio frame), total ms, audio seconds, and the
    worst lateness ms of a frame against real-time playback from the first one (> 0: a client
    that starts playing at once would run dry that long)."""
    sent: list[float] = []

    async def texts():
        sent.append(time.perf_counter())
        yield text

    arrivals: list[float] = []
    async for frame in client.synthesize(sid, texts()):
        if frame.audio_data:
            arrivals.append(time.perf_counter())
    end = time.perf_counter()
    late = max(t - (arrivals[0] + FRAME_S * k) for k, t in enumerate(arrivals))
    return (
        (arrivals[0] - sent[0]) * 1000,
        (end - sent[0]) * 1000,
        len(arrivals) * FRAME_S,
        max(0.0, late * 1000),
    )


async def _control_latency(client: TTSClient, trials: int) -> dict:
    """PAUSE/RESUME acks while a long text is being synthesised and its frames read, as an
    orchestrator would read them."""
    sid = f"bench-ctl-{uuid.uuid4().hex[:6]}"
    await client.start_session(sid)
    call = client.synthesize(sid, [LONG_TEXT])
    await call.read()
    frames = 0

    async def drain() -> None:
        nonlocal frames
        while (frame := await call.read()) is not grpc.aio.EOF:
            frames += bool(frame.audio_data)

    reader = asyncio.create_task(drain())
    times = []
    for i in range(trials):
        command = Control.PAUSE if i % 2 == 0 else Control.RESUME
        t0 = time.perf_counter()
        await client.control(sid, command)
        times.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(0.01)
    frames_during = frames
    await client.control(sid, Control.STOP)
    await reader
    await client.end_session(sid)
    return {**_stats(times), "frames_during_trials": frames_during}


async def _concurrent(client: TTSClient, sessions: int, rounds: int) -> tuple[list[float], list[float]]:
    ids = [f"bench-c{i}-{uuid.uuid4().hex[:6]}" for i in range(sessions)]
    await asyncio.gather(*(client.start_session(i) for i in ids))
    ttfas: list[float] = []
    late: list[float] = []
    for r in range(rounds):
        texts = [SENTENCES[(r * sessions + i) % len(SENTENCES)] for i in range(sessions)]
        results = await asyncio.gather(*(_ttfa(client, sid, t) for sid, t in zip(ids, texts)))
        ttfas.extend(r[0] for r in results)
        late.extend(r[3] for r in results)
    await asyncio.gather(*(client.end_session(i) for i in ids))
    return ttfas, late


async def run_bench(
    trials: int = 24, concurrency: int = 8, worker: str | None = None, model: str = "piper-en_US-joe-medium"
) -> dict:
    trials = max(trials, 20)
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(trials)]
    raw = RawPiper() if model == "piper-en_US-joe-medium" else RawEngine(model)
    raw_first, raw_total, raw_rtf = [], [], []
    w_ttfa, w_total, w_rtf = [], [], []
    async with _worker(worker, model) as address, TTSClient(address) as client:
        await client.wait_ready(120)
        sid = f"bench-{uuid.uuid4().hex[:6]}"
        await client.start_session(sid, model)
        await _ttfa(client, sid, "Warm up the connection.")
        for text in texts:  # interleaved, so both see the same machine load
            first, total, audio = raw.measure(text)
            raw_first.append(first)
            raw_total.append(total)
            raw_rtf.append(total / 1000 / audio)
            ttfa, total, audio, _late = await _ttfa(client, sid, text)
            w_ttfa.append(ttfa)
            w_total.append(total)
            w_rtf.append(total / 1000 / audio)
        await client.end_session(sid)
        control = await _control_latency(client, max(trials, 100))
        rounds = max(1, -(-20 // concurrency))  # at least 20 samples
        concurrent, late = await _concurrent(client, concurrency, rounds)

    ttfa_s, raw_s, ctl_s, conc_s = _stats(w_ttfa), _stats(raw_first), control, _stats(concurrent)
    rtf = statistics.median(w_rtf)
    result = {
        "benchmark": "tts",
        "model": model,
        "trials": trials,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "worker": {
            "address": worker or "subprocess on loopback",
            "ttfa_ms": ttfa_s,
            "total_ms": _stats(w_total),
            "rtf": _stats(w_rtf),
        },
        # The same model called as a library in this process: PiperVoice for Piper, else its adapter.
        "raw_piper" if isinstance(raw, RawPiper) else "raw_engine": {
            "first_chunk_ms": raw_s,
            "total_ms": _stats(raw_total),
            "rtf": _stats(raw_rtf),
        },
        "ttfa_overhead_p50_ms": round(ttfa_s["p50"] - raw_s["p50"], 2),
        "ttfa_ratio_p50": round(ttfa_s["p50"] / raw_s["p50"], 3) if raw_s["p50"] else None,
        "rtf_ratio_to_raw_p50": round(rtf / statistics.median(raw_rtf), 3)
        if statistics.median(raw_rtf)
        else None,
        "control_ack_ms": ctl_s,
        "concurrent": {"sessions": concurrency, "ttfa_ms": conc_s, "playback_lateness_ms": _stats(late)},
    }
    result["targets"] = {
        "ttfa_p50_within_15ms_of_raw": result["ttfa_overhead_p50_ms"] <= 15,
        "ttfa_p95_le_120ms": ttfa_s["p95"] <= 120,
        "control_ack_p95_le_5ms": ctl_s["p95"] <= 5,
        "rtf_le_0.1": rtf <= 0.1,
        f"concurrent_{concurrency}_ttfa_p95_le_250ms": conc_s["p95"] <= 250,
    }
    return result


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(asyncio.run(run_bench()), indent=2))
