"""Failover with real parts: two real Piper worker processes, the real orchestrator process with
both in its static worker list, a real WebSocket client. The worker serving a reply is SIGKILLed
or SIGSTOPped mid-reply; the reply must complete from the other worker (checked by transcribing
what the client received), and the session must never stay in SPEAKING."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
import urllib.request

import pytest
from services import OrchestratorProcess, WorkerProcess
from speech import listen, normalise

from appliance.transport.ws_client import WsClient

SENTENCES = [
    "The old lighthouse keeper lived alone on a small island.",
    "Every evening he climbed the stairs and lit the lamp.",
    "Ships far away saw the light and knew where the rocks were.",
    "One winter night a terrible storm broke two windows.",
    "He repaired the glass before morning and the lamp kept shining.",
]
# Words from the second half of each sentence: the sentence under way when the worker failed is
# voiced again from its start, and Whisper may garble the stutter before it.
KEY_WORDS = [
    ("alone", "island"),
    ("climbed", "stairs"),
    ("away", "rocks"),
    ("storm", "windows"),
    ("morning", "shining"),
]
TEXT = " ".join(SENTENCES)


def _get(url: str) -> str:
    return urllib.request.urlopen(url, timeout=5).read().decode()


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _serving(workers: list[WorkerProcess]) -> WorkerProcess:
    """The worker with a Synthesize stream open (from its own /metrics)."""
    for _ in range(50):
        for w in workers:
            page = await asyncio.to_thread(_get, f"http://127.0.0.1:{w.metrics_port}/metrics")
            if _metric(page, "appliance_tts_active_streams") >= 1:
                return w
        await asyncio.sleep(0.02)
    raise AssertionError("no worker has a stream open")


@contextlib.contextmanager
def _cluster(redis=None):
    """Two Piper workers and the orchestrator: a static worker list, or discovery through ``redis``."""
    if redis is None:
        workers = [WorkerProcess(), WorkerProcess()]
    else:
        secret = {"APPLIANCE_REDIS_PASSWORD": redis.password}
        workers = [WorkerProcess("--redis-url", redis.url, env=secret) for _ in range(2)]
    orch = None
    try:
        for w in workers:
            w.wait_ready()
        if redis is None:
            orch = OrchestratorProcess([w.address for w in workers])
        else:
            orch = OrchestratorProcess([], env={"APPLIANCE_REDIS_URL": redis.url, **secret})
        orch.wait_ready()
        if redis is not None:
            _wait_discovered(orch, {w.address for w in workers})
        yield orch, workers
    finally:
        if orch is not None:
            orch.stop()
        for w in workers:
            if w.proc.poll() is None:
                os.kill(w.proc.pid, signal.SIGCONT)  # a stopped worker must be able to die
            w.stop()


def _wait_discovered(orch: OrchestratorProcess, addresses: set[str], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not addresses <= set(json.loads(_get(orch.http + "/healthz"))["workers"]):
        assert time.monotonic() < deadline, (
            f"workers {addresses} not discovered: {_get(orch.http + '/healthz')}"
        )
        time.sleep(0.1)


@pytest.fixture
def cluster():
    with _cluster() as c:
        yield c


@pytest.fixture
def redis_cluster(redis_server):
    with _cluster(redis_server) as c:
        yield c


@pytest.fixture
async def client(cluster):
    orch, _ = cluster
    c = WsClient(orch.url)
    await c.connect(16000)
    yield c
    await c.close()


async def _say_and_fail(client: WsClient, workers, sig: int) -> WorkerProcess:
    await client.send_json({"type": "say", "text": TEXT})
    await client.wait_for(lambda: client.rx.frames, 30)  # the first sentence's audio has started
    victim = await _serving(workers)
    os.kill(victim.proc.pid, sig)
    return victim


def _states(client: WsClient) -> list[str]:
    return [e["state"] for e in client.rx.of_type("state")]


def _assert_every_sentence_heard(client: WsClient) -> None:
    heard = normalise(listen(client.rx.audio(), 48000, " ".join(" ".join(w) for w in KEY_WORDS)))
    missing = [w for words in KEY_WORDS for w in words if not re.search(rf"\b{w}\b", heard)]
    assert not missing, f"missing {missing} in {heard!r}"


@pytest.mark.parametrize("sig, cause", [(signal.SIGKILL, "lost"), (signal.SIGSTOP, "stalled")])
async def test_a_reply_survives_its_worker_dying_mid_reply(cluster, client, sig, cause):
    await _reply_survives(cluster, client, sig, cause)


async def test_a_reply_survives_its_discovered_worker_dying_mid_reply(redis_cluster):
    """The same with the workers found in Redis: the routed pool excludes the dead worker too."""
    orch, _ = redis_cluster
    c = WsClient(orch.url)
    await c.connect(16000)
    try:
        await _reply_survives(redis_cluster, c, signal.SIGKILL, "lost")
    finally:
        await c.close()


async def _reply_survives(cluster, client, sig, cause):
    orch, workers = cluster
    victim = await _say_and_fail(client, workers, sig)
    await client.wait_for(lambda: client.rx.of_type("reply_end"), 60)
    # The state message follows reply_end on the wire; it must come (never stuck in SPEAKING).
    await client.wait_for(lambda: _states(client)[-1] == "WAITING_FOR_INPUT", 10)
    assert client.rx.of_type("error") == []
    assert all(len(f) == 1920 for _, f in client.rx.frames)
    _assert_every_sentence_heard(client)

    page = await asyncio.to_thread(_get, orch.http + "/metrics")
    assert _metric(page, "appliance_tts_failovers_total", worker=victim.address, cause=cause) == 1
    assert _metric(page, "appliance_tts_failover_gap_seconds_count") == 1
    assert (
        f"tts failover session={client.ready['session_id']} worker={victim.address} cause={cause}"
        in orch.log()
    )

    # The session now lives on the other worker: the next reply is served from there.
    n = len(client.rx.of_type("reply_end"))
    await client.send_json({"type": "say", "text": "Back to normal."})
    await client.wait_for(lambda: len(client.rx.of_type("reply_end")) > n, 30)
    await client.wait_for(lambda: _states(client)[-1] == "WAITING_FOR_INPUT", 10)


async def test_with_no_worker_left_the_reply_ends_with_an_error(cluster, client):
    orch, workers = cluster
    victim = await _say_and_fail(client, workers, signal.SIGKILL)
    for w in workers:
        if w is not victim:
            os.kill(w.proc.pid, signal.SIGKILL)
    await client.wait_for(lambda: client.rx.of_type("error"), 30)
    assert client.rx.of_type("error")[0]["code"] == "tts_unavailable"
    await client.wait_for(lambda: _states(client)[-1] == "WAITING_FOR_INPUT", 10)
    assert "SPEAKING" in _states(client)

    # Still no worker: a new reply says so once [playback] tts_retry_s has passed, instead of hanging.
    await client.send_json({"type": "say", "text": "Anyone there?"})
    await client.wait_for(lambda: len(client.rx.of_type("error")) >= 2, 15)
    assert client.rx.of_type("error")[1]["code"] == "tts_unavailable"
    assert _states(client)[-1] == "WAITING_FOR_INPUT"
    assert await asyncio.to_thread(_get, orch.http + "/healthz")
