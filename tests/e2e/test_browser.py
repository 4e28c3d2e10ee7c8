"""The page in Debian's Chromium, over HTTPS through Caddy, for both transports: a spoken turn is
transcribed, answered and heard; barge-in from the page stops the reply; reload and an
orchestrator restart recover by reconnecting."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import numpy as np
import pytest
from e2e_helpers import chromium, feed_mic, save_screenshot_path
from speech import listen, wer
from voices import piper_speech

from appliance.audio.wavio import write_wav

pytestmark = pytest.mark.e2e
RATE = 16000
QUESTION = "What is the weather like in Paris today?"


def mic_file(tmp_path, *parts: tuple[str | None, float]) -> str:
    """A fake-microphone WAV: each part is (text or None for silence, seconds of silence after)."""
    pieces = [np.zeros(int(1.5 * RATE), np.int16)]  # the page needs a moment to connect
    for text, gap in parts:
        if text:
            pieces.append(piper_speech(text, RATE))
        pieces.append(np.zeros(int(gap * RATE), np.int16))
    path = tmp_path / "mic.wav"
    write_wav(path, np.concatenate(pieces).tobytes(), RATE)
    return path


async def open_page(context, caddy, transport: str):
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await pair(page, caddy)
    await page.goto(f"{caddy.url}/?test=1&transport={transport}")
    return page, errors


async def pair(page, caddy) -> None:
    """Open the pairing link, as a phone does from the QR code: the page sends the secret, and the
    browser keeps the cookie and lands on the appliance's page."""
    await page.goto(f"{caddy.url}/trust#secret={caddy.secret}")
    await page.wait_for_url(f"{caddy.url}/", timeout=30_000)


async def events(page) -> list[dict]:
    return await page.evaluate("() => (window.applianceTest.events || []).map(e => e.data ?? e)")


async def wait_event(page, kind: str, timeout: float = 30, count: int = 1) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in await events(page) if e.get("type") == kind]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no {kind!r} event in {timeout}s; got {[e.get('type') for e in await events(page)]}")


async def recorded_audio(page) -> np.ndarray:
    data = await page.evaluate("""async () => {
        const s = await window.applianceTest.recordedSamples();
        const f = s instanceof Float32Array ? s : new Float32Array(s);
        const i16 = new Int16Array(f.length);
        for (let i = 0; i < f.length; i++) i16[i] = Math.max(-32768, Math.min(32767, Math.round(f[i] * 32767)));
        let bin = ''; const bytes = new Uint8Array(i16.buffer);
        for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
        return btoa(bin);
    }""")
    return np.frombuffer(base64.b64decode(data), dtype="<i2")


@pytest.mark.parametrize("transport", ["websocket", "webrtc"])
async def test_a_spoken_turn_in_the_browser(caddy, tmp_path, transport):
    mic = mic_file(tmp_path, (QUESTION, 6.0))
    async with chromium(tmp_path / "profile", mic) as context:
        page, errors = await open_page(context, caddy, transport)
        t0 = time.monotonic()
        await page.click("[data-testid=start]")
        await wait_event(page, "ready", 30)
        ready_s = time.monotonic() - t0
        await wait_event(page, "reply_end", 90)
        transcript = await page.inner_text("[data-testid=transcript]")
        reply = await page.inner_text("[data-testid=reply]")
        assert wer(QUESTION, transcript) <= 0.2, transcript
        assert "weather" in reply.lower(), reply
        await wait_event(page, "metrics", 10)
        await asyncio.sleep(0.5)
        metrics = await page.inner_text("[data-testid=metrics]")
        assert "ms" in metrics
        audio = await recorded_audio(page)
        assert len(audio) > 48000 * 0.5, "no reply audio was played"
        assert np.sqrt(np.mean((audio.astype(np.float64) / 32768) ** 2)) > 0.01, "the reply audio is silent"
        spoken = " ".join(e["text"] for e in await events(page) if e.get("type") == "reply")
        heard = listen(audio, 48000, spoken)
        assert wer(spoken, heard) <= 0.35, (spoken, heard)
        await page.screenshot(
            path=str(save_screenshot_path(f"page-after-turn-{transport}.png")), full_page=True
        )
        assert errors == []
        metrics_event = (await wait_event(page, "metrics", 5))[-1]
        save_screenshot_path(f"latency-{transport}.json").write_text(
            json.dumps(
                {"transport": transport, "click_to_ready_s": round(ready_s, 3), **metrics_event}, indent=2
            )
        )


