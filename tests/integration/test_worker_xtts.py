"""XTTS v2 through the real gRPC worker, with a tiny random-weight XTTS saved as the published
checkpoint is (tests/xtts_tiny.py) and a reference clip Piper says: a speaker's conditioning is
computed once, when the model loads; audio streams while the GPT is still writing; STOP ends it;
a session without a voice prompt (where the model has several), an unknown one, or text past the
model's limit is refused as the client's error; and the weights load only once their licence is
accepted. Random weights say nothing: the checks are of shape, order and resources."""

from __future__ import annotations

import wave

import grpc
import pytest
import torch

pytest.importorskip("TTS", reason="the xtts extra (pip install 'appliance[xtts]')")

from voices import piper_speech
from xtts_tiny import MAX_AUDIO_TOKENS, build_tiny_xtts

from appliance.config import WorkerSettings, load_settings
from appliance.tts.adapters.xtts import STREAM_TOKENS
from appliance.tts.client import Control, TTSClient
from appliance.tts.worker import TTSWorker

MODEL = "xtts-tiny"
TEXT = "Hello there, this is a tiny model."


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_tiny_xtts(tmp_path_factory.mktemp("xtts") / MODEL)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    out = {}
    for name, text in (("keeper", "The keeper lit the lamp."), ("sailor", "The ship sailed at dawn.")):
        path = tmp_path_factory.mktemp("clips") / f"{name}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(22050)
            w.writeframes(piper_speech(text, 22050).astype("<i2").tobytes())
        out[name] = str(path)
    return out


async def _worker(checkpoint, clips, accept: str = "CPML", default: str = MODEL) -> TTSWorker:
    local = {
        "engine": "xtts",
        "path": str(checkpoint),
        "accept_licence": accept,
        "voice_prompts": {name: {"audio": path} for name, path in clips.items()},
    }
    models = {"default": default, "serve": [MODEL], "local": {MODEL: local}}
    worker = TTSWorker(
        load_settings(WorkerSettings, None, name="xtts", port=0, metrics_port=None, models=models)
    )
    await worker.start()
    return worker


@pytest.fixture
async def worker(checkpoint, clips, monkeypatch):
    from TTS.tts.models.xtts import Xtts

    conditioned = []
    conditioning = Xtts.get_conditioning_latents
    monkeypatch.setattr(
        Xtts,
        "get_conditioning_latents",
        lambda self, **kw: conditioned.append(kw) or conditioning(self, **kw),
    )
    w = await _worker(checkpoint, clips)
    w.conditioned = conditioned
    yield w
    await w.stop(grace=0)


async def _adapter(worker):
    lease = await worker.manager.acquire(MODEL)
    try:
        return lease.adapter
    finally:
        worker.manager.release(lease)


async def _read_all(call) -> list:
    frames = []
    while (frame := await call.read()) is not grpc.aio.EOF:
        frames.append(frame)
    return frames


async def test_audio_streams_while_the_gpt_is_still_writing(worker, clips):
    adapter = await _adapter(worker)
    async with TTSClient(worker.address) as client:
        await client.start_session("keeper", MODEL, options={"voice_prompt": "keeper"})
        await client.start_session("sailor", MODEL, options={"voice_prompt": "sailor"})
        for sid in ("keeper", "sailor", "keeper"):
            torch.manual_seed(3)  # the GPT samples from torch's generator: the same draws each run
            base = adapter.chunks_made
            call = client.synthesize(sid, [TEXT])
            first = await call.read()
            chunks_at_first_audio = adapter.chunks_made - base
            frames = [first, *await _read_all(call)]
            made = adapter.chunks_made - base
            # Decoded in pieces of STREAM_TOKENS, the first before the GPT had written the rest.
            assert 3 <= made <= -(-MAX_AUDIO_TOKENS // STREAM_TOKENS), made
            assert chunks_at_first_audio < made - 1, (chunks_at_first_audio, made)
            audio = [f.audio_data for f in frames if f.audio_data]
            assert frames[-1].is_final and audio and all(len(a) == 1920 for a in audio)
        for sid in ("keeper", "sailor"):
            await client.end_session(sid)
    # Each speaker's conditioning was computed once, at load, for all the sessions after.
    assert sorted(c["audio_path"][0] for c in worker.conditioned) == sorted(clips.values())
    assert worker.manager.total_refcount() == 0


async def test_stop_ends_the_stream_and_the_gpt(worker):
    adapter = await _adapter(worker)
    async with TTSClient(worker.address) as client:
        await client.start_session("s", MODEL, options={"voice_prompt": "keeper"})
        torch.manual_seed(3)
        base = adapter.chunks_made
        call = client.synthesize("s", [TEXT])
        await call.read()
        await client.control("s", Control.STOP)
        await _read_all(call)
        stopped = adapter.chunks_made - base
        await client.end_session("s")
    assert stopped < -(-MAX_AUDIO_TOKENS // STREAM_TOKENS)
    assert worker.manager.total_refcount() == 0


async def test_bad_sessions_and_text_are_the_client_s_errors(worker):
    async with TTSClient(worker.address) as client:
        for options, words in (
            (
                {},
                "speaks as a voice prompt does: pick one with the option voice_prompt (it has: keeper, sailor)",
            ),
            ({"voice_prompt": "pirate"}, "no voice prompt 'pirate' (it has: keeper, sailor)"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.start_session("s", MODEL, options=options)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words in err.value.details(), err.value.details()
        await client.start_session("s", MODEL, options={"voice_prompt": "sailor"})
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.synthesize_all("s", "a" * 300)  # one word: no sentence or clause to cut at
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "too long" in err.value.details()
        await client.end_session("s")
    assert worker.manager.total_refcount() == 0


async def test_the_weights_load_only_with_their_licence_accepted(checkpoint, clips):
    worker = await _worker(checkpoint, clips, accept="", default="mock-sine")
    try:
        async with TTSClient(worker.address) as client:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.start_session("s", MODEL, options={"voice_prompt": "keeper"})
            details = err.value.details()
            assert "Coqui Public Model License" in details and 'accept_licence = "CPML"' in details, details
        assert not worker.manager.is_resident(MODEL)
    finally:
        await worker.stop(grace=0)


async def test_the_worker_says_it_serves_xtts_and_zero_shot_voices(worker):
    from appliance.discovery import flags_for

    async with TTSClient(worker.address) as client:
        caps = await client.capabilities()
    assert "xtts" in caps.engines and MODEL in caps.available_models
    flags = flags_for(caps.engines)
    assert flags.zero_shot and not flags.lora and not flags.cpu_ok
