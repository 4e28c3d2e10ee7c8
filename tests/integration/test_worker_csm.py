"""Sesame CSM through the real gRPC worker, with a tiny random-weight CSM saved as the published
checkpoint is (tests/csm_tiny.py) and served from ``[models.local]``: audio streams while the
model is still generating, STOP and a closed session end generation and its thread, PAUSE holds
generation and RESUME finishes it, the lease is released, and text too long for the model's
context is refused as the client's error. Random weights say nothing: the checks are of shape,
timing order and resources, not of words."""

from __future__ import annotations

import asyncio
import threading

import grpc
import numpy as np
import pytest

pytest.importorskip("transformers", reason="the csm extra (pip install 'appliance[csm]')")

from csm_tiny import build_tiny_csm, build_tiny_lora

from appliance.config import WorkerSettings, load_settings
from appliance.tts.client import Control, TTSClient
from appliance.tts.worker import TTSWorker

MODEL = "csm-tiny"
TEXT = "Hello there, this is a tiny model of the same shape as the real one, speaking for a while."
FRAME_BYTES = 1920  # 20 ms at 48 kHz, int16
CSM_FRAME_MS = 80  # 12.5 Mimi frames a second


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_tiny_csm(tmp_path_factory.mktemp("csm") / MODEL)


@pytest.fixture(scope="module")
def loras(checkpoint, tmp_path_factory):
    base = tmp_path_factory.mktemp("loras")
    return {
        name: str(build_tiny_lora(checkpoint, base / name, seed))
        for name, seed in (("calm", 1), ("bright", 2))
    }


async def _worker(checkpoint, loras=None, voice_prompts=None, default: str = MODEL) -> TTSWorker:
    local = {
        "engine": "csm",
        "path": str(checkpoint),
        "loras": loras or {},
        "voice_prompts": voice_prompts or {},
    }
    models = {"default": default, "serve": [MODEL], "local": {MODEL: local}}
    settings = load_settings(WorkerSettings, None, name="csm", port=0, metrics_port=None, models=models)
    w = TTSWorker(settings)
    await w.start()
    return w


@pytest.fixture
async def worker(checkpoint):
    w = await _worker(checkpoint)
    yield w
    await w.stop(grace=0)


@pytest.fixture
async def voiced_worker(checkpoint, loras):
    w = await _worker(checkpoint, loras)
    yield w
    await w.stop(grace=0)


async def _adapter(worker: TTSWorker):
    lease = await worker.manager.acquire(MODEL)
    try:
        return lease.adapter
    finally:
        worker.manager.release(lease)


def _generating() -> bool:
    return any(t.name == "csm-generate" for t in threading.enumerate())


async def _until(predicate, what: str, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.02)


async def _read_all(call) -> list:
    frames = []
    while (frame := await call.read()) is not grpc.aio.EOF:
        frames.append(frame)
    return frames


async def test_audio_streams_while_the_model_is_still_generating(worker):
    adapter = await _adapter(worker)
    async with TTSClient(worker.address) as client:
        await client.start_session("s", MODEL)
        base = adapter.frames_made
        call = client.synthesize("s", [TEXT])
        first = await call.read()
        made_at_first_audio = adapter.frames_made - base
        frames = [first, *await _read_all(call)]
        await client.end_session("s")
    made = adapter.frames_made - base
    assert made_at_first_audio < made // 2, (made_at_first_audio, made)
    audio = [f.audio_data for f in frames if f.audio_data]
    assert frames[-1].is_final and all(len(a) == FRAME_BYTES for a in audio)
    # Every Mimi frame the model made is 80 ms of audio (the resampler's edge aside).
    assert abs(len(audio) * 20 - made * CSM_FRAME_MS) <= 40, (len(audio), made)
    samples = np.frombuffer(b"".join(audio), dtype="<i2")
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 10  # not silence
    await _until(lambda: not _generating(), "generation's thread ended")
    assert worker.manager.total_refcount() == 0


