"""Voice-to-voice in the browser over WebRTC and over WebSocket, for the same clips in one run,
measured at the client: from the end of speech in the fake microphone's audio to the moment the
page starts playing the reply (its playback timeline). Written to .artifacts/e2e/latency.json
for the README; no timing is asserted (shared machines are noisy)."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
from e2e_helpers import chromium, feed_mic, save_screenshot_path
from test_browser import RATE, events, open_page, recorded_audio, wait_event, wait_quiet
from voices import piper_speech

pytestmark = pytest.mark.e2e
CLIPS = [
    "What time is it?",
    "Turn on the kitchen lights.",
    "How far away is the moon?",
    "Set a timer for five minutes.",
    "Play some quiet music.",
]


def _clip(text: str) -> tuple[bytes, float]:
    """The clip as PCM16, and where its speech ends (seconds into it)."""
    speech = piper_speech(text, RATE)
    loud = np.flatnonzero(np.abs(speech) > 32768 * 10 ** (-40 / 20))
    return speech.tobytes(), (loud[-1] + 1) / RATE


async def _measure(caddy, tmp_path, transport: str) -> dict:
    clips = [_clip(text) for text in CLIPS]
    async with chromium(tmp_path / f"profile-{transport}", fed_mic=True) as context:
        page, _ = await open_page(context, caddy, transport)
        await page.click("[data-testid=start]")
        await wait_event(page, "ready", 30)
        await page.wait_for_function("() => window.applianceTest.micStartedAt !== null", timeout=30000)
        ends = []
        # Each clip is spoken once the reply to the one before has been heard to its end, however
        # long that took.
        for i, (pcm, end_s) in enumerate(clips):
            await wait_quiet(page)
            started = await feed_mic(page, pcm, RATE)
            ends.append(started + end_s * 1000)  # when the end of speech left the microphone
            await wait_event(page, "reply_end", 90, count=i + 1)
        audio = np.abs((await recorded_audio(page)).astype(np.float64) / 32768)
        origin = await page.evaluate("() => window.applianceTest.recordingOriginMs")
        server = [e["voice_to_voice_ms"] for e in await events(page) if e.get("type") == "metrics"]
    client = []
    for end_ms in ends:
        start = max(0, int((end_ms - origin) * 48))  # the timeline may begin after it (WebSocket)
        loud = np.flatnonzero(audio[start:] > 0.01)
        if len(loud):
            client.append(round((start + loud[0]) / 48 + origin - end_ms, 1))
    return {"client_voice_to_voice_ms": client, "server_voice_to_voice_ms": server}


async def test_voice_to_voice_webrtc_vs_websocket(caddy, tmp_path):
    result = {t: await _measure(caddy, tmp_path, t) for t in ("websocket", "webrtc")}
    for measured in result.values():
        assert len(measured["client_voice_to_voice_ms"]) == len(CLIPS), result
        values = measured["client_voice_to_voice_ms"]
        measured["client_p50_ms"] = statistics.median(values)
    result["webrtc_minus_websocket_p50_ms"] = round(
        result["webrtc"]["client_p50_ms"] - result["websocket"]["client_p50_ms"], 1
    )
    save_screenshot_path("latency.json").write_text(json.dumps(result, indent=2))
