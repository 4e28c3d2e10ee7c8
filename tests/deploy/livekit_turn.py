"""The LiveKit role from the outside: a person on the ``livekit`` rtc SDK asks the installed
appliance for a room through Caddy (HTTPS, the access secret), joins it through Caddy's /livekit
route to the role's livekit-server, and holds a spoken turn."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import urllib.request

from deployment import record, ssl_context
from speech import listen, wer
from voices import pad, piper_speech

from appliance.bench.livekit_client import RATE, Participant

QUESTION = "Can you tell me something nice about the ocean?"


@contextlib.contextmanager
def trusting(cafile: str):
    """The SDK's native TLS (rustls) reads its roots from SSL_CERT_FILE: Caddy's internal CA here."""
    old = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = cafile
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = old


def _turn_done(p: Participant) -> bool:
    return bool(p.of_type("metrics")) and bool(p.of_type("reply_end"))


async def spoken_turn(dep) -> dict:
    """One spoken question through the room; returns what the checks need."""
    root = str(dep.caddy_root_ca())
    person = Participant()
    with trusting(root):
        await person.join(dep.https, ssl=ssl_context(dep), access_token=dep.access_secret)
        try:
            await person.wait_for(lambda: person.of_type("ready"), 60)
            t0 = asyncio.get_running_loop().time()
            person.play(pad(piper_speech(QUESTION, 16000), 16000, 0.3, 2.0))
            await person.wait_for(lambda: _turn_done(person), 120)
            await asyncio.sleep(0.5)  # the reply's tail still in flight
            voiced = person.voiced_times(t0)
            heard_audio = person.audio(voiced[0] - 0.1) if voiced else person.audio(t0)
        finally:
            await person.leave()
    reply = " ".join(e["text"] for e in person.of_type("reply"))
    heard = await asyncio.to_thread(listen, heard_audio, RATE, reply) if reply else ""
    metrics = person.of_type("metrics")[-1]
    record("offline_livekit_voice_to_voice_ms", metrics.get("voice_to_voice_ms"))
    return {
        "url": person.info["url"],
        "transcript": person.of_type("transcript")[-1],
        "reply": reply,
        "heard": heard,
        "voiced_s": person.voiced_s(t0),
    }


def check_turn(turn: dict, https_port: int) -> None:
    assert turn["url"] == f"wss://localhost:{https_port}/livekit", turn["url"]
    assert turn["transcript"]["final"] and wer(QUESTION, turn["transcript"]["text"]) <= 0.2, turn[
        "transcript"
    ]
    assert turn["reply"] and turn["voiced_s"] > 0.5, turn
    assert wer(turn["reply"], turn["heard"]) <= 0.3, (turn["reply"], turn["heard"])


def exposure(dep, unit: str) -> float:
    out = dep.container.run("systemd-analyze", "security", "--no-pager", unit, check=False).stdout
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", out)
    assert m, out
    return float(m.group(1))


def livekit_metrics(dep) -> str:
    url = f"http://127.0.0.1:{dep.livekit_metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()
