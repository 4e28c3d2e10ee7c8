"""The WebSocket protocol under bounded fuzzing: a real orchestrator (real Piper worker, real
Whisper) gets a seeded mix of malformed JSON, wrong types, huge, zero-length and deeply nested
messages, binary at the wrong time and abrupt disconnects, over many connections. Afterwards no
session is left open (its /metrics say so), nothing crashed (no traceback in its log, the process
alive) and a well-formed session is still answered."""

from __future__ import annotations

import asyncio
import json
import random
import re
import urllib.request

import aiohttp
import pytest
from services import OrchestratorProcess

from appliance.transport.ws_client import WsClient

CONNECTIONS = 60
MESSAGES_PER_CONNECTION = 12
SEED = 20261202


@pytest.fixture(scope="module")
def target(piper_worker):
    orch = OrchestratorProcess([piper_worker.address])
    try:
        orch.wait_ready()
        yield orch
    finally:
        orch.stop()


def junk(rng: random.Random) -> str | bytes:
    """One message a careless or hostile client might send."""
    choices = [
        lambda: rng.randbytes(rng.choice([0, 1, 3, 319, 640, 4000])),  # binary, odd, zero, too long
        lambda: b"",
        lambda: rng.randbytes(rng.randrange(1, 64)).decode("latin-1"),  # not JSON
        lambda: "",
        lambda: json.dumps(rng.choice([[], 1, "hello", None, True, {"type": 5}, {"no": "type"}])),
        lambda: json.dumps(
            {"type": "hello", "sample_rate": rng.choice(["16000", 16000.5, True, -1, 10**9, None])}
        ),
        lambda: json.dumps({"type": "hello", "sample_rate": 16000, "token": rng.choice([1, [], {}])}),
        lambda: json.dumps(
            {"type": rng.choice(["text", "say"]), "text": rng.choice([None, 7, "", " ", ["x"]])}
        ),
        lambda: json.dumps({"type": "text", "text": "x" * rng.choice([4001, 100_000])}),
        lambda: json.dumps({"type": rng.choice(["nope", "interrupt", "bye", "hello", "HELLO", ""])}),
        lambda: "[" * 200_000 + "]" * 200_000,  # nested deeper than any parser's recursion
        lambda: json.dumps({"type": "say", "text": "é" * 10, "extra": {"deep": [1, 2, {"x": None}]}}),
        lambda: "x" * (2 << 20),  # over the 1 MiB limit
    ]
    return rng.choice(choices)()


async def fuzz_one(url: str, rng: random.Random) -> None:
    async with aiohttp.ClientSession() as http:
        try:
            ws = await http.ws_connect(url, max_msg_size=0)
        except aiohttp.ClientError:
            return
        try:
            if rng.random() < 0.6:  # most sessions start properly, then misbehave
                await ws.send_str(
                    json.dumps({"type": "hello", "sample_rate": rng.choice([8000, 16000, 48000])})
                )
            for _ in range(rng.randrange(1, MESSAGES_PER_CONNECTION)):
                message = junk(rng)
                if isinstance(message, bytes):
                    await ws.send_bytes(message)
                else:
                    await ws.send_str(message)
                if ws.closed:
                    break
        except (ConnectionError, aiohttp.ClientError):
            pass
        finally:
            if rng.random() < 0.5:
                await ws.close()
            # else: dropped with the session, no close handshake


def sessions_open(orch) -> float:
    text = urllib.request.urlopen(orch.http + "/metrics", timeout=10).read().decode()
    return sum(
        float(v) for v in re.findall(r"^appliance_sessions_active\{[^}]*\} (\S+)$", text, re.MULTILINE)
    )


async def test_fuzzed_websocket_clients_crash_nothing_and_leak_no_session(target):
    rng = random.Random(SEED)
    for _ in range(CONNECTIONS // 6):  # six at once
        await asyncio.gather(*(fuzz_one(target.url, random.Random(rng.random())) for _ in range(6)))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 120
    while sessions_open(target) and loop.time() < deadline:
        await asyncio.sleep(0.5)
    assert sessions_open(target) == 0, "sessions left open after every client went\n" + target.log()[-6000:]
    assert target.proc.poll() is None, target.log()
    assert "Traceback" not in target.log(), target.log()[-4000:]

    client = WsClient(target.url)
    await client.connect(16000)
    await client.send_json({"type": "say", "text": "Still here."})
    await client.wait_for(lambda: client.rx.of_type("reply_end"), 60)
    assert client.rx.frames
    await client.close()
