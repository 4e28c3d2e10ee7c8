"""The WebRTC transport end to end: the real orchestrator in-process (VAD, Whisper, echo responder)
and the real Piper worker process, with an aiortc peer acting as the browser — a data channel
"events", one sendrecv audio transceiver playing speech in real time, POST /webrtc/offer."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import aiohttp
import numpy as np
import pytest
from av import AudioFrame
from speech import listen, wer
from voices import pad, piper_speech

from appliance.audio import resample
from appliance.bench.webrtc_client import RATE, RtcClient
from appliance.bench.webrtc_client import rms as _rms
from appliance.config import OrchestratorSettings, load_settings
from appliance.orchestrator.server import Orchestrator

LONG_SAY = (
    "Here is a long story for you. Once upon a time there was a lighthouse keeper who lived alone "
    "on a small island, far from the coast. Every evening he climbed the stairs and lit the great lamp."
)


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


async def _start(worker, **overrides) -> Orchestrator:
    settings = load_settings(
        OrchestratorSettings, None, host="127.0.0.1", port=0, workers=[worker.address], **overrides
    )
    orch = Orchestrator(settings)
    await orch.start()
    return orch


@pytest.fixture
async def orch(piper_worker):
    o = await _start(piper_worker)
    yield o
    await o.stop()


@pytest.fixture
async def client(orch):
    c = RtcClient(f"http://127.0.0.1:{orch.port}")
    await c.connect()
    await c.wait_for(lambda: c.of_type("ready"), 15)
    yield c
    await c.close()


def _turn_done(c: RtcClient, n: int = 1) -> bool:
    return len(c.of_type("metrics")) >= n


async def test_spoken_and_typed_turns_then_hang_up(orch, client, piper_worker):
    ready = client.of_type("ready")[0]
    assert (
        ready["sample_rate"] == 48000
        and ready["frame_ms"] == 20
        and ready["session_id"] in orch.conversations
    )
    assert len(orch.webrtc.peers) == 1
    audio_section = client.answer.split("m=audio", 1)[1].split("m=", 1)[0]
    assert "a=sendrecv" in audio_section and "opus/48000" in audio_section
    sessions_at_start = _worker_sessions(piper_worker)
    assert sessions_at_start >= 1

    # A spoken question, through the microphone track in real time.
    question = "What is the weather like in Paris today?"
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    client.mic.play(
        resample(pad(piper_speech(question, 16000), 16000, 0.3, 2.0).astype(np.float32) / 32768, 16000, RATE)
        * 32767
    )
    await client.wait_for(lambda: _turn_done(client) and client.of_type("reply_end"), 40)
    transcript = client.of_type("transcript")[-1]
    assert transcript["final"] is True
    assert wer(question, transcript["text"]) <= 0.2, transcript["text"]
    reply = " ".join(e["text"] for e in client.of_type("reply"))
    assert reply.startswith("You said"), reply
    states = [e["state"] for e in client.of_type("state")]
    assert states[0] == "LISTENING" and "SPEAKING" in states and states[-1] == "WAITING_FOR_INPUT"

    # The reply audio reached the remote track: loud enough, paced, and it says the reply.
    await asyncio.sleep(0.3)  # the tail still in flight
    voiced = client.voiced_times(t0)
    assert len(voiced) * 0.02 > 1.0, f"only {len(voiced)} voiced frames received"
    heard_audio = client.audio(voiced[0] - 0.1)
    assert _rms(heard_audio) > 1000
    assert voiced[-1] - voiced[0] >= len(voiced) * 0.02 * 0.8, "reply audio was not paced in real time"
    heard = await asyncio.to_thread(listen, heard_audio, RATE, reply)
    assert wer(reply, heard) <= 0.3, (reply, heard)
    channel = next(iter(orch.webrtc.peers))
    assert channel.outbound.dropped == 0

    # A typed turn on the data channel; bad messages get an error event and change nothing.
    client.send("not json")
    client.send({"type": "dance"})
    client.send({"type": "text", "text": "hello"})
    await client.wait_for(lambda: _turn_done(client, 2) and len(client.of_type("reply_end")) >= 2, 30)
    assert client.of_type("transcript")[-1]["text"] == "hello"
    assert client.of_type("reply")[-1]["text"] == "You said: hello."
    assert [e["code"] for e in client.of_type("error")] == ["bad_json", "unknown_type"]

    # Hanging up ends the session, the worker session and the peer.
    await client.close()
    await _eventually(
        lambda: not orch.conversations and not orch.webrtc.peers, 5, "the session outlived its peer"
    )
    await _eventually(
        lambda: _worker_sessions(piper_worker) <= sessions_at_start - 1, 5, "the worker session stayed open"
    )
    assert channel.closed and channel.pc.connectionState == "closed"


async def test_interrupt_cuts_the_reply_audio_at_once(orch, client):
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    client.send({"type": "say", "text": LONG_SAY})
    await client.wait_for(lambda: len(client.voiced_times(t0)) > 40, 30)  # the reply is playing
    client.send({"type": "interrupt"})
    t_interrupt = loop.time()
    await client.wait_for(lambda: client.of_type("barge_in"), 5)
    await asyncio.sleep(1.0)
    # How much reply audio still came, not when it arrived: a loaded machine delivers what was
    # already in flight late, but no more of it.
    after_s = len(client.voiced_times(t_interrupt)) * 0.02
    print(f"{after_s * 1000:.0f} ms of voiced reply audio came after the interrupt")
    assert after_s <= 0.3, f"reply audio kept coming: {after_s * 1000:.0f} ms of it after the interrupt"
    assert len(client.frames) and client.frames[-1][0] > t_interrupt + 0.8, (
        "the track stopped instead of going silent"
    )
    assert [e["state"] for e in client.of_type("state")][-1] == "WAITING_FOR_INPUT"
    assert not client.of_type("reply_end")


async def test_bad_offers_and_peer_limit(piper_worker):
    orch = await _start(piper_worker, webrtc={"max_peers": 1})
    url = f"http://127.0.0.1:{orch.port}/webrtc/offer"
    try:
        async with aiohttp.ClientSession() as http:
            for body in (
                b"{not json",
                b"[]",
                json.dumps({"type": "offer"}).encode(),
                json.dumps({"sdp": "v=0", "type": "answer"}).encode(),
                json.dumps({"sdp": "garbage", "type": "offer"}).encode(),
            ):
                async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    assert r.status == 400, (body, r.status)
                    assert (await r.json())["error"]
            assert not orch.webrtc.peers

            first = RtcClient(f"http://127.0.0.1:{orch.port}")
            await first.connect()
            await first.wait_for(lambda: first.of_type("ready"), 15)
            second = RtcClient(f"http://127.0.0.1:{orch.port}")
            await second.pc.setLocalDescription(await second.pc.createOffer())
            async with http.post(url, json={"sdp": second.pc.localDescription.sdp, "type": "offer"}) as r:
                assert r.status == 503 and "maximum" in (await r.json())["error"]
            await second.close()
            await first.close()
            await _eventually(
                lambda: not orch.webrtc.peers and not orch.conversations, 5, "the peer was not released"
            )
    finally:
        await orch.stop()


def test_uplink_frames_of_any_shape_become_mono_48k_pcm16():
    from appliance.transport.webrtc_audio import Downmixer

    down = Downmixer()
    t = np.arange(960) / RATE
    left = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    stereo = AudioFrame.from_ndarray(
        np.stack([left, left]).T.reshape(1, -1).copy(), format="s16", layout="stereo"
    )
    stereo.sample_rate = RATE
    assert np.array_equal(np.frombuffer(down(stereo), "<i2"), left)  # what aiortc's Opus decoder gives
    planar = AudioFrame.from_ndarray(np.stack([left, np.zeros_like(left)]), format="s16p", layout="stereo")
    planar.sample_rate = RATE
    assert np.abs(np.frombuffer(down(planar), "<i2") - left // 2).max() <= 1
    out = b""
    for i in range(10):  # 10 ms float frames at 16 kHz → resampled
        f = AudioFrame.from_ndarray(np.full((1, 160), 0.25, np.float32), format="flt", layout="mono")
        f.sample_rate, f.pts = 16000, i * 160
        out += down(f)
    samples = np.frombuffer(out, "<i2")
    assert 0.08 * 48000 <= len(samples) <= 0.1 * 48000 and abs(int(samples[-200:].mean()) - 8192) < 200


async def test_downlink_track_paces_20ms_frames_and_holds_at_most_the_lead(monkeypatch):
    from appliance.transport.webrtc_audio import OutboundAudio

    track = OutboundAudio(max_frames=6)
    for i in range(10):
        track.push(bytes([i + 1]) * 1920)
    assert track.dropped == 4  # only the newest 120 ms are kept
    # Real time, seen from the track: it never hands a frame out before its slot, and the waits it
    # asks for add up to no more than the schedule (how late the loop wakes it is the machine's).
    waits, sleep = [], asyncio.sleep
    monkeypatch.setattr(asyncio, "sleep", lambda s, *a: (waits.append(s), sleep(s, *a))[1])
    loop = asyncio.get_running_loop()
    start = loop.time()
    frames, handed_out = [], []
    for _ in range(10):
        frames.append(await track.recv())
        handed_out.append(loop.time() - start)
    assert all(t >= k * 0.02 - 0.002 for k, t in enumerate(handed_out)), handed_out
    assert handed_out[-1] >= 0.17 and sum(waits) <= 0.18 + 1e-6, (handed_out, waits)
    assert [f.pts for f in frames] == [i * 960 for i in range(10)]
    assert all(
        f.samples == 960 and f.sample_rate == RATE and f.format.name == "s16" and f.layout.name == "mono"
        for f in frames
    )
    first = [bytes(f.planes[0])[:1920] for f in frames]
    assert [b[0] for b in first[:6]] == [5, 6, 7, 8, 9, 10] and first[6] == bytes(1920)  # then silence
    track.push(bytes([1]) * 1920)
    assert track.flush() == 1
    track.stop()


def test_ice_servers_setting():
    from appliance.config import ConfigError
    from appliance.transport.webrtc import ice_server

    assert load_settings(OrchestratorSettings, None).webrtc.ice_servers == []  # LAN appliance: no public STUN
    turn = ice_server("turn:user:secret@turn.lan:3478")
    assert (turn.urls, turn.username, turn.credential) == ("turn:turn.lan:3478", "user", "secret")
    assert ice_server("stun:stun.lan:3478").urls == "stun:stun.lan:3478"
    with pytest.raises(ConfigError, match="webrtc.ice_servers"):
        load_settings(OrchestratorSettings, None, webrtc={"ice_servers": ["http://nope"]})


async def test_the_transport_bench_measures_a_webrtc_turn_and_a_barge_in(orch):
    """`bench conversation --transport webrtc`'s person, one trial of each kind: a reply is heard
    after the question's end, and talking over a long reply stops it within the confirm window."""
    from appliance.bench.transports import _barge_in, _voice_turn, _WebRTCPerson

    http = f"http://127.0.0.1:{orch.port}"
    question = piper_speech("What time is it right now?", 16000)
    v2v = await _voice_turn(_WebRTCPerson(http), question)
    assert v2v is not None and 0 < v2v < 10_000, v2v
    barge = await _barge_in(_WebRTCPerson(http), question)
    assert barge is not None and barge < orch.settings.playback.barge_in_confirm_ms, barge
    await _eventually(lambda: not orch.conversations, 10, "the bench's sessions did not end")


