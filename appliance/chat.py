"""`appliance chat`: a WAV streamed like a microphone, the turn printed, the reply saved."""

from __future__ import annotations

import json
import sys
import wave

import aiohttp
import numpy as np

from appliance.audio import FRAME_S, OUTPUT_RATE
from appliance.audio.wavio import read_wav, write_wav
from appliance.transport.protocol import MAX_RATE, MIN_RATE, ErrorEvent, ReplyText, Transcript, TurnMetrics
from appliance.transport.ws_client import WsClient

# After the WAV, silence goes on like a microphone's until the turn is over: a pause the turn
# model calls incomplete ends the turn only after [turn] incomplete_timeout_ms (1.2 s by default).
TRAILING_SILENCE_MAX_S = 6.0
SILENCE_CHUNK_S = 0.1


async def chat(wav: str, url: str, out: str | None, timeout: float = 60.0, token: str | None = None) -> int:
    try:
        samples, rate = read_wav(wav)
    except (OSError, ValueError, EOFError, wave.Error) as exc:  # missing, unreadable, not a PCM WAV
        print(f"appliance chat: cannot read {wav}: {exc}", file=sys.stderr)
        return 2
    if not MIN_RATE <= rate <= MAX_RATE:
        print(f"appliance chat: {wav} is {rate} Hz; {MIN_RATE}-{MAX_RATE} Hz is supported", file=sys.stderr)
        return 2
    client = WsClient(url)
    try:
        try:
            ready = await client.connect(rate, token=token)
        except ConnectionError as exc:
            errors = client.rx.of_type(ErrorEvent.type)
            if client.ws is None:
                print(f"appliance chat: cannot connect to {url}: {exc}", file=sys.stderr)
            else:
                reason = errors[-1]["message"] if errors else "no reason given"
                print(f"appliance chat: the server closed the connection: {reason}", file=sys.stderr)
            return 1
        except (OSError, aiohttp.ClientError) as exc:
            print(f"appliance chat: cannot connect to {url}: {exc}", file=sys.stderr)
            return 1
        print(f"session {ready['session_id']}")

        def turn_done():
            kinds = [e.get("type") for _, e in client.rx.events]
            if TurnMetrics.type in kinds:
                return True
            # A turn with nothing understood ends without a reply.
            return (
                any(e.get("final") and not e.get("text") for e in client.rx.of_type(Transcript.type))
                or ErrorEvent.type in kinds
            )

        def speech_ended() -> bool:
            return turn_done() or any(e.get("event") == "speech_end" for e in client.rx.of_type("vad"))

        await client.stream(samples, rate)
        silence = np.zeros(int(SILENCE_CHUNK_S * rate), dtype=np.int16)
        for _ in range(int(TRAILING_SILENCE_MAX_S / SILENCE_CHUNK_S)):
            if speech_ended():
                break
            await client.stream(silence, rate)
        await client.wait_for(turn_done, timeout)
    finally:
        await client.close()
    for event in client.rx.of_type(Transcript.type):
        print(f"you:       {event['text']}" if event.get("final") else f"(partial)  {event['text']}")
    reply = " ".join(e["text"] for e in client.rx.of_type(ReplyText.type))
    print(f"appliance: {reply}")
    for event in client.rx.of_type(ErrorEvent.type):
        print(f"error:     {event['code']}: {event['message']}", file=sys.stderr)
    for event in client.rx.of_type(TurnMetrics.type):
        print("metrics:   " + json.dumps({k: v for k, v in event.items() if k != "type"}))
    if out:
        write_wav(out, client.rx.audio(), OUTPUT_RATE)
        print(f"reply audio: {out} ({len(client.rx.frames) * FRAME_S:.2f} s)")
    return 0 if reply else 1
