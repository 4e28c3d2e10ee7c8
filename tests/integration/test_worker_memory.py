"""Memory accounting with two real engines (Piper and hibari) in one worker process: each model's
measured size in ListModels and /metrics, then a budget between them that the worker keeps."""

from __future__ import annotations

import asyncio
import re
import urllib.request
import uuid

import grpc
import pytest
from services import WorkerProcess
from speech import listen, wer

from appliance.tts.client import TTSClient

pytest.importorskip("hibari")

PIPER, HIBARI = "piper-en_US-joe-medium", "hibari-heart"
MB = 2**20
# The default is the mock engine (it takes no memory), so both real engines can be evicted.
ENV = {
    "APPLIANCE_MODELS__DEFAULT": "mock-sine",
    "APPLIANCE_MODELS__RESIDENT_CAP": "3",
    "APPLIANCE_MODELS__SERVE": f'["{HIBARI}"]',
}


def _worker(**env: str) -> WorkerProcess:
    worker = WorkerProcess(env={**ENV, **env})
    worker.wait_ready()
    return worker


async def _resident(client: TTSClient) -> list[str]:
    """The real engines' models resident now."""
    models = (await client.list_models()).models
    return [m.model_id for m in models if m.model_id in (PIPER, HIBARI) and m.resident_bytes]


@pytest.fixture(scope="module")
def measured() -> dict[str, int]:
    """Both engines loaded in a worker without a budget: their sizes and the worker's /metrics."""
    worker = _worker()

    async def measure():
        async with TTSClient(worker.address) as client:
            await client.load_model(PIPER)
            await client.load_model(HIBARI)
            models = {m.model_id: m for m in (await client.list_models()).models}
            page = await asyncio.to_thread(
                lambda: (
                    urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics").read().decode()
                )
            )
            return models, page

    try:
        models, page = asyncio.run(measure())
    finally:
        worker.stop()
    for model_id in (PIPER, HIBARI):
        m = models[model_id]
        assert m.device == "cpu" and m.resident_bytes > MB, (model_id, m.resident_bytes)
        (gauge,) = re.findall(rf'appliance_tts_model_resident_bytes{{model="{model_id}"}} (\S+)', page)
        assert float(gauge) == m.resident_bytes
    assert models["mock-sine"].resident_bytes < models[HIBARI].resident_bytes
    sizes = {model_id: models[model_id].resident_bytes for model_id in (PIPER, HIBARI)}
    print("measured resident sizes (MB):", {k: round(v / MB, 1) for k, v in sizes.items()})
    return sizes


async def test_a_budget_between_the_two_engines_refuses_then_evicts(measured):
    piper, hibari = measured[PIPER], measured[HIBARI]
    # Room for Piper, or for hibari, never both; whole megabytes, as the worker's message names them.
    budget_mb = round((piper + hibari // 2) / MB)
    worker = _worker(APPLIANCE_MODELS__RAM_BUDGET_MB=str(budget_mb))
    try:
        async with TTSClient(worker.address) as client:
            busy = f"m-{uuid.uuid4().hex[:8]}"
            await client.start_session(busy, HIBARI)  # hibari in use
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await client.start_session(f"m-{uuid.uuid4().hex[:8]}", PIPER)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            details = info.value.details()
            assert f"of the {budget_mb} MB budget" in details and HIBARI in details, details
            assert await _resident(client) == [HIBARI]
            pcm, _ = await client.synthesize_all(busy, "The other session is unaffected.")
            assert (
                wer(
                    "The other session is unaffected.", listen(pcm, 48000, "The other session is unaffected.")
                )
                <= 0.25
            )

            await client.end_session(busy)  # hibari idle now: the least recently used, evicted
            fresh = f"m-{uuid.uuid4().hex[:8]}"
            await client.start_session(fresh, PIPER)
            assert await _resident(client) == [PIPER]
            pcm, _ = await client.synthesize_all(fresh, "The kitchen lights are on.")
            assert wer("The kitchen lights are on.", listen(pcm, 48000, "The kitchen lights are on.")) <= 0.25
            await client.end_session(fresh)
    finally:
        worker.stop()
