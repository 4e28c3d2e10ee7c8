"""The person's side of a LiveKit room (the benchmark's and the tests'), on the ``livekit`` rtc SDK: it asks the appliance for a
room token, joins, publishes a microphone (16 kHz stereo by default, so the agent has to resample and
down-mix) that plays queued speech in real time and silence otherwise, and records the agent's
audio track and the events on the data topic."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import numpy as np
from livekit import rtc

from appliance.bench.heard import RATE, VOICED_RMS, Heard, rms

__all__ = ["RATE", "VOICED_RMS", "Participant", "rms"]

TOPIC = "events"
LEAVE_TIMEOUT_S = 5.0  # the SDK's disconnect waits on its native side, which a dying room may never answer


class Participant(Heard):
    def __init__(self, mic_rate: int = 16000, mic_channels: int = 2) -> None:
        super().__init__()
        self.mic_rate, self.mic_channels = mic_rate, mic_channels
        self.room = rtc.Room()
        self.info: dict = {}
        self._pending = np.zeros(0, np.int16)
        self._tasks: list[asyncio.Task] = []
        self.room.on("data_received", self._on_data)
        self.room.on("track_subscribed", self._on_track)

    async def token(
        self, http_base: str, body: dict | None = None, *, ssl=None, access_token: str | None = None
    ) -> dict:
        """A room from the appliance (through Caddy: ``ssl`` trusts its CA, ``access_token`` the access secret)."""
        headers = {"Authorization": f"Bearer {access_token}"} if access_token else {}
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{http_base}/livekit/token", json=body or {}, ssl=ssl, headers=headers) as r,
        ):
            assert r.status == 200, await r.text()
            return await r.json()

    async def join(self, http_base: str, body: dict | None = None, **auth) -> dict:
        self.info = await self.token(http_base, body, **auth)
        await self.room.connect(self.info["url"], self.info["token"])
        self.source = rtc.AudioSource(self.mic_rate, self.mic_channels)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", self.source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await self.room.local_participant.publish_track(track, options)
        self._tasks.append(asyncio.ensure_future(self._play()))
        return self.info

    def _on_data(self, packet: rtc.DataPacket) -> None:
        if packet.topic == TOPIC:
            self.events.append((asyncio.get_running_loop().time(), json.loads(packet.data)))

    def _on_track(self, track: rtc.Track, publication, participant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            self._tasks.append(asyncio.ensure_future(self._record(rtc.AudioStream(track, sample_rate=RATE))))

    async def _record(self, stream: rtc.AudioStream) -> None:
        loop = asyncio.get_running_loop()
        async for event in stream:
            self.frames.append((loop.time(), np.frombuffer(event.frame.data, np.int16).copy()))

    def play(self, samples: np.ndarray) -> float:
        """Queue speech at the microphone's rate (mono); returns how long it lasts."""
        self._pending = np.concatenate([self._pending, samples.astype(np.int16)])
        return len(samples) / self.mic_rate

    async def _play(self) -> None:
        loop = asyncio.get_running_loop()
        n = self.mic_rate // 50  # 20 ms
        start, sent = loop.time(), 0
        while True:
            chunk, self._pending = self._pending[:n], self._pending[n:]
            mono = np.pad(chunk, (0, n - len(chunk))).astype(np.int16)
            pcm = np.repeat(mono, self.mic_channels)  # interleaved: the same voice in every channel
            await self.source.capture_frame(
                rtc.AudioFrame(pcm.tobytes(), self.mic_rate, self.mic_channels, n)
            )
            sent += n
            await asyncio.sleep(max(0.0, start + sent / self.mic_rate - loop.time()))

    async def send(self, obj: dict | str) -> None:
        data = obj if isinstance(obj, str) else json.dumps(obj)
        await self.room.local_participant.publish_data(data, reliable=True, topic=TOPIC)

    async def leave(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.room.disconnect(), LEAVE_TIMEOUT_S)
