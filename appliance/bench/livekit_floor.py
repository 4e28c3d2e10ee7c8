"""LiveKit's own one-way audio latency on this machine, the floor under the LiveKit transport's
figures: two rtc participants in one room of the livekit-server under test, neither of them the
appliance. One publishes a 48 kHz microphone track, paced in real time as the agent paces its
reply, silent but for a 100 ms tone every second; the other subscribes through a 48 kHz
``AudioStream`` (as the person's page and the agent do) and stamps the first loud frame of each
tone. One way = that arrival − the moment the tone's first frame was captured. A spoken turn
crosses the server twice (the question in, the reply out), so twice the one-way p50 is the least
the LiveKit transport can add to a voice-to-voice time that the WebSocket transport does not pay."""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import numpy as np

RATE = 48000
FRAME = RATE // 100  # 10 ms, what the WebRTC audio pipeline pulls at a time
TONE_S, EVERY_S = 0.1, 1.0
WARMUP = 2  # tones before these are the jitter buffer settling, not counted
LOUD_RMS = 1000  # the tone is ~7000; decoded Opus silence is ~0


def _token(server, room: str, identity: str) -> str:
    from livekit import api

    grants = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True)
    return (
        api.AccessToken(server.api_key, server.api_secret)
        .with_identity(identity)
        .with_grants(grants)
        .to_jwt()
    )


def _tone() -> np.ndarray:
    t = np.arange(int(TONE_S * RATE)) / RATE
    return (10000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


async def one_way_ms(server, trials: int = 20) -> list[float]:
    """``trials`` one-way latencies (ms) through ``server`` (a running livekit-server with
    ``url``, ``api_key`` and ``api_secret``)."""
    from livekit import rtc

    room = f"floor-{secrets.token_hex(4)}"
    speaker, listener = rtc.Room(), rtc.Room()
    loop = asyncio.get_running_loop()
    arrivals: list[float] = []
    tasks: list[asyncio.Task] = []

    async def record(stream) -> None:
        loud = False
        async for event in stream:
            a = np.frombuffer(event.frame.data, np.int16)
            now_loud = float(np.sqrt(np.mean(a.astype(np.float64) ** 2))) > LOUD_RMS
            if now_loud and not loud:
                arrivals.append(loop.time())
            loud = now_loud

    def on_track(track, _publication, _participant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            tasks.append(asyncio.ensure_future(record(rtc.AudioStream(track, sample_rate=RATE))))

    listener.on("track_subscribed", on_track)
    try:
        await listener.connect(server.url, _token(server, room, "listener"))
        await speaker.connect(server.url, _token(server, room, "speaker"))
        source = rtc.AudioSource(RATE, 1)
        track = rtc.LocalAudioTrack.create_audio_track("tone", source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await speaker.local_participant.publish_track(track, options)
        for _ in range(1000):  # the listener subscribed (10 s at most): tones before it are lost
            if tasks:
                break
            await asyncio.sleep(0.01)
        sent = await _play_tones(source, trials + WARMUP)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for r in (speaker, listener):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(r.disconnect(), 5)
    # Each tone's first arrival after it was sent (and before the next one was).
    out = []
    for i, t in enumerate(sent[WARMUP:], WARMUP):
        nxt = sent[i + 1] if i + 1 < len(sent) else float("inf")
        got = next((a for a in arrivals if t <= a < nxt), None)
        if got is not None:
            out.append((got - t) * 1000)
    return out


async def _play_tones(source, n: int) -> list[float]:
    """Real-time 10 ms frames, a tone every second; when each tone's first frame went in."""
    from livekit import rtc

    loop = asyncio.get_running_loop()
    tone, silence = _tone(), np.zeros(FRAME, np.int16)
    per_tone = int(EVERY_S * RATE) // FRAME
    sent: list[float] = []
    start = loop.time()
    for k in range((n + 1) * per_tone):  # a second of silence after the last tone
        i = k % per_tone
        pcm = tone[i * FRAME : (i + 1) * FRAME] if k < n * per_tone and i * FRAME < len(tone) else silence
        if i == 0 and k < n * per_tone:
            sent.append(loop.time())
        await source.capture_frame(rtc.AudioFrame(pcm.tobytes(), RATE, 1, FRAME))
        await asyncio.sleep(max(0.0, start + (k + 1) * FRAME / RATE - loop.time()))
    return sent
