"""`appliance bench failover`: the failover gap when the worker serving a reply is SIGKILLed (or
SIGSTOPped) mid-reply. Real processes: three workers, the orchestrator with all three in its
static list, a WebSocket client saying a two-sentence text. JSON out.

Per trial, from the orchestrator's failover log line (its own clock):
  gap_ms       last frame from the failed worker → first frame from the next (the headline figure;
               it includes the time the worker was already silent before it died)
  detect_ms    last frame from the failed worker → failure detected
  failover_ms  failure detected → first frame from the next worker (gap − detect)
and at the client, client_max_gap_ms: the largest inter-arrival of reply frames (the audible gap;
buffered audio hides part or all of the failover). Same-run references: a fresh stream's TTFA and
the largest inter-frame gap of a normal stream straight from a worker, and client_max_gap_ms of
normal replies through the orchestrator.

Engines: ``piper`` (bursty: a whole sentence at a time) and ``mock`` (the mock engine paced to
stream a word per chunk at RTF ≈ 0.4, like a GPU streaming engine: the orchestrator holds little).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance.bench.stats import summary as _stats
from appliance.process import free_port, terminate
from appliance.transport.ws_client import WsClient
from appliance.tts.client import TTSClient

TEXT = {
    "piper": "The old lighthouse keeper lived alone on a small island. Every evening he climbed the stairs and lit the lamp.",
    "mock": "One two three four five six seven eight. Nine ten eleven twelve thirteen fourteen fifteen sixteen.",
}
MOCK_DELAY_S = 0.06  # per 0.15 s word: RTF 0.4
_LINE = re.compile(
    r"tts failover session=(?P<sid>\S+) worker=(?P<worker>\S+) cause=(?P<cause>\w+) .* to=(?P<to>\S+) "
    r"resend_from=(?P<resend>\d+)/(?P<len>\d+)\+? repeated_frames=(?P<repeated>\d+) detect_ms=(?P<detect>\d+) gap_ms=(?P<gap>\S+)"
)


class _Worker:
    def __init__(self, engine: str, logdir: Path) -> None:
        self.engine = engine
        self.port, self.metrics_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.logdir = logdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        args = [
            "tts-worker",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--metrics-port",
            str(self.metrics_port),
        ]
        env = {"APPLIANCE_LOG_LEVEL": "warning"}
        if self.engine == "mock":
            env["APPLIANCE_MODELS__DEFAULT"] = "mock-sine"
            boot = (
                "import sys; from appliance.tts.adapters.mock import MockSineAdapter as M; "
                f"M.delay_s = {MOCK_DELAY_S}; from appliance.cli import main; sys.exit(main(sys.argv[1:]))"
            )
            cmd = [sys.executable, "-c", boot, *args]
        else:
            cmd = [sys.executable, "-m", "appliance", *args]
        self.proc = _spawn(cmd, env, self.logdir / f"worker-{self.port}.log")

    async def ready(self, timeout: float = 90) -> None:
        async with TTSClient(self.address) as client:
            await client.wait_ready(timeout)

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc:
            self.signal(signal.SIGCONT)
            terminate(self.proc, 10)


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(cmd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)


async def _streaming(workers: list[_Worker]) -> _Worker | None:
    import urllib.request

    def active(w: _Worker) -> float:
        try:
            page = (
                urllib.request.urlopen(f"http://127.0.0.1:{w.metrics_port}/metrics", timeout=1)
                .read()
                .decode()
            )
        except OSError:
            return 0.0
        m = re.search(r"^appliance_tts_active_streams (\S+)$", page, re.MULTILINE)
        return float(m.group(1)) if m else 0.0

    for _ in range(25):
        for w in workers:
            if await asyncio.to_thread(active, w) >= 1:
                return w
        await asyncio.sleep(0.01)
    return None


async def _healthy(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"orchestrator exited with {proc.returncode}")
        try:
            await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=1).read())
            return
        except OSError:
            await asyncio.sleep(0.2)
    raise TimeoutError("orchestrator not ready")


def _max_gap_ms(frames: list[tuple[float, bytes]]) -> float:
    times = [t for t, _ in frames]
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0) * 1000


async def _reply(url: str, text: str, workers: list[_Worker] | None = None, sig: int | None = None) -> dict:
    client = WsClient(url)
    await client.connect(16000)
    try:
        await client.send_json({"type": "say", "text": text})
        await client.wait_for(lambda: client.rx.frames, 30)
        victim = None
        if sig is not None:
            await asyncio.sleep(random.uniform(0, 0.1))
            victim = await _streaming(workers)
            if victim is not None:
                victim.signal(sig)
        await client.wait_for(lambda: client.rx.of_type("reply_end") or client.rx.of_type("error"), 60)
        return {
            "session": client.ready["session_id"],
            "victim": victim,
            "client_max_gap_ms": _max_gap_ms(client.rx.frames),
            "errors": client.rx.of_type("error"),
        }
    finally:
        await client.close()


async def _failover_line(log: Path, sid: str, timeout: float = 10) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in _LINE.finditer(log.read_text(errors="replace")):
            if m.group("sid") == sid:
                return m.groupdict()
        await asyncio.sleep(0.1)
    return None


async def _direct_reference(worker: _Worker, text: str, trials: int) -> dict:
    ttfa, gaps = [], []
    async with TTSClient(worker.address) as client:
        for i in range(trials):
            sid = f"ref-{i}"
            await client.start_session(sid)
            loop = asyncio.get_running_loop()
            t0, times = loop.time(), []
            async for frame in client.synthesize(sid, [text]):
                if frame.audio_data:
                    times.append(loop.time())
            await client.end_session(sid)
            ttfa.append((times[0] - t0) * 1000)
            gaps.append(max(b - a for a, b in itertools.pairwise(times)) * 1000)
    return {"fresh_stream_ttfa_ms": _stats(ttfa), "stream_max_frame_gap_ms": _stats(gaps)}


async def _engine(engine: str, trials: int, stall_ms: int, logdir: Path) -> dict:
    text = TEXT[engine]
    workers = [_Worker(engine, logdir) for _ in range(3)]
    port = free_port()
    orch_log = logdir / f"orchestrator-{engine}.log"
    cmd = [sys.executable, "-m", "appliance", "orchestrator", "--host", "127.0.0.1", "--port", str(port)]
    for w in workers:
        cmd += ["--worker", w.address]
    orch = None
    try:
        for w in workers:
            w.start()
        await asyncio.gather(*(w.ready() for w in workers))
        orch = _spawn(cmd, {"APPLIANCE_PLAYBACK__TTS_STALL_MS": str(stall_ms)}, orch_log)
        url = f"ws://127.0.0.1:{port}/ws"
        await _healthy(f"http://127.0.0.1:{port}/healthz", orch)
        await _reply(url, "Warm up.")
        out: dict = {"text": text, "reference": await _direct_reference(workers[0], text, trials)}
        normal = [await _reply(url, text) for _ in range(max(5, trials // 4))]
        out["reference"]["normal_reply_client_max_gap_ms"] = _stats([r["client_max_gap_ms"] for r in normal])
        for name, sig in (("kill", signal.SIGKILL), ("stop", signal.SIGSTOP)):
            rows, misses = [], 0
            while len(rows) < trials and misses < trials:
                await asyncio.gather(*(w.ready() for w in workers))
                r = await _reply(url, text, workers, sig)
                victim = r["victim"]
                line = await _failover_line(orch_log, r["session"], 3) if victim else None
                if victim is not None:  # a killed worker is restarted, a stopped one continued
                    if sig == signal.SIGKILL:
                        await asyncio.to_thread(victim.proc.wait)
                        victim.start()
                    else:
                        victim.signal(signal.SIGCONT)
                if line is None or line["gap"] == "-" or r["errors"]:
                    misses += 1  # the stream had already ended when the signal came
                    continue
                rows.append(
                    {
                        "gap_ms": float(line["gap"]),
                        "detect_ms": float(line["detect"]),
                        "repeated": int(line["repeated"]),
                        "client_max_gap_ms": r["client_max_gap_ms"],
                    }
                )
            out[name] = {
                "trials": len(rows),
                "missed": misses,
                "gap_ms": _stats([r["gap_ms"] for r in rows]),
                "detect_ms": _stats([r["detect_ms"] for r in rows]),
                "failover_ms": _stats([r["gap_ms"] - r["detect_ms"] for r in rows]),
                "client_max_gap_ms": _stats([r["client_max_gap_ms"] for r in rows]),
                "trials_repeating_part_of_a_segment": sum(r["repeated"] > 0 for r in rows),
            }
        ref = out["reference"]["fresh_stream_ttfa_ms"].get("p50") or 1
        out["kill"]["failover_ms_p50_over_fresh_ttfa_p50"] = round(
            out["kill"]["failover_ms"].get("p50", 0) / ref, 2
        )
        return out
    finally:
        if orch is not None:
            await asyncio.to_thread(terminate, orch, 15)
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in workers))


async def run_bench(
    trials: int = 20, engines: tuple[str, ...] = ("mock", "piper"), stall_ms: int = 1200
) -> dict:
    logdir = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    result: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "trials": trials,
        "stall_ms": stall_ms,
        "logs": str(logdir),
        "engines": {},
    }
    for engine in engines:
        result["engines"][engine] = await _engine(engine, trials, stall_ms, logdir)
    return result
