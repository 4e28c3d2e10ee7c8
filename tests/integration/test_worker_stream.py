"""The real worker process with the real Piper voice: frame shape, what the audio says, streaming."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest
from speech import listen, wer

from appliance.audio import FRAME_BYTES
from appliance.rpc import tts_pb2 as pb
from appliance.tts.client import TTSClient

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please turn off the kitchen lights before you go to bed.",
    "My favorite season is autumn, because the trees turn red and gold.",
    "Can you remind me to call my sister tomorrow morning?",
    "The train to the city leaves every twenty minutes.",
]


@pytest.fixture
async def client(piper_worker):
    async with TTSClient(piper_worker.address) as c:
        yield c


async def _session(client: TTSClient, model: str = "") -> str:
    sid = f"t-{uuid.uuid4().hex[:10]}"
    reply = await client.start_session(sid, model)
    assert reply.success and reply.sample_rate == 48000 and reply.frame_duration_ms == 20
    return sid


def assert_well_formed(frames: list[pb.AudioFrame], sid: str) -> None:
    assert frames, "no frames"
    *audio, final = frames
    assert final.is_final and final.audio_data == b""
    assert not any(f.is_final for f in audio)
    assert [f.sequence_number for f in frames] == list(range(len(frames)))
    for f in frames:
        assert f.session_id == sid
        assert f.sample_rate == 48000 and f.frame_duration_ms == 20
    assert all(len(f.audio_data) == FRAME_BYTES for f in audio)


async def test_frames_are_exact_20ms_48k_with_contiguous_sequence_and_final(client):
    sid = await _session(client)
    pcm, frames = await client.synthesize_all(sid, SENTENCES[0])
    assert_well_formed(frames, sid)
    seconds = len(pcm) / 2 / 48000
    assert 1.5 < seconds < 6, seconds
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    assert np.abs(samples).max() <= 10 ** (-0.5 / 20)  # limiter (-1 dBFS before resampling): nothing clips
    assert np.sqrt(np.mean(samples**2)) > 0.02  # and it is not silent
    await client.end_session(sid)


async def test_audio_says_the_text(client):
    sid = await _session(client)
    references, hypotheses = [], []
    for sentence in SENTENCES:
        pcm, frames = await client.synthesize_all(sid, sentence)
        assert_well_formed(frames, sid)
        references.append(sentence)
        hypotheses.append(listen(pcm, 48000, sentence))
    error = wer(" ".join(references), " ".join(hypotheses))
    assert error <= 0.10, (error, hypotheses)
    await client.end_session(sid)


async def test_text_in_several_chunks_is_spoken_as_soon_as_a_sentence_completes(client):
    sid = await _session(client)
    first_frame = asyncio.Event()
    sent_after_first_frame = []

    async def llm_tokens():
        for token in ["Good ", "morning", "! ", "It is ", "sunny"]:
            yield token
        # The first sentence is complete: its audio must come before the rest of the text does.
        await asyncio.wait_for(first_frame.wait(), 10)
        for token in [" and warm ", "today."]:
            sent_after_first_frame.append(token)
            yield token

    frames = []
    async for frame in client.synthesize(sid, llm_tokens()):
        if frame.audio_data:
            first_frame.set()
        frames.append(frame)
    assert_well_formed(frames, sid)
    assert sent_after_first_frame == [" and warm ", "today."]
    pcm = b"".join(f.audio_data for f in frames)
    assert (
        wer(
            "Good morning! It is sunny and warm today.",
            listen(pcm, 48000, "Good morning! It is sunny and warm today."),
        )
        <= 0.15
    )
    await client.end_session(sid)


async def test_long_first_sentence_is_split_so_audio_starts_early(client):
    sid = await _session(client)
    text = (
        "When you get home this evening, and after you have had something to eat, "
        "please water the tomatoes in the greenhouse because it has been very dry."
    )
    pcm, frames = await client.synthesize_all(sid, text)
    assert_well_formed(frames, sid)
    assert wer(text, listen(pcm, 48000, text)) <= 0.15
    await client.end_session(sid)


async def test_sequential_utterances_on_one_session_restart_numbering(client):
    sid = await _session(client)
    for sentence in SENTENCES[:2]:
        _pcm, frames = await client.synthesize_all(sid, sentence)
        assert_well_formed(frames, sid)
    await client.end_session(sid)


async def test_concurrent_sessions_each_get_their_own_audio(client):
    async def one(sentence: str) -> tuple[str, str]:
        sid = await _session(client)
        try:
            pcm, frames = await client.synthesize_all(sid, sentence)
            assert_well_formed(frames, sid)
            return sentence, listen(pcm, 48000, sentence)
        finally:
            await client.end_session(sid)

    before = {m.model_id: m.refcount for m in (await client.list_models()).models}
    results = await asyncio.gather(*(one(s) for s in SENTENCES[:4]))
    for reference, hypothesis in results:
        # Each says its own sentence, not another's (Piper's voicing varies run to run, and the
        # tiny checking model now and then mishears a word or two of an otherwise clean sentence).
        scores = {other: wer(other, hypothesis) for other, _ in results}
        assert min(scores, key=scores.get) == reference, (reference, hypothesis)
        assert scores[reference] <= 0.3, (reference, hypothesis)
    after = {m.model_id: m.refcount for m in (await client.list_models()).models}
    assert after == before
