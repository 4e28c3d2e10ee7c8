"""The LiveKit transport end to end: a real livekit-server (built from its Go module), the real
orchestrator in-process (VAD, Whisper, echo responder) joining rooms as the agent, the real Piper
worker process, and a person on the real ``livekit`` rtc SDK publishing speech in real time."""

from __future__ import annotations

import asyncio
import urllib.request
from datetime import timedelta

import aiohttp
import pytest
from livekit import api, rtc
from livekit_server import GoMissing, livekit_server
from speech import listen, wer
from voices import pad, piper_speech

from appliance.bench.livekit_client import RATE, Participant, rms
from appliance.config import OrchestratorSettings, load_settings
from appliance.orchestrator.server import Orchestrator

LONG_SAY = (
    "Here is a long story for you. Once upon a time there was a lighthouse keeper who lived alone "
    "on a small island, far from the coast. Every evening he climbed the stairs and lit the great lamp."
)


@pytest.fixture(scope="module")
def livekit():
    try:
        server = livekit_server()
    except GoMissing as exc:
        pytest.skip(str(exc))
    yield server
    server.close()


def _worker_sessions(worker) -> float:
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=5).read().decode()
    )
    return next(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("appliance_tts_active_sessions ")
    )


async def _eventually(predicate, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)


async def _start(worker, livekit, **livekit_overrides) -> Orchestrator:
    lk = {"enabled": True, "url": livekit.url, "api_key": livekit.api_key, "api_secret": livekit.api_secret}
    settings = load_settings(
        OrchestratorSettings,
        None,
        host="127.0.0.1",
        port=0,
        workers=[worker.address],
        livekit={**lk, **livekit_overrides},
    )
    orch = Orchestrator(settings)
    await orch.start()
    return orch


@pytest.fixture
async def orch(piper_worker, livekit):
    o = await _start(piper_worker, livekit)
    yield o
    await o.stop()


@pytest.fixture
async def person(orch):
    p = Participant()
    await p.join(f"http://127.0.0.1:{orch.port}")
    await p.wait_for(lambda: p.of_type("ready"), 30)
    yield p
    await p.leave()


def _turn_done(p: Participant, n: int = 1) -> bool:
    return len(p.of_type("metrics")) >= n and len(p.of_type("reply_end")) >= n


async def test_spoken_turn_through_a_room_then_leaving(orch, person, piper_worker):
    ready = person.of_type("ready")[0]
    assert ready["sample_rate"] == 48000 and ready["session_id"] in orch.conversations
    assert person.info["room"].startswith("appliance-") and person.info["identity"].startswith("person-")
    (channel,) = orch.livekit.channels
    assert channel.room.name == person.info["room"]
    sessions_at_start = _worker_sessions(piper_worker)
    assert sessions_at_start >= 1

    # A spoken question on a 16 kHz stereo microphone, in real time.
    question = "What is the weather like in Paris today?"
    t0 = asyncio.get_running_loop().time()
    person.play(pad(piper_speech(question, 16000), 16000, 0.3, 2.0))
    await person.wait_for(lambda: _turn_done(person), 60)
    transcript = person.of_type("transcript")[-1]
    assert transcript["final"] is True
    assert wer(question, transcript["text"]) <= 0.15, transcript["text"]
    reply = " ".join(e["text"] for e in person.of_type("reply"))
    assert reply.startswith("You said"), reply
    states = [e["state"] for e in person.of_type("state")]
    assert states[0] == "LISTENING" and "SPEAKING" in states and states[-1] == "WAITING_FOR_INPUT"

    # The reply audio came on the agent's track, and it says the reply.
    await asyncio.sleep(0.5)  # the tail still in flight
    voiced = person.voiced_times(t0)
    assert person.voiced_s(t0) > 1.0, f"only {person.voiced_s(t0):.2f} s of voiced audio received"
    heard_audio = person.audio(voiced[0] - 0.1)
    assert rms(heard_audio) > 1000
    heard = await asyncio.to_thread(listen, heard_audio, RATE, reply)
    assert wer(reply, heard) <= 0.3, (reply, heard)

    # A typed turn on the data topic; bad messages get an error event and change nothing.
    await person.send("not json")
    await person.send({"type": "dance"})
    await person.send({"type": "text", "text": "hello"})
    await person.wait_for(lambda: _turn_done(person, 2), 40)
    assert person.of_type("transcript")[-1]["text"] == "hello"
    assert person.of_type("reply")[-1]["text"] == "You said: hello."
    assert [e["code"] for e in person.of_type("error")] == ["bad_json", "unknown_type"]

    # Leaving ends the session, the worker session, and the agent leaves the room.
    await person.leave()
    await _eventually(
        lambda: not orch.conversations and not orch.livekit.channels, 15, "the session outlived the room"
    )
    await _eventually(
        lambda: _worker_sessions(piper_worker) <= sessions_at_start - 1, 10, "the worker session stayed open"
    )
    assert channel.closed and not channel.room.isconnected()


