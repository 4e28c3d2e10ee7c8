"""Sesame CSM and XTTS v2 with their real weights on a GPU, where a GPU and the weights are there
(skips cleanly elsewhere): the speech says the text, and time to first audio and the real-time
factor are reported (printed and kept as test properties; measured, not asserted).

The weights are the operator's download: APPLIANCE_CSM_CHECKPOINT (a directory as
`huggingface-cli download sesame/csm-1b` leaves it) and APPLIANCE_XTTS_CHECKPOINT (coqui/XTTS-v2's
config.json, model.pth and vocab.json)."""

from __future__ import annotations

import json
import os
import time
import wave

import numpy as np
import pytest
from speech import listen, wer
from voices import piper_speech

from appliance.config import WorkerSettings, load_settings
from appliance.tts.client import TTSClient
from appliance.tts.worker import TTSWorker

pytestmark = pytest.mark.cuda_torch

SENTENCES = [
    "The lighthouse keeper climbed the stairs at dusk.",
    "Every evening he lit the great lamp for the ships.",
    "The storm passed before the morning came.",
]
CHECKPOINTS = {"csm": "APPLIANCE_CSM_CHECKPOINT", "xtts": "APPLIANCE_XTTS_CHECKPOINT"}


def _reference_clip(path) -> str:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(piper_speech("The keeper lit the lamp for the ships.", 22050).astype("<i2").tobytes())
    return str(path)


@pytest.mark.parametrize("engine", sorted(CHECKPOINTS))
async def test_real_weights_say_the_text_on_the_gpu(engine, tmp_path, record_property):
    checkpoint = os.environ.get(CHECKPOINTS[engine])
    if not checkpoint:
        pytest.skip(f"{CHECKPOINTS[engine]} names no checkpoint of {engine}'s real weights")
    local = {"engine": engine, "path": checkpoint}
    if engine == "xtts":
        local |= {
            "accept_licence": "CPML",
            "voice_prompts": {"keeper": {"audio": _reference_clip(tmp_path / "k.wav")}},
        }
    models = {"default": engine, "device": "cuda", "local": {engine: local}}
    worker = TTSWorker(
        load_settings(WorkerSettings, None, name=engine, port=0, metrics_port=None, models=models)
    )
    await worker.start()
    ttfa, rtf = [], []
    try:
        async with TTSClient(worker.address) as client:
            await client.start_session("s", engine)
            for text in SENTENCES:
                call = client.synthesize("s", [text])
                t0 = time.perf_counter()
                audio, first = [], None
                async for frame in call:
                    if frame.audio_data and first is None:
                        first = time.perf_counter() - t0
                    audio.append(frame.audio_data)
                took = time.perf_counter() - t0
                pcm = b"".join(audio)
                ttfa.append(first * 1000)
                rtf.append(took / (len(pcm) / 2 / 48000))
                assert wer(text, listen(pcm, 48000, text)) <= 0.3, text
            await client.end_session("s")
    finally:
        await worker.stop(grace=0)
    figures = {"engine": engine, "ttfa_ms": np.round(ttfa, 1).tolist(), "rtf": np.round(rtf, 3).tolist()}
    record_property("figures", json.dumps(figures))
    print(json.dumps(figures))
