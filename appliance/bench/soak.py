"""`appliance bench soak`: N spoken conversations at once for M minutes against `appliance run`
(the echo responder: this measures the voice path), over the real WebSocket in real time.

Each conversation is one session whose microphone streams without a break, silence between the
questions: a recorded question (Piper), the reply awaited and played out, a pause of 1–3 s, the
next question. Reported:

- turns asked and answered (a final transcript, then reply audio and ``reply_end`` within 30 s);
- dropouts: a reply frame that arrived after the moment a client playing the reply from its first
  frame on would have played it (the client ran dry), counted apart for the first second of each
  reply and after it;
- voice-to-voice (end of speech in the input → first reply frame) p50/p95, overall and per minute;
- for each service process (the orchestrator and its worker): resident memory, open file
  descriptors, OS threads and asyncio tasks — at rest after a warm-up round (every session
  answered once, then closed), during the run, and at rest again at the end. Growth is end at rest
  against warm-up at rest, so a leak shows and a busy moment does not.

Same-run reference: the sequential floor of one turn (endpoint silence + one raw Whisper pass +
Piper's first chunk), as in `bench conversation`."""

from __future__ import annotations

import asyncio
import os
import platform
import random
import time
import urllib.request
from dataclasses import dataclass, field

import numpy as np

from appliance.bench import conversation as conv
from appliance.bench.stats import summary as _stats
from appliance.process import terminate
from appliance.transport.ws_client import Received, WsClient

RATE = conv.RATE
FRAME = RATE // 50  # 20 ms of microphone
ANSWER_TIMEOUT_S = 30.0
TARGET_RSS_GROWTH = 0.10


@dataclass
class Turn:
    at_s: float  # since the soak began
    answered: bool
    voice_to_voice_ms: float | None = None
    late_first_second: int = 0
    late_after: int = 0
    error: str | None = None


@dataclass
class Soak:
    started: float
    stop_at: float
    turns: list[Turn] = field(default_factory=list)


def reply_lateness(frames: list[tuple[float, bytes]], rate: int) -> tuple[int, int]:
    """Frames late for playback in the first second of a reply and after it: frame k is due when
    the audio before it has played, counted from the first frame's arrival."""
    if not frames:
        return 0, 0
    first = frames[0][0]
    played_s, early, late = 0.0, 0, 0
    for t, pcm in frames:
        if t > first + played_s + 1e-3:
            if played_s < 1.0:
                early += 1
            else:
                late += 1
        played_s += len(pcm) / 2 / rate
    return early, late


class Microphone:
    """A real-time 20 ms stream of silence, with a question spliced in when asked."""

    def __init__(self, client: WsClient) -> None:
        self.client = client
        self._queue: list[np.ndarray] = []
        self._task: asyncio.Task | None = None
        self._start = 0.0
        self._sent = 0

    def start(self) -> None:
        self._start = asyncio.get_running_loop().time()
        self._task = asyncio.create_task(self._run(), name="soak-mic")

    def say(self, samples: np.ndarray) -> float:
        """Queue ``samples`` after what is queued; returns when (loop time) they start playing."""
        queued = sum(len(f) for f in self._queue)
        self._queue.extend(samples[i : i + FRAME] for i in range(0, len(samples), FRAME))
        return self._start + self._sent * 0.02 + queued / RATE

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        silence = np.zeros(FRAME, np.int16)
        while True:
            frame = self._queue.pop(0) if self._queue else silence
            if len(frame) < FRAME:
                frame = np.pad(frame, (0, FRAME - len(frame)))
            await self.client.send_bytes(frame.astype("<i2").tobytes())
            self._sent += 1
            await asyncio.sleep(max(0.0, self._start + self._sent * 0.02 - loop.time()))

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def _ask(client: WsClient, mic: Microphone, samples: np.ndarray, end_s: float, soak: Soak) -> Turn:
    loop = asyncio.get_running_loop()
    client.rx = Received(closed=client.rx.closed)  # only this turn's events and frames
    speech_end = mic.say(samples) + end_s
    at_s = speech_end - soak.started
    try:
        await client.wait_for(
            lambda: client.rx.of_type("reply_end") or client.rx.of_type("error"),
            ANSWER_TIMEOUT_S + max(0.0, speech_end - loop.time()),
        )
    except TimeoutError:
        return Turn(at_s, False, error="no reply_end within 30 s")
    errors = client.rx.of_type("error")
    if errors:
        return Turn(at_s, False, error=errors[0].get("code"))
    rate = (client.ready or {}).get("sample_rate", 48000)
    early, late = reply_lateness(client.rx.frames, rate)
    v2v = (client.rx.frames[0][0] - speech_end) * 1000 if client.rx.frames else None
    return Turn(at_s, bool(client.rx.frames), v2v, early, late)


