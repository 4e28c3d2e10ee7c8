"""`appliance say`: text → WAV through a TTS worker (a running one, or one started in-process)."""

from __future__ import annotations

import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

from appliance.audio import OUTPUT_RATE
from appliance.audio.wavio import write_wav
from appliance.config import WorkerSettings, load_settings
from appliance.tts.client import TTSClient


@asynccontextmanager
async def worker_address(worker: str | None, model: str = ""):
    """Yield the address of ``worker``, or of a worker started here on a free loopback port."""
    if worker:
        yield worker
        return
    from appliance.tts.worker import TTSWorker

    overrides = {"port": 0, "metrics_port": None, "name": "say"}
    if model:
        overrides["models"] = {"default": model}
    settings = load_settings(WorkerSettings, None, **overrides)
    local = TTSWorker(settings)
    await local.start()
    try:
        yield local.address
    finally:
        await local.stop(grace=0)


async def say(text: str, out: Path, *, worker: str | None = None, model: str = "") -> dict:
    async with worker_address(worker, model) as address, TTSClient(address) as client:
        await client.wait_ready()
        sid = f"say-{uuid.uuid4().hex[:8]}"
        await client.start_session(sid, model)
        try:
            t0 = time.perf_counter()
            pcm, frames = await client.synthesize_all(sid, text)
            took = time.perf_counter() - t0
        finally:
            await client.end_session(sid)
    write_wav(out, pcm, OUTPUT_RATE)
    return {
        "out": str(out),
        "frames": len(frames) - 1,
        "audio_s": round(len(pcm) / 2 / OUTPUT_RATE, 3),
        "synth_s": round(took, 3),
    }