async def test_stop_ends_generation_and_its_thread(worker):
    adapter = await _adapter(worker)
    async with TTSClient(worker.address) as client:
        await client.start_session("s", MODEL)
        call = client.synthesize("s", [TEXT])
        for _ in range(3):
            await call.read()
        run = adapter.generation
        await client.control("s", Control.STOP)
        frames = await _read_all(call)
        await _until(lambda: not _generating(), "generation's thread ended after STOP")
        stopped_at = run.made
        assert stopped_at < adapter.max_frames(TEXT), stopped_at
        await asyncio.sleep(0.3)
        assert run.made == stopped_at  # nothing more was made
        assert len(frames) < stopped_at * CSM_FRAME_MS // 20
        await client.end_session("s")
    assert worker.manager.total_refcount() == 0


async def test_pause_holds_generation_and_resume_finishes_it(worker):
    adapter = await _adapter(worker)
    async with TTSClient(worker.address) as client:
        await client.start_session("s", MODEL)
        base = adapter.frames_made
        call = client.synthesize("s", [TEXT])
        frames = [await call.read() for _ in range(2)]
        await client.control("s", Control.PAUSE)
        seen = [adapter.frames_made]

        def settled() -> bool:
            seen.append(adapter.frames_made)
            return len(seen) > 25 and seen[-1] == seen[-25]  # no new frame for 0.5 s

        await _until(settled, "generation waits while the session is paused")
        held = adapter.frames_made - base
        assert _generating(), "the paused stream's generation ended instead of waiting"
        await client.control("s", Control.RESUME)
        frames += await _read_all(call)
        await client.end_session("s")
    made = adapter.frames_made - base
    assert frames[-1].is_final and made > held
    audio = [f for f in frames if f.audio_data]
    assert abs(len(audio) * 20 - made * CSM_FRAME_MS) <= 40
    await _until(lambda: not _generating(), "generation's thread ended")


async def test_closing_the_session_mid_generation_ends_it(worker):
    adapter = await _adapter(worker)
    async with TTSClient(worker.address) as client:
        await client.start_session("s", MODEL)
        call = client.synthesize("s", [TEXT])
        await call.read()
        run = adapter.generation
        call.cancel()
        await client.end_session("s")
    await _until(lambda: not _generating(), "generation's thread ended with the session")
    assert run.made < adapter.max_frames(TEXT)
    assert worker.manager.total_refcount() == 0


async def test_text_too_long_for_the_context_is_the_client_s_error(worker):
    long_sentence = "word " * 400  # one sentence: the segmenter cannot split it below the context
    async with TTSClient(worker.address) as client:
        await client.start_session("s", MODEL)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.synthesize_all("s", long_sentence)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
        assert "too long" in err.value.details()
        # The session goes on.
        _, frames = await client.synthesize_all("s", "Short and fine.")
        assert frames[-1].is_final
        await client.end_session("s")
    assert worker.manager.total_refcount() == 0


async def test_the_model_unloads_and_its_memory_is_let_go(worker):
    async with TTSClient(worker.address) as client:
        response = await client.unload_model(MODEL)
    assert response.success, response.message
    assert not worker.manager.is_resident(MODEL)


async def _said(client: TTSClient, session_id: str, seed: int = 1234) -> bytes:
    import torch

    torch.manual_seed(seed)  # generation samples from torch's global generator: the same draws
    audio, _ = await client.synthesize_all(session_id, "Hello there.")
    return audio


