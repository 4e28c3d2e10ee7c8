"""Voice-to-voice in the browser over WebRTC and over WebSocket, for the same clips in one run,
measured at the client: from the end of speech in the fake microphone's audio to the moment the
page starts playing the reply (its playback timeline). Written to .artifacts/e2e/latency.json
for the README; no timing is asserted (shared machines are noisy)."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

from appliance.audio.wavio import write_wav
from e2e_helpers import chromium, save_screenshot_path
from test_browser import RATE, events, open_page, recorded_audio, wait_event
from voices import piper_speech

pytestmark = pytest.mark.e2e
CLIPS = ["What time is it?", "Turn on the kitchen lights.", "How far away is the moon?",
         "Set a timer for five minutes.", "Play some quiet music."]
LEAD_IN_S, GAP_S = 1.5, 5.0


def _mic(tmp_path) -> tuple[str, list[float]]:
    """The clips with gaps, and where each clip's speech ends (seconds into the file)."""
    pieces, ends, t = [np.zeros(int(LEAD_IN_S * RATE), np.int16)], [], LEAD_IN_S
    for text in CLIPS:
        speech = piper_speech(text, RATE)
        loud = np.flatnonzero(np.abs(speech) > 32768 * 10 ** (-40 / 20))
        ends.append(t + (loud[-1] + 1) / RATE)
        pieces += [speech, np.zeros(int(GAP_S * RATE), np.int16)]
        t += len(speech) / RATE + GAP_S
    path = tmp_path / "clips.wav"
    write_wav(path, np.concatenate(pieces).tobytes(), RATE)
    return path, ends


async def _measure(caddy, tmp_path, transport: str) -> dict:
    mic, ends = _mic(tmp_path)
    async with chromium(tmp_path / f"profile-{transport}", mic) as context:
        page, _ = await open_page(context, caddy, transport)
        await page.click("[data-testid=start]")
        await wait_event(page, "reply_end", 60, count=len(CLIPS))
        audio = np.abs((await recorded_audio(page)).astype(np.float64) / 32768)
        origin = await page.evaluate("() => window.applianceTest.recordingOriginMs")
        mic_start = await page.evaluate("() => window.applianceTest.micStartedAt")
        server = [e["voice_to_voice_ms"] for e in await events(page) if e.get("type") == "metrics"]
    client = []
    for end_s in ends:
        end_ms = mic_start + end_s * 1000  # when the end of speech left the fake microphone
        start = max(0, int((end_ms - origin) * 48))
        loud = np.flatnonzero(audio[start:] > 0.01)
        if len(loud):
            client.append(round(loud[0] / 48, 1))
    return {"client_voice_to_voice_ms": client, "server_voice_to_voice_ms": server}


async def test_voice_to_voice_webrtc_vs_websocket(caddy, tmp_path):
    result = {t: await _measure(caddy, tmp_path, t) for t in ("websocket", "webrtc")}
    for t in result:
        assert len(result[t]["client_voice_to_voice_ms"]) == len(CLIPS), result
        values = result[t]["client_voice_to_voice_ms"]
        result[t]["client_p50_ms"] = statistics.median(values)
    result["webrtc_minus_websocket_p50_ms"] = round(
        result["webrtc"]["client_p50_ms"] - result["websocket"]["client_p50_ms"], 1
    )
    save_screenshot_path("latency.json").write_text(json.dumps(result, indent=2))
