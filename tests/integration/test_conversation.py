"""Spoken conversations over the real WebSocket: the real orchestrator process (VAD, Whisper,
echo responder) and the real Piper worker process."""

from __future__ import annotations

import asyncio
import functools

import numpy as np
import pytest
from speech import listen, wer
from voices import espeak_speech, pad, piper_speech, with_noise

from appliance.transport.ws_client import WsClient

RATE = 16000


@pytest.fixture
async def client(orchestrator):
    c = WsClient(orchestrator.url)
    await c.connect(RATE)
    yield c
    await c.close()


def _turn_done(c: WsClient):
    return c.rx.of_type("metrics")


@pytest.mark.parametrize(
    "voice, text",
    [
        (functools.partial(piper_speech, steady=True), "What is the weather like in Paris today?"),
        (espeak_speech, "Please set a timer for ten minutes."),
    ],
)
async def test_a_spoken_turn_is_transcribed_answered_and_spoken(client, voice, text):
    speech = with_noise(pad(voice(text, RATE), RATE))
    await client.stream(speech, RATE)
    await client.wait_for(lambda: _turn_done(client), 30)
    transcript = client.rx.of_type("transcript")[-1]
    assert transcript["final"] is True
    assert wer(text, transcript["text"]) <= 0.15, transcript["text"]
    reply = " ".join(e["text"] for e in client.rx.of_type("reply"))
    assert reply, "no reply text"
    states = [e["state"] for e in client.rx.of_type("state")]
    assert states[:1] == ["LISTENING"] and "SPEAKING" in states and states[-1] == "WAITING_FOR_INPUT"
    assert client.rx.of_type("reply_end")
    metrics = client.rx.of_type("metrics")[-1]
    for key in ("endpoint_ms", "asr_ms", "responder_ms", "tts_first_frame_ms", "voice_to_voice_ms"):
        assert metrics[key] is not None and metrics[key] >= 0, (key, metrics)

    # Reply audio: exact frames, paced in real time, and it says the reply.
    frames = client.rx.frames
    assert frames and all(len(f) == 1920 for _, f in frames)
    duration = len(frames) * 0.02
    span = frames[-1][0] - frames[0][0]
    assert span >= duration - 0.15, f"{duration:.2f}s of audio arrived in {span:.2f}s: not paced"
    heard = listen(client.rx.audio(), 48000, reply)
    assert wer(reply, heard) <= 0.25, (reply, heard)


async def test_typed_turn_and_say(client):
    await client.send_json({"type": "text", "text": "hello there"})
    await client.wait_for(lambda: _turn_done(client), 30)
    assert client.rx.of_type("transcript")[-1]["text"] == "hello there"
    assert client.rx.of_type("reply")
    n = len(client.rx.of_type("reply_end"))
    await client.send_json({"type": "say", "text": "Exactly these words."})
    await client.wait_for(lambda: len(client.rx.of_type("reply_end")) > n, 30)
    assert client.rx.of_type("reply")[-1]["text"] == "Exactly these words."


LONG_SAY = (
    "Here is a long story for you. Once upon a time there was a lighthouse keeper who lived alone "
    "on a small island, far from the coast. Every evening he climbed the stairs and lit the great lamp, "
    "and ships far away saw the light and knew where the rocks were."
)


async def test_barge_in_stops_the_reply_and_the_new_turn_is_answered(client):
    await client.send_json({"type": "say", "text": LONG_SAY})
    await client.wait_for(lambda: len(client.rx.frames) > 50, 30)  # the reply is playing
    question = pad(piper_speech("What time is it right now?", RATE), RATE, 0.0, 1.2)
    loop = asyncio.get_running_loop()
    t_speech = await client.stream(question, RATE)
    await client.wait_for(lambda: client.rx.of_type("barge_in"), 10)
    await client.wait_for(lambda: len(client.rx.of_type("transcript")) >= 1 and _turn_done(client), 30)
    # The long reply stopped: far less than its ~15 s was received before the new turn's reply.
    barge_at = next(t for t, e in client.rx.events if e.get("type") == "barge_in")
    old_reply_frames = [t for t, _ in client.rx.frames if t <= barge_at + 0.2]
    assert len(old_reply_frames) * 0.02 < 10
    assert barge_at - t_speech < 1.0  # speech onset → barge_in well within a second
    assert wer("what time is it right now", client.rx.of_type("transcript")[-1]["text"]) <= 0.2
    assert loop.time() > barge_at


async def test_interrupt_message_stops_the_reply_now(client):
    await client.send_json({"type": "say", "text": LONG_SAY})
    await client.wait_for(lambda: len(client.rx.frames) > 25, 30)
    await client.send_json({"type": "interrupt"})
    await client.wait_for(lambda: client.rx.of_type("barge_in"), 5)
    await asyncio.sleep(0.3)
    count = len(client.rx.frames)
    await asyncio.sleep(0.5)
    assert len(client.rx.frames) == count, "frames kept coming after interrupt"
    assert [e["state"] for e in client.rx.of_type("state")][-1] == "WAITING_FOR_INPUT"


async def test_own_voice_echo_and_noise_do_not_barge_in(client):
    await client.send_json({"type": "say", "text": LONG_SAY})
    await client.wait_for(lambda: len(client.rx.frames) > 10, 30)
    # Feed back what the appliance is playing, 20 dB down, with background noise, for 4 s —
    # the microphone of a device whose speaker plays the reply.
    loop = asyncio.get_running_loop()
    first_frame_at = client.rx.frames[0][0]
    start = loop.time()
    n = 0
    while loop.time() - start < 4:
        playing = np.frombuffer(client.rx.audio(), dtype="<i2")
        pos = int((loop.time() - first_frame_at) * 48000)
        chunk = playing[pos : pos + 960][::3].astype(np.float64) * 0.1  # 48 kHz → 16 kHz, −20 dB
        chunk = np.pad(chunk, (0, 320 - len(chunk)))
        await client.send_bytes(with_noise(chunk.astype(np.int16), -50, seed=n).tobytes())
        n += 1
        await asyncio.sleep(max(0.0, start + n * 0.02 - loop.time()))
    assert client.rx.of_type("barge_in") == []
    assert "BARGED_IN" not in [e["state"] for e in client.rx.of_type("state")]


async def test_long_turn_gets_partial_transcripts_then_the_final(client):
    text = (
        "I would like to plan a trip to the mountains next weekend with my two brothers "
        "and we need a place to stay near the lake"
    )
    # 2 s of silence after it, as a microphone goes on sending: enough for the turn to end even where
    # the turn model calls its last pause incomplete ([turn] incomplete_timeout_ms, 1.2 s).
    await client.stream(pad(piper_speech(text, RATE), RATE, 0.5, 2.0), RATE)
    await client.wait_for(lambda: _turn_done(client), 40)
    transcripts = client.rx.of_type("transcript")
    partials = [t for t in transcripts if not t["final"]]
    finals = [t for t in transcripts if t["final"]]
    assert partials, "no partial transcript during a long turn"
    assert len(finals) == 1 and wer(text, finals[0]["text"]) <= 0.15
    # Partials come before the final and say the beginning of what was said.
    first_partial_words = partials[0]["text"].lower().split()[:3]
    assert " ".join(first_partial_words) in finals[0]["text"].lower()
