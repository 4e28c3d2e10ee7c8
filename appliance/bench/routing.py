"""`appliance bench routing`: how long a routing decision takes with N registered workers (against a
plain ``min()`` over the same records, in the same run), and how soon a new worker is usable: real
mock-engine worker processes registering in a real Redis, seen by the orchestrator's registry."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from subprocess import DEVNULL

from appliance import discovery
from appliance.discovery import Capabilities, LiveMetrics, WorkerRecord
from appliance.orchestrator.workers import RoutedPool
from appliance.orchestrator.workers.registry import WorkerRegistry
from appliance.orchestrator.workers.routing import RouteRequest
from appliance.process import free_port, terminate

MODELS = ("piper-en_US-joe-medium", "mock-sine", "voice-a", "voice-b", "voice-c")
LANGS = (("en-US",), ("en-US",), ("de-DE",), ("en-GB", "fr-FR"))


def _stats(samples: list[float], scale: float = 1.0, digits: int = 1) -> dict:
    s = sorted(samples)
    pick = lambda q: round(s[min(len(s) - 1, int(q * len(s)))] * scale, digits)
    return {"p50": pick(0.5), "p95": pick(0.95), "max": round(s[-1] * scale, digits), "n": len(s)}


def synthetic_workers(n: int, seed: int = 7) -> list[WorkerRecord]:
    rng = random.Random(seed)
    workers = []
    for i in range(n):
        resident = tuple(rng.sample(MODELS[:4], rng.randint(1, 2)))  # voice-c is resident nowhere
        workers.append(
            WorkerRecord(
                name=f"w{i:03d}",
                address=f"10.0.{i // 250}.{i % 250 + 1}:7001",
                capabilities=Capabilities(languages=rng.choice(LANGS), max_concurrent_sessions=64),
                default_model=resident[0],
                resident_models=resident,
                available_models=MODELS,
                metrics=LiveMetrics(
                    active_sessions=rng.randint(0, 60),
                    queue_depth=rng.randint(0, 4),
                    ttfa_p50_ms=rng.choice([None, rng.uniform(20, 80)]),
                ),
                instance="bench",
                seq=1,
            )
        )
    return workers


def bench_decisions(n_workers: int, trials: int) -> dict:
    quiet = logging.getLogger("appliance.orchestrator.workers.registry")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # not 100 "joined" lines
    try:
        return _bench_decisions(n_workers, trials)
    finally:
        quiet.setLevel(level)


def _bench_decisions(n_workers: int, trials: int) -> dict:
    workers = synthetic_workers(n_workers)
    registry = WorkerRegistry("redis://127.0.0.1:1/0", None)
    for w in workers:
        registry.apply("register", w)
    for w in workers[::10]:  # a few down, a few with sessions routed since their record
        registry.mark_down(w.address, "bench")
    pool = RoutedPool(registry, RouteRequest(language="en"))
    for w in workers[1::7]:
        pool._note_assigned(w.address)
    records = registry.records()
    key = lambda r: (r.metrics.queue_depth, r.metrics.active_sessions)
    timings: dict[str, list[float]] = {"decision_resident": [], "decision_load": [], "reference_min": []}
    clock = time.perf_counter_ns
    for _ in range(trials):
        t0 = clock()
        r1 = pool.decide("voice-a")
        t1 = clock()
        r2 = pool.decide("voice-c")
        t2 = clock()
        min(records, key=key)
        t3 = clock()
        timings["decision_resident"].append(t1 - t0)
        timings["decision_load"].append(t2 - t1)
        timings["reference_min"].append(t3 - t2)
    assert r1.choice is not None and r1.choice.resident and r2.load_on is not None
    out = {name: _stats(v, 1e-3) | {"unit": "us"} for name, v in timings.items()}
    out["ratio_p50_decision_vs_min"] = round(
        out["decision_resident"]["p50"] / max(out["reference_min"]["p50"], 1e-3), 1
    )
    out["workers"] = n_workers
    out["target_ms"] = 1.0
    out["meets_target"] = max(out["decision_resident"]["p95"], out["decision_load"]["p95"]) <= 1000
    return out


async def bench_new_worker(trials: int, redis_url: str | None, password: str | None) -> dict:
    own = None
    if redis_url is None:
        own, redis_url, password = _spawn_redis()
    tmp = Path(tempfile.mkdtemp(prefix="bench-routing-"))
    config = tmp / "mock.toml"
    config.write_text(
        '[models]\ndefault = "mock-sine"\nwarmup = false\n[discovery]\nheartbeat_s = 2\nttl_s = 6\n'
    )
    prefix = f"bench{secrets.token_hex(3)}:"
    registry = WorkerRegistry(redis_url, password, prefix)
    pool = RoutedPool(registry)
    await pool.start()
    env = {
        **os.environ,
        "APPLIANCE_REDIS_PASSWORD": password or "",
        "APPLIANCE_DISCOVERY__KEY_PREFIX": prefix,
        "APPLIANCE_LOG_LEVEL": "warning",
    }
    spawn_to_registered, registered_to_seen, spawn_to_usable, reference, registered_to_usable = (
        [],
        [],
        [],
        [],
        [],
    )
    try:
        for i in range(trials):
            port = free_port()
            address = f"127.0.0.1:{port}"
            cmd = [
                sys.executable,
                "-m",
                "appliance",
                "tts-worker",
                "--config",
                str(config),
                "--name",
                f"bench{i}",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--metrics-port",
                "0",
                "--redis-url",
                redis_url,
            ]
            t_wall, t0 = time.time(), time.perf_counter()
            log_path = tmp / f"worker-{i}.log"
            with log_path.open("wb") as log_file:
                proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=DEVNULL, stderr=log_file)
            try:
                try:
                    record = await registry.wait_until(lambda a=address: registry.entries.get(a), 60)
                except TimeoutError:
                    tail = log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(
                        f"worker {i} ({address}) did not register in 60 s (exit {proc.returncode}); its log:\n{tail}"
                    ) from None
                seen_wall = time.time()
                sid = f"bench-{uuid.uuid4().hex[:8]}"
                client = await pool.start_session(sid, exclude=set(registry.entries) - {address})
                spawn_to_usable.append(time.perf_counter() - t0)
                registered_to_usable.append(time.time() - record.record.heartbeat_at)
                await client.end_session(sid)
                spawn_to_registered.append(record.record.heartbeat_at - t_wall)
                registered_to_seen.append(seen_wall - record.record.heartbeat_at)
            finally:
                await _stop(proc)
            await registry.wait_until(lambda a=address: a not in registry.entries, 30)
            t0 = time.perf_counter()  # the floor: a Python process that only imports the worker
            probe = await asyncio.create_subprocess_exec(
                sys.executable, "-c", "import appliance.tts.worker", env=env
            )
            if await probe.wait() != 0:
                raise RuntimeError("python -c 'import appliance.tts.worker' failed")
            reference.append(time.perf_counter() - t0)
    finally:
        await pool.close()
        if own is not None:
            terminate(own)
        shutil.rmtree(tmp, ignore_errors=True)
    usable = _stats(spawn_to_usable, 1000, 0)
    return {
        "trials": trials,
        "process_start_to_registered_ms": _stats(spawn_to_registered, 1000, 0),
        "registered_to_seen_by_registry_ms": _stats(registered_to_seen, 1000, 1),
        "registered_to_first_session_ms": _stats(registered_to_usable, 1000, 1),
        "process_start_to_first_session_ms": usable,
        "reference_python_import_worker_ms": _stats(reference, 1000, 0),
        "target_ms": 1000,
        "meets_target": usable["p50"] <= 1000,
    }


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _spawn_redis() -> tuple[subprocess.Popen, str, str]:
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed: pass --redis-url, or install the Debian package")
    port, password = free_port(), secrets.token_hex(12)
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--requirepass",
            password,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    return proc, f"redis://127.0.0.1:{port}/0", password


async def run_bench(
    workers: int = 100,
    trials: int = 200,
    spawn_trials: int = 20,
    redis_url: str | None = None,
    password: str | None = None,
) -> dict:
    if trials < 20 or spawn_trials < 0:
        raise ValueError("--trials must be ≥ 20 and --spawn-trials ≥ 0")
    result = {"routing_decision": bench_decisions(workers, trials)}
    if spawn_trials:
        if redis_url:
            password = discovery.resolve_password(
                redis_url, password or os.environ.get("APPLIANCE_REDIS_PASSWORD")
            )
        result["new_worker_usable"] = await bench_new_worker(spawn_trials, redis_url, password)
    return result
