"""Bit-exact PAUSE/RESUME with the deterministic mock engine through a real gRPC server."""

from __future__ import annotations

import asyncio

import grpc

from appliance.config import WorkerSettings, load_settings
from appliance.tts.client import TTSClient
from appliance.tts.worker import TTSWorker


async def test_resume_continues_exactly_where_pause_stopped():
    settings = load_settings(WorkerSettings, None, name="mock", port=0, metrics_port=None, models={"default": "mock-sine"})
    worker = TTSWorker(settings)
    await worker.start()
    text = " ".join(f"word{i}" for i in range(120))  # ~18 s of tones
    try:
        async with TTSClient(worker.address) as client:
            await client.start_session("ref")
            reference, _ = await client.synthesize_all("ref", text)

            await client.start_session("paused")
            call = client.synthesize("paused", [text])
            frames = []
            for _ in range(3):  # pause and resume three times along the way
                for _ in range(40):
                    frames.append(await call.read())
                await client.control("paused", "pause")
                await asyncio.sleep(0.2)
                await client.control("paused", "resume")
            while (frame := await call.read()) is not grpc.aio.EOF:
                frames.append(frame)
            assert [f.sequence_number for f in frames] == list(range(len(frames)))
            assert b"".join(f.audio_data for f in frames) == reference
            for sid in ("ref", "paused"):
                await client.end_session(sid)
            assert worker.manager.total_refcount() == 0
    finally:
        await worker.stop(grace=0)
