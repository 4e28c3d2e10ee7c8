"""A spoken turn through the deployed appliance's front door (Caddy, wss, the access secret)."""

from __future__ import annotations

from deployment import ssl_context
from speech import listen, wer
from voices import pad, piper_speech, with_noise

from appliance.transport.ws_client import WsClient

RATE = 16000


async def spoken_turn_through_caddy(dep) -> dict:
    """One spoken question over wss through Caddy: its transcript, a reply whose audio says it; the
    turn's `metrics`."""
    # The shipped default answers with a 135 M LLM: a question about Paris sometimes gets a French
    # answer, which the English voice cannot say; about the ocean it answers in plain English words.
    text = "Can you tell me something nice about the ocean?"
    client = WsClient(f"wss://localhost:{dep.https_port}/ws", ssl=ssl_context(dep))
    await client.connect(RATE, token=dep.access_secret)
    try:
        await client.stream(with_noise(pad(piper_speech(text, RATE), RATE)), RATE)
        await client.wait_for(lambda: client.rx.of_type("metrics"), 60)
    finally:
        await client.close()
    transcript = client.rx.of_type("transcript")[-1]
    assert transcript["final"] and wer(text, transcript["text"]) <= 0.2, transcript
    reply = " ".join(e["text"] for e in client.rx.of_type("reply"))
    assert reply and client.rx.of_type("reply_end")
    frames = client.rx.frames
    assert frames and all(len(f) == 1920 for _, f in frames)
    heard = listen(client.rx.audio(), 48000, reply)
    assert wer(reply, heard) <= 0.3, (reply, heard)
    return client.rx.of_type("metrics")[-1]
