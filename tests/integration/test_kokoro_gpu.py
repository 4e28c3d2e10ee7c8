"""Kokoro on the GPU providers (runs where a GPU is lent; skips cleanly elsewhere): the provider
each device setting gets, memory measured on the device, and the Japanese still heard right."""

from __future__ import annotations

import pytest
from speech import cer, transcribe_japanese

from appliance.config import WorkerSettings, load_settings
from appliance.tts.catalog import Catalog
from appliance.tts.client import TTSClient
from appliance.tts.worker import TTSWorker

pytestmark = pytest.mark.gpu
VOICE = "kokoro-ja-jf_alpha"


@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
async def test_kokoro_on_the_gpu_speaks_japanese(device, tmp_path, monkeypatch):
    if VOICE not in Catalog().ids():
        pytest.skip(f"Kokoro is not installed here: {Catalog().missing.get(VOICE)}")
    monkeypatch.setenv("APPLIANCE_TRT_CACHE", str(tmp_path / "trt"))
    settings = load_settings(
        WorkerSettings,
        None,
        name="gpu",
        port=0,
        metrics_port=None,
        models={"default": VOICE, "device": device},
    )
    worker = TTSWorker(settings)
    await worker.start()
    try:
        async with TTSClient(worker.address) as client:
            (model,) = [m for m in (await client.list_models()).models if m.model_id == VOICE]
            # TensorRT needs its libraries; without them the log says so and CUDA serves.
            assert model.device == "cuda" and model.resident_bytes > 0
            await client.start_session("gpu")
            text = "駅までの道を教えてください。"
            pcm, frames = await client.synthesize_all("gpu", text)
            assert frames[-1].is_final
            assert cer(text, transcribe_japanese(pcm, 48000, str(tmp_path / "whisper"))) <= 0.2
            await client.end_session("gpu")
    finally:
        await worker.stop(grace=0)