LONG_QUESTION = (
    "Tell me about the lighthouse keeper who lived alone on a small island far away from the coast"
)


async def audible_seconds(page) -> float:
    """Seconds of reply audio the page has played so far (20 ms windows above -40 dBFS RMS), not
    counting what is scheduled but not yet due."""
    return await page.evaluate("""async () => {
        const t = window.applianceTest;
        if (t.recordingOriginMs === null) return 0;
        const s = await t.recordedSamples();
        const due = Math.min(s.length, Math.floor((performance.now() - t.recordingOriginMs) * 48));
        let loud = 0;
        for (let i = 0; i + 960 <= due; i += 960) {
            let sum = 0;
            for (let j = i; j < i + 960; j++) sum += s[j] * s[j];
            if (sum / 960 > 1e-4) loud++;
        }
        return loud * 0.02;
    }""")


async def wait_quiet(page, ms: float = 500, timeout: float = 30) -> None:
    """Wait until the page has played nothing audible for the last `ms` (a reply's tail included,
    which on WebRTC can trail its reply_end by a jitter buffer's worth)."""
    await page.wait_for_function(
        """async (ms) => {
        const t = window.applianceTest;
        if (t.recordingOriginMs === null) return true;
        const s = await t.recordedSamples();
        const due = Math.floor((performance.now() - t.recordingOriginMs) * 48);
        for (let i = Math.max(0, due - ms * 48); i < Math.min(due, s.length); i++) if (Math.abs(s[i]) > 0.01) return false;
        return true;
    }""",
        arg=ms,
        timeout=timeout * 1000,
        polling=100,
    )


async def speaking_for(page, seconds: float, timeout: float) -> None:
    """Wait until the server is SPEAKING and the page has played `seconds` of the reply."""
    deadline = time.monotonic() + timeout
    while True:
        states = [e["state"] for e in await events(page) if e.get("type") == "state"]
        heard = await audible_seconds(page)
        if states and states[-1] == "SPEAKING" and heard >= seconds:
            return
        assert time.monotonic() < deadline, (
            f"the reply was not heard for {seconds}s in {timeout}s (heard {heard}s); got {await events(page)}"
        )
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("transport", ["websocket", "webrtc"])
async def test_barge_in_from_the_page_stops_the_reply(caddy, tmp_path, transport):
    # The echo reply to the long question lasts ~6 s. The second question is spoken only once the
    # page has played over a second of it (however long the first turn took), so it lands mid-reply.
    question, interjection = (
        piper_speech(text, RATE).tobytes() for text in (LONG_QUESTION, "What time is it?")
    )
    async with chromium(tmp_path / "profile", fed_mic=True) as context:
        page, errors = await open_page(context, caddy, transport)
        await page.click("[data-testid=start]")
        await wait_event(page, "ready", 30)
        await page.wait_for_function("() => window.applianceTest.micStartedAt !== null", timeout=30000)
        await feed_mic(page, question, RATE)
        await speaking_for(page, 1.5, timeout=90)
        await feed_mic(page, interjection, RATE)
        await wait_event(page, "barge_in", 30)
        deadline = time.monotonic() + 90
        while (
            len(finals := [e for e in await events(page) if e.get("type") == "transcript" and e.get("final")])
            < 2
        ):
            assert time.monotonic() < deadline, "the second turn was not transcribed"
            await asyncio.sleep(0.1)
        assert wer("what time is it", finals[-1]["text"]) <= 0.25, finals
        await wait_event(page, "reply_end", 90)
        replies = [e["text"] for e in await events(page) if e.get("type") == "reply"]
        assert any("time" in r.lower() for r in replies), replies
        # The page's recording is a timeline of what it played: loud before the barge-in, and
        # silent from ~300 ms after it until the answer to the new question starts. "After it" is
        # as the page hears it: the barge-in event and the audio take different paths (WebRTC's
        # jitter buffer grows on a loaded machine), so the delay from the reply's SPEAKING event to
        # its first audible sample, measured on this page, shifts both windows.
        audio = (await recorded_audio(page)).astype(np.float64) / 32768
        origin = await page.evaluate("() => window.applianceTest.recordingOriginMs")
        seen = await events(page)
        barge_t = next(e["t"] for e in seen if e.get("type") == "barge_in")
        speaking_t = next(e["t"] for e in seen if e.get("type") == "state" and e["state"] == "SPEAKING")
        first = int((speaking_t - origin) * 48)
        loud = np.flatnonzero(np.abs(audio[max(first, 0) :]) > 0.02)
        assert len(loud), "the first reply was never heard"
        lag = (max(first, 0) + loud[0]) / 48 + origin - speaking_t

        def rms(from_ms: float, to_ms: float) -> float:
            a, b = (int((barge_t - origin + lag + ms) * 48) for ms in (from_ms, to_ms))
            return float(np.sqrt(np.mean(audio[max(a, 0) : b] ** 2))) if b > a else 0.0

        profile = [round(rms(ms, ms + 100), 3) for ms in range(-1000, 2000, 100)]
        assert rms(-1000, 0) > 0.02, (
            f"the first reply was not playing before the barge-in: {lag=:.0f} {profile}"
        )
        assert rms(300, 900) < 0.005, f"reply audio kept playing after the barge-in: {lag=:.0f} {profile}"
        states = [e["state"] for e in await events(page) if e.get("type") == "state"]
        assert "BARGED_IN" in states
        assert errors == []