async def test_lora_voices_switch_per_session_on_one_loaded_model(voiced_worker):
    adapter = await _adapter(voiced_worker)
    async with TTSClient(voiced_worker.address) as client:
        await client.start_session("plain", MODEL)
        await client.start_session("calm", MODEL, options={"lora": "calm"})
        await client.start_session("bright", MODEL, options={"lora": "bright"})
        reference = {sid: await _said(client, sid) for sid in ("plain", "calm", "bright")}
        assert len(set(reference.values())) == 3, "a LoRA voice did not change the audio"
        # Back and forth between the sessions: each voice is exactly itself again, so a switch
        # neither leaves the last voice on nor changes the base weights.
        for sid in ("calm", "plain", "bright", "calm", "bright", "plain"):
            assert await _said(client, sid) == reference[sid], sid
        for sid in reference:
            await client.end_session(sid)
    assert await _adapter(voiced_worker) is adapter  # never reloaded
    assert voiced_worker.manager.total_refcount() == 0


async def test_an_unknown_lora_or_speaker_is_refused_at_start(voiced_worker):
    async with TTSClient(voiced_worker.address) as client:
        for options, words in (
            ({"lora": "gruff"}, "no LoRA voice 'gruff' (it has: bright, calm)"),
            ({"speaker": "x"}, "speaker"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.start_session("s", MODEL, options=options)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words in err.value.details(), err.value.details()
        await client.start_session("s", MODEL, options={"lora": "calm", "speaker": "1"})  # the id is free
        await client.end_session("s")
    assert voiced_worker.manager.total_refcount() == 0


PROMPT_TEXT = "The lighthouse keeper lit the lamp."


@pytest.fixture(scope="module")
def prompt_wav(tmp_path_factory):
    import wave

    from voices import piper_speech

    path = tmp_path_factory.mktemp("prompt") / "keeper.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes(piper_speech(PROMPT_TEXT, 22050).astype("<i2").tobytes())
    return path


async def test_a_voice_prompt_is_read_once_and_the_speech_follows_it(checkpoint, prompt_wav, monkeypatch):
    from appliance.tts.adapters import csm

    reads = []
    read_clip = csm.read_clip
    monkeypatch.setattr(csm, "read_clip", lambda path, rate: reads.append(path) or read_clip(path, rate))
    worker = await _worker(
        checkpoint, voice_prompts={"keeper": {"audio": str(prompt_wav), "text": PROMPT_TEXT}}
    )
    try:
        async with TTSClient(worker.address) as client:
            await client.start_session("plain", MODEL)
            await client.start_session("keeper", MODEL, options={"voice_prompt": "keeper"})
            plain, keeper = await _said(client, "plain"), await _said(client, "keeper")
            assert plain != keeper, "the voice prompt did not reach the model"
            assert await _said(client, "keeper") == keeper  # the same prompt, the same draws
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.start_session("other", MODEL, options={"voice_prompt": "narrator"})
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "no voice prompt 'narrator' (it has: keeper)" in err.value.details()
            for sid in ("plain", "keeper"):
                await client.end_session(sid)
        assert reads == [prompt_wav]  # read with the model, once
        assert worker.manager.total_refcount() == 0
    finally:
        await worker.stop(grace=0)


async def test_a_voice_prompt_that_is_not_a_wav_stops_the_model_loading_and_says_why(checkpoint, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not a wav at all")
    worker = await _worker(
        checkpoint, voice_prompts={"x": {"audio": str(broken), "text": "x"}}, default="mock-sine"
    )
    try:
        async with TTSClient(worker.address) as client:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.start_session("s", MODEL)
            assert f"{broken}: not a WAV file" in err.value.details(), err.value.details()
            await client.start_session("s", "mock-sine")  # the worker goes on
            await client.end_session("s")
        assert worker.manager.total_refcount() == 0
    finally:
        await worker.stop(grace=0)


async def test_the_worker_says_it_serves_csm_with_lora_and_zero_shot_voices(worker):
    from appliance.discovery import flags_for

    async with TTSClient(worker.address) as client:
        caps = await client.capabilities()
    assert "csm" in caps.engines and MODEL in caps.available_models
    flags = flags_for(caps.engines)
    assert flags.zero_shot and flags.lora and not flags.cpu_ok
