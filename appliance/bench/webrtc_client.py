"""The person's side of a WebRTC session (the benchmark's and the tests'), on aiortc: what the page
does — one ``sendrecv`` audio transceiver whose microphone plays queued 48 kHz speech in real time
(silence otherwise), a data channel ``"events"``, and one ``POST /webrtc/offer`` — recording the
reply audio and the events with their arrival times."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import numpy as np
from aiortc import AudioStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from appliance.bench.heard import RATE, VOICED_RMS, Heard, rms

__all__ = ["RATE", "VOICED_RMS", "Microphone", "RtcClient", "rms"]


class Microphone(AudioStreamTrack):
    """Plays queued 48 kHz speech in real time, then silence (a browser mic after replaceTrack).

    Its frames are stereo with the voice in both channels, as a browser's Opus carries a mono
    microphone: given mono frames, aiortc's encoder would upmix them with a −3 dB pan law, and the
    appliance would hear the person 3 dB quieter than they spoke."""

    def __init__(self) -> None:
        super().__init__()
        self._pending = np.zeros(0, np.int16)
        self._pts = 0
        self._start: float | None = None

    def play(self, samples: np.ndarray) -> float:
        """Queue speech; returns how long it lasts."""
        self._pending = np.concatenate([self._pending, samples.astype(np.int16)])
        return len(samples) / RATE

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        else:
            self._pts += 960
            await asyncio.sleep(max(0.0, self._start + self._pts / RATE - loop.time()))
        chunk, self._pending = self._pending[:960], self._pending[960:]
        frame = AudioFrame(format="s16", layout="stereo", samples=960)
        mono = np.pad(chunk, (0, 960 - len(chunk))).astype("<i2")
        frame.planes[0].update(np.repeat(mono, 2).tobytes())
        frame.pts, frame.sample_rate = self._pts, RATE
        return frame


class RtcClient(Heard):
    """The browser's side: what the page does, with aiortc."""

    def __init__(self, http: str) -> None:
        super().__init__()
        self.http = http
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.mic = Microphone()
        self.pc.addTransceiver(self.mic, direction="sendrecv")
        self.dc = self.pc.createDataChannel("events")
        self._reader: asyncio.Task | None = None
        self.dc.on(
            "message", lambda m: self.events.append((asyncio.get_running_loop().time(), json.loads(m)))
        )
        self.pc.on("track", self._on_track)

    def _on_track(self, track) -> None:
        if track.kind == "audio":
            self._reader = asyncio.ensure_future(self._read(track))

    async def _read(self, track) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                frame = await track.recv()
                a = frame.to_ndarray().reshape(-1, len(frame.layout.channels)).astype(np.int32)
                assert frame.sample_rate == RATE
                self.frames.append((loop.time(), a.mean(axis=1).astype(np.int16)))
        except MediaStreamError:
            pass

    async def connect(self) -> dict:
        await self.pc.setLocalDescription(await self.pc.createOffer())  # gathers all candidates
        offer = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        async with aiohttp.ClientSession() as http, http.post(f"{self.http}/webrtc/offer", json=offer) as r:
            assert r.status == 200, await r.text()
            answer = await r.json()
        assert answer["type"] == "answer"
        self.answer = answer["sdp"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        return answer

    def send(self, obj: dict | str) -> None:
        self.dc.send(obj if isinstance(obj, str) else json.dumps(obj))

    async def close(self) -> None:
        await self.pc.close()
        if self._reader:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