async def test_reload_reconnects(caddy, tmp_path):
    async with chromium(tmp_path / "profile", silent_mic(tmp_path)) as context:
        page, errors = await open_page(context, caddy, "websocket")
        t0 = time.monotonic()
        await page.click("[data-testid=start]")
        await wait_event(page, "ready", 30)
        first_ready_s = time.monotonic() - t0
        await page.reload()
        await page.click("[data-testid=start]")
        ready = await wait_event(page, "ready", 30)
        await page.evaluate("() => window.applianceTest.sendText('still there')")
        await wait_event(page, "reply_end", 90)
        assert ready and errors == []
        save_screenshot_path("timings-reload.json").write_text(
            json.dumps({"click_to_ready_s": first_ready_s})
        )


def silent_mic(tmp_path):
    path = tmp_path / "silence.wav"
    write_wav(path, np.zeros(RATE * 30, np.int16).tobytes(), RATE)
    return path


@pytest.mark.parametrize("transport", ["websocket", "webrtc"])
async def test_orchestrator_restart_is_survived_by_reconnecting(piper_worker, tmp_path, transport):
    from e2e_helpers import CaddyProcess
    from services import OrchestratorProcess

    orch = OrchestratorProcess([piper_worker.address])
    orch.wait_ready()
    proxy = CaddyProcess(f"127.0.0.1:{orch.port}", tmp_path)
    proxy.secret = orch.secret
    proxy.wait_ready()
    try:
        async with chromium(tmp_path / "profile", silent_mic(tmp_path)) as context:
            page, _errors = await open_page(context, proxy, transport)
            await page.click("[data-testid=start]")
            await wait_event(page, "ready", 30)
            orch.stop()
            await page.wait_for_function("() => !window.applianceTest.connected", timeout=30000)
            orch = OrchestratorProcess([piper_worker.address], port=orch.port, secret_file=orch.secret_file)
            orch.wait_ready()
            await wait_event(page, "ready", 60, count=2)
            await page.evaluate("() => window.applianceTest.sendText('back again')")
            await wait_event(page, "reply_end", 90)
            replies = [e["text"] for e in await events(page) if e.get("type") == "reply"]
            assert any("back again" in r.lower() for r in replies), replies
    finally:
        proxy.stop()
        orch.stop()


async def test_an_unpaired_browser_is_sent_to_pair_and_a_wrong_secret_is_refused(caddy, tmp_path):
    async with chromium(tmp_path / "profile") as context:
        page = await context.new_page()
        await page.goto(f"{caddy.url}/")
        assert page.url == f"{caddy.url}/trust"
        await page.fill('[data-testid="pair-form"] input[name="secret"]', "aaaa-bbbb-cccc-dddd-eeee")
        await page.click('[data-testid="pair-form"] button')
        assert "wrong" in await page.text_content('[data-testid="pair-error"]')
        await page.fill('[data-testid="pair-form"] input[name="secret"]', caddy.secret)
        await page.click('[data-testid="pair-form"] button')
        await page.wait_for_url(f"{caddy.url}/", timeout=30_000)
        await page.goto(f"{caddy.url}/trust")
        assert await page.locator('[data-testid="pair-qr"] svg').count() == 1
        cookies = {c["name"]: c for c in await context.cookies()}
        assert cookies["appliance_access"]["httpOnly"] and cookies["appliance_access"]["secure"]
