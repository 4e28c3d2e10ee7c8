"""Piper on the CUDA execution provider (runs where a GPU is lent; skips cleanly elsewhere)."""

from __future__ import annotations

import pytest
from speech import listen, wer

from appliance.config import WorkerSettings, load_settings
from appliance.tts.client import TTSClient
from appliance.tts.worker import TTSWorker

pytestmark = pytest.mark.gpu


async def test_piper_on_cuda_speaks_the_text():
    settings = load_settings(
        WorkerSettings, None, name="gpu", port=0, metrics_port=None, models={"device": "cuda"}
    )
    worker = TTSWorker(settings)
    await worker.start()
    try:
        assert worker.service.gpu
        async with TTSClient(worker.address) as client:
            caps = await client.capabilities()
            assert caps.gpu
            await client.start_session("gpu")
            text = "The graphics card is doing the talking now."
            pcm, frames = await client.synthesize_all("gpu", text)
            assert frames[-1].is_final
            assert wer(text, listen(pcm, 48000, text)) <= 0.2
            await client.end_session("gpu")
    finally:
        await worker.stop(grace=0)