async def test_interrupt_and_spoken_barge_in_stop_the_reply_audio(orch, person):
    loop = asyncio.get_running_loop()
    # interrupt on the data topic
    t0 = loop.time()
    await person.send({"type": "say", "text": LONG_SAY})
    await person.wait_for(lambda: person.voiced_s(t0) > 0.8, 40)  # the reply is playing
    await person.send({"type": "interrupt"})
    t_interrupt = loop.time()
    await person.wait_for(lambda: person.of_type("barge_in"), 10)
    await asyncio.sleep(1.0)
    # How much reply audio still came, not when: a loaded machine delivers what was in flight late.
    after_s = person.voiced_s(t_interrupt)
    print(f"{after_s * 1000:.0f} ms of voiced reply audio came after the interrupt")
    assert after_s <= 0.3, f"reply audio kept coming: {after_s * 1000:.0f} ms of it after the interrupt"
    assert not person.of_type("reply_end")

    # a person who talks over the reply
    barge_ins = len(person.of_type("barge_in"))
    t1 = loop.time()
    await person.send({"type": "say", "text": LONG_SAY})
    await person.wait_for(lambda: person.voiced_s(t1) > 0.8, 40)
    person.play(pad(piper_speech("Stop, I have another question for you please.", 16000), 16000, 0.0, 1.5))
    await person.wait_for(lambda: len(person.of_type("barge_in")) > barge_ins, 20)
    t_barge = loop.time()
    await asyncio.sleep(1.0)
    after_s = person.voiced_s(t_barge)
    print(f"{after_s * 1000:.0f} ms of voiced reply audio came after the spoken barge-in")
    assert after_s <= 0.3, f"reply audio kept coming: {after_s * 1000:.0f} ms of it after the barge-in"


async def test_five_rooms_at_once(orch):
    people = [Participant(mic_rate=48000, mic_channels=1) for _ in range(5)]
    base = f"http://127.0.0.1:{orch.port}"
    try:
        await asyncio.gather(*(p.join(base) for p in people))
        for p in people:
            await p.wait_for(lambda p=p: p.of_type("ready"), 60)
        assert len(orch.livekit.channels) == 5 and len(orch.conversations) == 5
        assert len({p.info["room"] for p in people}) == 5
        t0 = asyncio.get_running_loop().time()
        await asyncio.gather(
            *(p.send({"type": "text", "text": f"room number {i}"}) for i, p in enumerate(people))
        )
        for i, p in enumerate(people):
            await p.wait_for(lambda p=p: _turn_done(p), 90)
            assert p.of_type("reply")[-1]["text"] == f"You said: room number {i}."
        await asyncio.sleep(0.5)
        for p in people:
            assert p.voiced_s(t0) > 0.5, "a room got no reply audio"
    finally:
        await asyncio.gather(*(p.leave() for p in people))
    await _eventually(
        lambda: not orch.conversations and not orch.livekit.channels, 20, "rooms were not released"
    )


async def test_leaving_mid_reply_ends_the_worker_session(orch, person, piper_worker):
    t0 = asyncio.get_running_loop().time()
    await person.send({"type": "say", "text": LONG_SAY})
    await person.wait_for(lambda: person.voiced_s(t0) > 0.5, 40)
    sessions = _worker_sessions(piper_worker)  # counted while the reply plays, so this room's is in it
    await person.leave()
    await _eventually(
        lambda: not orch.conversations and not orch.livekit.channels, 30, "the session outlived the room"
    )
    await _eventually(
        lambda: _worker_sessions(piper_worker) <= sessions - 1, 30, "the worker session stayed open"
    )


