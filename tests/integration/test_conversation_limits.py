"""Session limits and a failing responder, with the orchestrator in this process (so its settings
can be small) against the real Piper worker process."""

from __future__ import annotations

import asyncio

import pytest

from appliance.orchestrator.server import Orchestrator
from appliance.process import free_port
from appliance.transport.ws_client import WsClient


@pytest.fixture
def make_orchestrator(piper_worker, start_orchestrator):
    async def make(**overrides) -> Orchestrator:
        overrides.setdefault("workers", [piper_worker.address])
        return await start_orchestrator(**overrides)

    return make


async def _connect(orch: Orchestrator) -> WsClient:
    client = WsClient(f"ws://127.0.0.1:{orch.port}/ws")
    await client.connect(16000)
    return client


async def test_idle_timeout_ends_the_session_with_a_reason(make_orchestrator):
    orch = await make_orchestrator(session={"idle_timeout_s": 1.0})
    client = await _connect(orch)
    with pytest.raises(ConnectionError):
        await client.wait_for(lambda: False, 10)
    assert client.rx.closed[0] == 4100
    assert client.rx.of_type("error")[-1]["code"] == "idle_timeout"
    assert client.rx.of_type("state")[-1]["state"] == "TERMINATED"
    await client.close()
    for _ in range(50):  # the server finishes its clean-up (worker session, tasks) just after the close
        if not orch.conversations:
            break
        await asyncio.sleep(0.1)
    assert orch.conversations == {}


async def test_max_turns_ends_the_session_after_the_last_answer(make_orchestrator):
    orch = await make_orchestrator(session={"max_turns": 2})
    client = await _connect(orch)
    for i in range(2):
        await client.send_json({"type": "text", "text": f"turn {i}"})
        await client.wait_for(lambda i=i: len(client.rx.of_type("metrics")) > i, 30)
    await client.send_json({"type": "text", "text": "one too many"})
    with pytest.raises(ConnectionError):
        await client.wait_for(lambda: False, 10)
    assert client.rx.closed[0] == 4102
    assert client.rx.of_type("error")[-1]["code"] == "max_turns"
    await client.close()


async def test_max_duration(make_orchestrator):
    orch = await make_orchestrator(session={"max_duration_s": 1.5})
    client = await _connect(orch)
    with pytest.raises(ConnectionError):
        while True:
            await client.send_bytes(b"\x00\x00" * 320)
            await asyncio.sleep(0.02)
            if client.rx.closed:
                await client.wait_for(lambda: False, 1)
    assert client.rx.closed[0] == 4101
    await client.close()


async def test_responder_endpoint_down_gives_an_error_and_the_session_goes_on(make_orchestrator):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    orch = await make_orchestrator(
        responder={"kind": "openai", "url": dead, "model": "x", "first_token_timeout_s": 1}
    )
    client = await _connect(orch)
    await client.send_json({"type": "text", "text": "hello"})
    await client.wait_for(lambda: client.rx.of_type("error"), 15)
    error = client.rx.of_type("error")[-1]
    assert error["code"] == "responder_unavailable" and "unreachable" in error["message"]
    await client.wait_for(lambda: client.rx.of_type("state")[-1]["state"] == "WAITING_FOR_INPUT", 5)
    await client.send_json({"type": "say", "text": "I can still talk."})
    await client.wait_for(lambda: client.rx.of_type("reply_end"), 30)
    await client.close()


async def test_no_worker_is_a_clear_close(make_orchestrator):
    orch = await make_orchestrator(workers=[f"127.0.0.1:{free_port()}"])
    client = WsClient(f"ws://127.0.0.1:{orch.port}/ws")
    with pytest.raises(ConnectionError):
        await client.connect(16000)
    assert client.rx.closed[0] == 4503
    assert client.rx.of_type("error")[0]["code"] == "tts_unavailable"
    await client._session.close()
