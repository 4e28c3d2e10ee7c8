"""The hibari engine through the real worker process: frames, what the audio says, control, bad input.

The worker serves hibari's voice heart as its default and the Piper voice beside it, so the
tests also show that one engine's bad input leaves the other's sessions alone."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from services import WorkerProcess
from speech import listen, wer
from test_worker_stream import SENTENCES, assert_well_formed

from appliance.tts.client import Control, TTSClient

pytest.importorskip("hibari")

HIBARI = "hibari-heart"
PIPER = "piper-en_US-joe-medium"
LONG_TEXT = (
    "Once upon a time there was a lighthouse keeper who lived alone on a small island. "
    "Every evening he climbed the stairs and lit the great lamp. "
    "Ships far away saw the light and knew where the rocks were. "
    "One winter a storm broke the windows, and he worked all night to keep the flame alive. "
    "In the morning the sea was calm again, and the keeper finally slept."
)


@pytest.fixture(scope="module")
def hibari_worker():
    worker = WorkerProcess(env={"APPLIANCE_MODELS__DEFAULT": HIBARI})
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


@pytest.fixture
async def client(hibari_worker):
    async with TTSClient(hibari_worker.address) as c:
        yield c
        assert all(m.refcount == 0 for m in (await c.list_models()).models), "a test left a lease"


async def _session(client: TTSClient, model: str = "") -> str:
    sid = f"h-{uuid.uuid4().hex[:10]}"
    reply = await client.start_session(sid, model)
    assert reply.success and reply.sample_rate == 48000 and reply.frame_duration_ms == 20
    return sid


async def test_the_worker_declares_hibari_and_its_language(client):
    caps = await client.capabilities()
    assert {"hibari", "piper"} <= set(caps.engines)
    assert caps.default_model == HIBARI and HIBARI in caps.available_models
    (model,) = [m for m in (await client.list_models()).models if m.model_id == HIBARI]
    assert model.engine == "hibari" and model.language == "en-US" and model.native_sample_rate == 24000


async def test_frames_are_20ms_48k_and_the_audio_says_the_text(client):
    sid = await _session(client)
    references, hypotheses = [], []
    for sentence in SENTENCES:
        pcm, frames = await client.synthesize_all(sid, sentence)
        assert_well_formed(frames, sid)
        assert 1.0 < len(pcm) / 2 / 48000 < 8
        references.append(sentence)
        hypotheses.append(listen(pcm, 48000, sentence))
    error = wer(" ".join(references), " ".join(hypotheses))
    assert error <= 0.10, (error, hypotheses)
    await client.end_session(sid)


async def test_pause_holds_the_stream_resume_finishes_it_and_stop_ends_it(client):
    sid = await _session(client)
    got_some = asyncio.Event()
    frames = []

    async def receive(call):
        async for frame in call:
            frames.append(frame)
            if len(frames) >= 10:
                got_some.set()

    task = asyncio.create_task(receive(client.synthesize(sid, [LONG_TEXT])))
    await asyncio.wait_for(got_some.wait(), 30)
    assert (await client.control(sid, Control.PAUSE)).success
    await asyncio.sleep(0.5)  # frames already on their way when PAUSE was acknowledged
    held = len(frames)
    await asyncio.sleep(1.0)
    assert len(frames) == held, "frames kept coming while paused"
    assert not task.done()
    assert (await client.control(sid, Control.RESUME)).success
    await asyncio.wait_for(task, 60)
    assert_well_formed(frames, sid)
    pcm = b"".join(f.audio_data for f in frames)
    assert wer(LONG_TEXT, listen(pcm, 48000, LONG_TEXT)) <= 0.15

    frames.clear()
    got_some.clear()
    task = asyncio.create_task(receive(client.synthesize(sid, [LONG_TEXT])))
    await asyncio.wait_for(got_some.wait(), 30)
    assert (await client.control(sid, Control.STOP)).success
    await asyncio.wait_for(task, 10)
    assert frames[-1].is_final
    assert len(frames) * 0.02 < 20  # the whole text is ~25 s of speech
    pcm, _ = await client.synthesize_all(sid, "Still here.")
    assert pcm
    await client.end_session(sid)


async def test_unmappable_characters_are_dropped_and_the_rest_is_spoken(client):
    sid = await _session(client)
    pcm, frames = await client.synthesize_all(sid, "你好世界 🙂")
    assert pcm == b"" and frames[-1].is_final  # nothing speakable: just the final frame
    text = "Good morning 你好, the kitchen lights are on."
    pcm, frames = await client.synthesize_all(sid, text)
    assert_well_formed(frames, sid)
    assert (
        wer(
            "Good morning, the kitchen lights are on.",
            listen(pcm, 48000, "Good morning, the kitchen lights are on."),
        )
        <= 0.2
    )
    await client.end_session(sid)


async def test_an_unknown_or_uninstalled_voice_is_not_found_and_other_sessions_go_on(client):
    piper = await _session(client, PIPER)
    running = asyncio.create_task(client.synthesize_all(piper, SENTENCES[1]))
    for model, says in [
        ("hibari-nope", "unknown model id 'hibari-nope'"),
        ("hibari-emma", "appliance models fetch hibari-emma"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.start_session(f"x-{uuid.uuid4().hex[:8]}", model)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert says in info.value.details() and HIBARI in info.value.details()
    pcm, frames = await asyncio.wait_for(running, 60)
    assert_well_formed(frames, piper)
    assert wer(SENTENCES[1], listen(pcm, 48000, SENTENCES[1])) <= 0.15
    await client.end_session(piper)