async def test_the_microphone_is_decoded_as_soon_as_its_packets_are_in_order():
    """aiortc's audio receiver holds every packet until four more have come (≈ 80 ms of playout
    smoothing nobody here listens to); the appliance's releases a frame once the next packet shows
    it complete, and still waits for a packet that comes late."""
    from aiortc import RTCPeerConnection
    from aiortc.rtp import RtpPacket

    from appliance.transport.webrtc_audio import decode_on_arrival

    pc = RTCPeerConnection()
    try:
        receiver = pc.addTransceiver("audio").receiver
        assert decode_on_arrival(receiver)
        buffer = receiver._RTCRtpReceiver__jitter_buffer

        def packet(n: int) -> RtpPacket:
            p = RtpPacket(payload_type=111, sequence_number=n, timestamp=960 * n, payload=bytes([n]))
            p._data = p.payload  # what the receiver sets (the depacketized payload) before buffering
            return p

        assert buffer.add(packet(1))[1] is None  # complete only once the next one comes
        assert buffer.add(packet(2))[1].data == bytes([1])
        assert buffer.add(packet(4))[1] is None  # 3 is late: nothing after it goes out of order
        assert buffer.add(packet(3))[1].data == bytes([2])
        assert buffer.add(packet(5))[1].data == bytes([3])
    finally:
        await pc.close()