async def test_bad_tokens_and_requests_are_refused(piper_worker, livekit):
    orch = await _start(piper_worker, livekit, max_rooms=1, token_ttl_s=10)
    base = f"http://127.0.0.1:{orch.port}"
    try:
        async with aiohttp.ClientSession() as http:
            for body in (b"{not json", b'{"voice": 5}'):
                async with http.post(f"{base}/livekit/token", data=body) as r:
                    assert r.status == 400 and (await r.json())["error"]
        assert not orch.livekit.channels

        # A token signed with another secret, and one that has expired, do not get into a room.
        def token(secret: str, ttl_s: float) -> str:
            grants = api.VideoGrants(room_join=True, room="appliance-x")
            t = api.AccessToken(livekit.api_key, secret).with_identity("mallory").with_grants(grants)
            return t.with_ttl(timedelta(seconds=ttl_s)).to_jwt()

        # (expired two minutes ago: the server allows a minute of clock skew)
        for bad in (token("x" * 40, 60), token(livekit.api_secret, -120)):
            room = rtc.Room()
            with pytest.raises(rtc.ConnectError):
                await room.connect(livekit.url, bad)

        # The page's token: one room, a microphone and data only; a second room waits for the first.
        first = Participant()
        await first.join(base)
        await first.wait_for(lambda: first.of_type("ready"), 30)
        claims = api.TokenVerifier(livekit.api_key, livekit.api_secret).verify(first.info["token"])
        assert claims.video.room == first.info["room"] and claims.video.room_join
        assert list(claims.video.can_publish_sources) == ["microphone"] and not claims.video.room_admin
        async with aiohttp.ClientSession() as http, http.post(f"{base}/livekit/token", json={}) as r:
            assert r.status == 503 and "maximum" in (await r.json())["error"]
        await first.leave()
        await _eventually(lambda: not orch.livekit.channels, 15, "the room was not released")
    finally:
        await orch.stop()


async def test_unreachable_server_is_a_clear_error(piper_worker, livekit):
    orch = await _start(piper_worker, livekit, url="ws://127.0.0.1:9")
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"http://127.0.0.1:{orch.port}/livekit/token") as r,
        ):
            assert r.status == 502 and "did not let the agent join" in (await r.json())["error"]
        assert not orch.livekit.channels and not orch.conversations
    finally:
        await orch.stop()


async def test_livekit_s_own_one_way_latency_is_measured_tone_by_tone(livekit):
    """The floor `bench conversation --transport livekit` quotes beside its figures: every tone
    sent between two plain participants is found on the other side, after it was sent."""
    from appliance.bench.livekit_floor import one_way_ms

    ms = await one_way_ms(livekit, trials=3)
    assert len(ms) == 3 and all(m > 0 for m in ms), ms


async def test_the_agent_s_source_gives_back_what_it_has_not_played(livekit):
    """What a hold relies on: right after a burst of reply frames, ``take_back`` empties LiveKit's
    queue and counts the frames not yet played; once they have played there is none to take."""
    import numpy as np

    from appliance.transport.livekit_channel import LiveKitChannel

    grants = api.VideoGrants(room_join=True, room="take-back", can_publish=True, can_subscribe=True)
    token = api.AccessToken(livekit.api_key, livekit.api_secret).with_identity("agent").with_grants(grants)
    room = rtc.Room()
    await room.connect(livekit.url, token.to_jwt())
    channel = LiveKitChannel(room, "take-back", "nobody", max_lead_ms=100)
    try:
        await channel.publish()
        tone = (8000 * np.sin(np.arange(960) * 2 * np.pi * 440 / 48000)).astype(np.int16).tobytes()
        for _ in range(5):  # 100 ms of reply, sent at once as the pacer's lead allows
            await channel.send_audio(tone)
        taken = channel.take_back()
        assert 1 <= taken <= 5, taken
        assert channel.source.queued_duration == 0
        for _ in range(2):
            await channel.send_audio(tone)
        await asyncio.sleep(0.3)  # played out
        assert channel.take_back() == 0
    finally:
        await channel.close()
