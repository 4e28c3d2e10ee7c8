"""`appliance bench conversation --transport websocket,webrtc,livekit`: voice-to-voice and barge-in per
transport, in one run against one `appliance run` (the same models, the same clips, the transports
taking turns clip by clip), so the transports' own cost shows as the difference.

All are measured at the person's end the same way: voice-to-voice from the moment the end of the
speech was sent (in real time) to the first reply frame louder than Opus silence; barge-in from the
moment the interrupting speech started to the last reply frame of that loudness before the new
turn's transcript. The WebRTC person is aiortc doing what the page does (its jitter buffer
included); the LiveKit figures include livekit-server's forwarding and the receiving SDK's jitter
buffer, as a LiveKit person hears it; LiveKit's own one-way latency between two plain
participants on the same server is measured in the same run (:mod:`.livekit_floor`), the floor
under them."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
from pathlib import Path

import numpy as np

from appliance.bench.conversation import LONG_REPLY, QUESTIONS, RATE, _speech_bounds, _start_appliance, _Voice
from appliance.bench.stats import summary
from appliance.process import terminate
from appliance.transport.ws_client import WsClient

TRANSPORTS = ("websocket", "webrtc", "livekit")
AUDIBLE_RMS = 50  # louder than decoded Opus silence, quieter than any reply's first syllable
LEAD_S, TAIL_S = 0.5, 2.0  # silence before and after each question, as a microphone sends it


def _rms(pcm: bytes | np.ndarray) -> float:
    a = np.frombuffer(pcm, np.int16) if isinstance(pcm, bytes) else pcm
    return float(np.sqrt(np.mean(a.astype(np.float64) ** 2))) if len(a) else 0.0


def _padded(samples: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [np.zeros(int(LEAD_S * RATE), np.int16), samples, np.zeros(int(TAIL_S * RATE), np.int16)]
    )


def _first_audible_after(frames, t: float) -> float | None:
    return next((ft for ft, f in frames if ft >= t and _rms(f) > AUDIBLE_RMS), None)


def _last_audible_before(frames, t: float) -> float | None:
    heard = [ft for ft, f in frames if ft < t and _rms(f) > AUDIBLE_RMS]
    return heard[-1] if heard else None


class _WebSocketPerson:
    def __init__(self, http: str) -> None:
        self.c = WsClient(http.replace("http://", "ws://", 1) + "/ws")
        self._streams: list[asyncio.Task] = []

    async def open(self) -> None:
        await self.c.connect(RATE)

    @property
    def frames(self):
        return self.c.rx.frames

    def events(self):
        return self.c.rx.events

    async def speak(self, samples: np.ndarray) -> float:
        """Starts sending; returns when (loop time) the first sample goes out."""
        loop = asyncio.get_running_loop()
        self._streams.append(asyncio.ensure_future(self.c.stream(samples, RATE)))
        return loop.time()

    async def say(self, text: str) -> None:
        await self.c.send_json({"type": "say", "text": text})

    async def close(self) -> None:
        for task in self._streams:
            task.cancel()
        await asyncio.gather(*self._streams, return_exceptions=True)
        await self.c.close()


class _LiveKitPerson:
    def __init__(self, http: str) -> None:
        from appliance.bench.livekit_client import Participant

        self.http, self.p = http, Participant(mic_rate=RATE, mic_channels=1)

    async def open(self) -> None:
        await self.p.join(self.http)
        await self.p.wait_for(lambda: self.p.of_type("ready"), 30)

    @property
    def frames(self):
        return self.p.frames

    def events(self):
        return self.p.events

    async def speak(self, samples: np.ndarray) -> float:
        self.p.play(samples)
        return asyncio.get_running_loop().time()

    async def say(self, text: str) -> None:
        await self.p.send({"type": "say", "text": text})

    async def close(self) -> None:
        await self.p.leave()


class _WebRTCPerson:
    """What the page does over WebRTC (aiortc): a 48 kHz microphone, the reply track, the events."""

    def __init__(self, http: str) -> None:
        from appliance.bench.webrtc_client import RtcClient

        self.c = RtcClient(http)

    async def open(self) -> None:
        await self.c.connect()
        await self.c.wait_for(lambda: self.c.of_type("ready"), 30)

    @property
    def frames(self):
        return self.c.frames

    def events(self):
        return self.c.events

    async def speak(self, samples: np.ndarray) -> float:
        from appliance.audio import resample
        from appliance.bench.webrtc_client import RATE as MIC_RATE

        wide = resample(samples.astype(np.float32) / 32768, RATE, MIC_RATE)
        self.c.mic.play((np.clip(wide, -1, 1) * 32767).astype(np.int16))
        return asyncio.get_running_loop().time()

    async def say(self, text: str) -> None:
        self.c.send({"type": "say", "text": text})

    async def close(self) -> None:
        await self.c.close()


async def _wait(predicate, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.01)


def _of_type(person, kind: str) -> list[tuple[float, dict]]:
    return [(t, e) for t, e in person.events() if e.get("type") == kind]


async def _voice_turn(person, samples: np.ndarray) -> float | None:
    await person.open()
    try:
        _, end = _speech_bounds(samples)
        t0 = await person.speak(_padded(samples))
        await _wait(lambda: _of_type(person, "metrics") or _of_type(person, "error"), 30)
        await asyncio.sleep(0.3)
        first = _first_audible_after(person.frames, t0 + LEAD_S + end)
        return (first - (t0 + LEAD_S + end)) * 1000 if first else None
    finally:
        await person.close()


async def _barge_in(person, samples: np.ndarray) -> float | None:
    await person.open()
    try:
        start, _ = _speech_bounds(samples)
        await person.say(LONG_REPLY)
        await _wait(lambda: sum(_rms(f) > AUDIBLE_RMS for _, f in person.frames) > 50, 30)
        t0 = await person.speak(np.concatenate([samples, np.zeros(int(TAIL_S * RATE), np.int16)]))
        await _wait(lambda: _of_type(person, "transcript"), 30)
        new_turn_at = _of_type(person, "transcript")[0][0]
        last = _last_audible_before(person.frames, new_turn_at)
        return (last - (t0 + start)) * 1000 if last else None
    finally:
        await person.close()


def find_livekit_server() -> str | None:
    """$LIVEKIT_SERVER, livekit-server on PATH, or the newest build in the cache
    (scripts/build-livekit-server.sh)."""
    if os.environ.get("LIVEKIT_SERVER"):
        return os.environ["LIVEKIT_SERVER"]
    caches = [os.environ.get("APPLIANCE_LIVEKIT_CACHE", ""), "/var/cache/appliance-livekit"]
    caches.append(str(Path.home() / ".cache/appliance-livekit"))
    found = [p for c in caches if c for p in glob.glob(f"{c}/v*/livekit-server")]
    return shutil.which("livekit-server") or (max(found) if found else None)


async def run_bench(transports: list[str], turns: int = 20, port: int = 18080) -> dict:
    turns = max(turns, 20)
    bad = [t for t in transports if t not in TRANSPORTS]
    if bad:
        raise ValueError(
            f"unknown transport {', '.join(bad)}; this benchmark compares {', '.join(TRANSPORTS)}"
        )
    voice = _Voice()
    clips = [voice.speech(QUESTIONS[i % len(QUESTIONS)])[0] for i in range(turns)]
    # The echo responder: an LLM's time would drown the transports' difference in its own spread.
    server, env = None, {"APPLIANCE_RESPONDER__KIND": "echo"}
    if "livekit" in transports:
        from appliance.bench.livekit_server import LiveKitServer

        binary = find_livekit_server()
        if binary is None:
            raise FileNotFoundError(
                "no livekit-server: run scripts/build-livekit-server.sh or set LIVEKIT_SERVER"
            )
        server = LiveKitServer(binary)
        env |= {
            "APPLIANCE_LIVEKIT__ENABLED": "true",
            "APPLIANCE_LIVEKIT__URL": server.url,
            "APPLIANCE_LIVEKIT__API_KEY": server.api_key,
            "APPLIANCE_LIVEKIT__API_SECRET": server.api_secret,
        }
    proc, floor = None, {}
    try:
        proc = _start_appliance(port, env)
        http = f"http://127.0.0.1:{port}"
        people = {"websocket": _WebSocketPerson, "webrtc": _WebRTCPerson, "livekit": _LiveKitPerson}
        got = {t: {"v2v": [], "barge": [], "missed": 0} for t in transports}
        # Interleaved (each clip on every transport in turn), so a shared machine's changing load
        # falls on all of them alike.
        for samples in clips:
            for transport in transports:
                for trial, key in ((_voice_turn, "v2v"), (_barge_in, "barge")):
                    try:
                        ms = await trial(people[transport](http), samples)
                    except TimeoutError:
                        ms = None
                    if ms is None:
                        got[transport]["missed"] += 1
                    else:
                        got[transport][key].append(ms)
        results = {
            t: {
                "voice_to_voice_ms": summary(g["v2v"]),
                "barge_in_ms": summary(g["barge"]),
                "missed_trials": g["missed"],
            }
            for t, g in got.items()
        }
        if server:
            from appliance.bench.livekit_floor import one_way_ms

            floor = summary(await one_way_ms(server, turns))
    finally:
        if proc:
            terminate(proc, 30)
        if server:
            server.close()
    out = {
        "benchmark": "conversation-transports",
        "turns": turns,
        "responder": "echo",
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
    }
    out["transports"] = results
    if server and floor.get("n"):
        # LiveKit's own audio path, two plain participants on the same server: a turn crosses it
        # twice (the question in, the reply out), and so does a barge-in (the speech in, the last
        # reply frame out).
        out["reference"] = {
            "livekit_one_way_ms": floor,
            "livekit_round_trip_floor_ms": round(2 * floor["p50"], 1),
        }
    if {"websocket", "webrtc"} <= set(results):
        ws, rtc = results["websocket"], results["webrtc"]
        if ws["voice_to_voice_ms"].get("n") and rtc["voice_to_voice_ms"].get("n"):
            out["webrtc_minus_websocket_p50_ms"] = round(
                rtc["voice_to_voice_ms"]["p50"] - ws["voice_to_voice_ms"]["p50"], 1
            )
    if {"websocket", "livekit"} <= set(results):
        ws, lk = results["websocket"], results["livekit"]
        if ws["voice_to_voice_ms"].get("n") and lk["voice_to_voice_ms"].get("n"):
            delta = round(lk["voice_to_voice_ms"]["p50"] - ws["voice_to_voice_ms"]["p50"], 1)
            out["livekit_minus_websocket_p50_ms"] = delta
            out["targets"] = {
                "livekit_p50_within_60ms_of_websocket": delta <= 60,
                "livekit_barge_in_p95_le_150ms": bool(lk["barge_in_ms"].get("n"))
                and lk["barge_in_ms"]["p95"] <= 150,
            }
            if "reference" in out:
                out["livekit_minus_websocket_over_round_trip_floor_ms"] = round(
                    delta - out["reference"]["livekit_round_trip_floor_ms"], 1
                )
    return out