async def _conversation(url: str, clips, soak: Soak, seed: int, turns: int | None = None) -> None:
    """One session asking questions until ``soak.stop_at`` (or ``turns`` of them)."""
    rng = random.Random(seed)
    client = WsClient(url)
    await client.connect(RATE)
    mic = Microphone(client)
    mic.start()
    loop = asyncio.get_running_loop()
    try:
        await asyncio.sleep(rng.uniform(0.2, 3.0))  # the sessions do not speak in lockstep
        asked = 0
        while (turns is None and loop.time() < soak.stop_at) or (turns is not None and asked < turns):
            samples, end_s = clips[rng.randrange(len(clips))]
            soak.turns.append(await _ask(client, mic, samples, end_s, soak))
            asked += 1
            await asyncio.sleep(rng.uniform(1.0, 3.0))
    finally:
        await mic.stop()
        await client.close()


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _metrics_url(pid: int, orchestrator_port: int, is_orchestrator: bool) -> str:
    if is_orchestrator:
        return f"http://127.0.0.1:{orchestrator_port}/metrics"
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().decode().split("\0")
    return f"http://127.0.0.1:{argv[argv.index('--metrics-port') + 1]}/metrics"


def _gauge(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def sample_process(pid: int, metrics_url: str) -> dict:
    """RSS (MB), open fds and threads from /proc; asyncio tasks and open sessions from /metrics."""
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    sessions = _gauge(text, "appliance_tts_active_sessions")
    if sessions is None:
        sessions = sum(
            float(line.split()[1])
            for line in text.splitlines()
            if line.startswith("appliance_sessions_active{")
        )
    return {
        "rss_mb": round(int(status["VmRSS"].split()[0]) / 1024, 1),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(status["Threads"]),
        "asyncio_tasks": _gauge(text, "appliance_asyncio_tasks"),
        "sessions": sessions,
    }


class Processes:
    """The appliance's service processes: the orchestrator and the workers it started."""

    def __init__(self, pid: int, port: int) -> None:
        self.named = {"orchestrator": (pid, _metrics_url(pid, port, True))}
        for i, child in enumerate(_children(pid)):
            self.named[f"worker{i or ''}"] = (child, _metrics_url(child, port, False))

    def sample(self) -> dict[str, dict]:
        return {name: sample_process(pid, url) for name, (pid, url) in self.named.items()}

    async def at_rest(self, timeout: float = 60) -> dict[str, dict]:
        """A sample once no session is open anywhere (closing ones finish their clean-up)."""
        deadline = time.monotonic() + timeout
        while True:
            sample = await asyncio.to_thread(self.sample)
            if all(s["sessions"] == 0 for s in sample.values()) or time.monotonic() > deadline:
                await asyncio.sleep(2)  # the last session's tasks end just after its gauge drops
                return await asyncio.to_thread(self.sample)
            await asyncio.sleep(1)


def _growth(rest_start: dict[str, dict], rest_end: dict[str, dict]) -> dict[str, dict]:
    out = {}
    for name, a in rest_start.items():
        b = rest_end[name]
        out[name] = {
            "rss_pct": round(100 * (b["rss_mb"] - a["rss_mb"]) / a["rss_mb"], 1),
            "fds": b["fds"] - a["fds"],
            "threads": b["threads"] - a["threads"],
            "asyncio_tasks": (b["asyncio_tasks"] or 0) - (a["asyncio_tasks"] or 0),
        }
    return out


def _per_minute(turns: list[Turn]) -> list[dict]:
    minutes: dict[int, list[float]] = {}
    for t in turns:
        if t.voice_to_voice_ms is not None:
            minutes.setdefault(int(t.at_s // 60), []).append(t.voice_to_voice_ms)
    return [{"minute": m, **_stats(v)} for m, v in sorted(minutes.items())]


async def _sampler(procs: Processes, every_s: float, series: list[dict], soak: Soak) -> None:
    loop = asyncio.get_running_loop()
    while True:
        sample = await asyncio.to_thread(procs.sample)
        series.append({"t_s": round(loop.time() - soak.started, 1), **sample})
        await asyncio.sleep(every_s)


async def run_soak(
    url: str, pid: int, port: int, sessions: int, minutes: float, clips, every_s: float
) -> dict:
    procs = Processes(pid, port)
    loop = asyncio.get_running_loop()
    warm = Soak(loop.time(), loop.time())
    await asyncio.gather(*(_conversation(url, clips, warm, 1000 + i, turns=1) for i in range(sessions)))
    rest_start = await procs.at_rest()
    soak = Soak(loop.time(), loop.time() + minutes * 60)
    series: list[dict] = []
    sampler = asyncio.create_task(_sampler(procs, every_s, series, soak))
    results = await asyncio.gather(
        *(_conversation(url, clips, soak, i) for i in range(sessions)), return_exceptions=True
    )
    sampler.cancel()
    await asyncio.gather(sampler, return_exceptions=True)
    rest_end = await procs.at_rest()
    turns = soak.turns
    growth = _growth(rest_start, rest_end)
    unanswered = sum(not t.answered for t in turns)
    late_after = sum(t.late_after for t in turns)
    return {
        "turns": {"asked": len(turns), "answered": len(turns) - unanswered, "unanswered": unanswered},
        "unanswered_why": sorted({t.error for t in turns if t.error}),
        "session_failures": [repr(r) for r in results if isinstance(r, BaseException)],
        "dropouts": {
            "frames_late_in_first_second": sum(t.late_first_second for t in turns),
            "frames_late_after_first_second": late_after,
            "replies_late_after_first_second": sum(t.late_after > 0 for t in turns),
        },
        "voice_to_voice_ms": _stats([t.voice_to_voice_ms for t in turns if t.voice_to_voice_ms is not None]),
        "voice_to_voice_per_minute": _per_minute(turns),
        "processes": {"at_rest_after_warmup": rest_start, "at_rest_at_end": rest_end, "growth": growth},
        "series": series,
        "targets": {
            "no_unanswered_turn": unanswered == 0 and not any(isinstance(r, BaseException) for r in results),
            "no_dropout_after_first_second": late_after == 0,
            "rss_growth_le_10pct": all(g["rss_pct"] <= 100 * TARGET_RSS_GROWTH for g in growth.values()),
            "no_fd_or_task_growth": all(g["fds"] <= 0 and g["asyncio_tasks"] <= 0 for g in growth.values()),
        },
    }


async def run_bench(sessions: int = 8, minutes: float = 10.0, port: int = 18090, every_s: float = 30) -> dict:
    voice = conv._Voice()
    made = [voice.speech(q) for q in conv.QUESTIONS]
    clips = [(samples, conv._speech_bounds(samples)[1]) for samples, _ in made]
    raw_asr = conv._raw_asr_ms(made, 2)
    floor = conv._floor(300, raw_asr, made)
    proc = conv._start_appliance(port, {"APPLIANCE_SESSION__MAX_SESSIONS": str(max(16, sessions))})
    try:
        body = await run_soak(f"ws://127.0.0.1:{port}/ws", proc.pid, port, sessions, minutes, clips, every_s)
    finally:
        terminate(proc, 30)
    v2v = body["voice_to_voice_ms"]
    return {
        "benchmark": "soak",
        "sessions": sessions,
        "minutes": minutes,
        "responder": os.environ.get("APPLIANCE_RESPONDER__KIND", "echo"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        **body,
        "reference": {
            "sequential_floor_ms": round(floor, 1),
            "raw_whisper_tiny_en_ms": _stats(raw_asr),
            "voice_to_voice_p50_vs_floor": round(v2v["p50"] / floor, 3) if v2v.get("n") else None,
            "note": "one turn alone, one step after the other: endpoint silence + raw Whisper + Piper's first chunk",
        },
    }
