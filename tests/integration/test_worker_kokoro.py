"""Kokoro-82M speaking Japanese through the real worker process: frames, duration, what the audio
says (transcribed offline by Whisper base), STOP and PAUSE/RESUME, unreadable text."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from services import WorkerProcess
from speech import cer, transcribe_japanese
from test_worker_stream import assert_well_formed

from appliance.tts.catalog import Catalog
from appliance.tts.client import Control, TTSClient

VOICE = "kokoro-ja-jf_alpha"
SENTENCES = ["今日はいい天気ですね。", "駅までの道を教えてください。", "明日の朝、早く起こしてください。"]
LONG_TEXT = "".join(SENTENCES * 2)

if VOICE not in Catalog().ids():
    pytest.skip(f"Kokoro is not installed here: {Catalog().missing.get(VOICE)}", allow_module_level=True)


@pytest.fixture(scope="module")
def whisper_cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("whisper-base"))


@pytest.fixture(scope="module")
def kokoro_worker():
    worker = WorkerProcess(env={"APPLIANCE_MODELS__DEFAULT": VOICE})
    try:
        worker.wait_ready(timeout=180)
        yield worker
    finally:
        worker.stop()


@pytest.fixture
async def client(kokoro_worker):
    async with TTSClient(kokoro_worker.address) as c:
        yield c


async def _session(client: TTSClient) -> str:
    sid = f"k-{uuid.uuid4().hex[:10]}"
    reply = await client.start_session(sid)
    assert reply.success and reply.sample_rate == 48000 and reply.frame_duration_ms == 20
    return sid


async def test_the_worker_declares_japanese(client):
    caps = await client.capabilities()
    assert "kokoro" in caps.engines and "ja-JP" in caps.languages and caps.default_model == VOICE


async def test_japanese_is_spoken_in_20ms_frames_and_says_the_text(client, whisper_cache):
    sid = await _session(client)
    for sentence in SENTENCES:
        pcm, frames = await client.synthesize_all(sid, sentence)
        assert_well_formed(frames, sid)
        seconds = len(pcm) / 2 / 48000
        assert 0.08 * len(sentence) < seconds < 0.4 * len(sentence), seconds  # ~7 morae a second
        heard = transcribe_japanese(pcm, 48000, whisper_cache)
        assert cer(sentence, heard) <= 0.2, (sentence, heard)
    await client.end_session(sid)


async def test_stop_ends_and_pause_holds_a_long_reply(client):
    sid = await _session(client)
    frames, got_some = [], asyncio.Event()

    async def receive(call):
        async for frame in call:
            frames.append(frame)
            if len(frames) >= 10:
                got_some.set()

    task = asyncio.create_task(receive(client.synthesize(sid, [LONG_TEXT])))
    await asyncio.wait_for(got_some.wait(), 60)
    assert (await client.control(sid, Control.PAUSE)).success
    await asyncio.sleep(0.5)  # frames already on their way when PAUSE was acknowledged
    held = len(frames)
    await asyncio.sleep(1.0)
    assert len(frames) == held, "frames kept coming while paused"
    assert (await client.control(sid, Control.RESUME)).success
    assert (await client.control(sid, Control.STOP)).success
    await asyncio.wait_for(task, 30)
    assert frames[-1].is_final
    assert len(frames) * 0.02 < 12  # the whole text is ~14 s of speech
    pcm, _ = await client.synthesize_all(sid, "まだいます。")
    assert pcm
    await client.end_session(sid)


async def test_text_with_nothing_readable_gives_no_audio(client):
    sid = await _session(client)
    pcm, frames = await client.synthesize_all(sid, "🙂🙂")
    assert pcm == b"" and frames[-1].is_final
    await client.end_session(sid)
