"""Worker discovery and routing with the real parts: a real redis-server (password, free loopback port),
real worker processes (mock and Piper) registering in it, and the real orchestrator routing sessions
over its WebSocket."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import aiohttp
import pytest
import redis.asyncio as aioredis
from services import ROOT, WorkerProcess
from speech import listen, wer

from appliance.orchestrator.server import Orchestrator
from appliance.orchestrator.workers import TtsUnavailable
from appliance.transport.ws_client import WsClient

PIPER = "piper-en_US-joe-medium"
MOCK = "mock-sine"


def mock_config(tmp_path, name: str, *, languages: tuple[str, ...] = (), heartbeat_s: float = 1.0) -> str:
    path = tmp_path / f"{name}.toml"
    langs = ", ".join(f'"{x}"' for x in languages)
    path.write_text(
        f'name = "{name}"\n[models]\ndefault = "{MOCK}"\nwarmup = false\n'
        f"[discovery]\nheartbeat_s = {heartbeat_s}\nttl_s = {3 * heartbeat_s}\nlanguages = [{langs}]\n"
    )
    return str(path)


def start_worker(redis_server, config: str, name: str) -> WorkerProcess:
    return WorkerProcess(
        "--redis-url",
        redis_server.url,
        "--name",
        name,
        config=config,
        env={"APPLIANCE_REDIS_PASSWORD": redis_server.password},
    )


@pytest.fixture
async def rclient(redis_server):
    client = aioredis.Redis(host="127.0.0.1", port=redis_server.port, password=redis_server.password)
    yield client
    await client.aclose()


@pytest.fixture
def make_orchestrator(redis_server, start_orchestrator):
    async def make(**discovery) -> Orchestrator:
        return await start_orchestrator(
            redis_url=redis_server.url,
            redis_password=redis_server.password,
            discovery={"health_check_s": 0.5, **discovery},
        )

    return make


@pytest.fixture
def workers():
    procs: list[WorkerProcess] = []
    yield procs
    for p in procs:
        p.stop()


async def wait_workers(orch: Orchestrator, addresses, timeout: float = 60) -> None:
    want = set(addresses)
    await orch.pool.registry.wait_until(lambda: want <= set(orch.pool.registry.entries), timeout)


async def open_session(orch: Orchestrator, voice: str = "") -> tuple[WsClient, str]:
    client = WsClient(f"ws://127.0.0.1:{orch.port}/ws")
    hello = {"voice": voice} if voice else {}
    ready = await client.connect(16000, **hello)
    return client, ready["session_id"]


async def say(client: WsClient, text: str, timeout: float = 60) -> bytes:
    n = len(client.rx.of_type("reply_end"))
    since = asyncio.get_running_loop().time()
    await client.send_json({"type": "say", "text": text})
    await client.wait_for(lambda: len(client.rx.of_type("reply_end")) > n, timeout)
    return client.rx.audio(since)


def served_by(orch: Orchestrator, sid: str) -> str:
    return orch.conversations[sid].tts.client.address


async def http_get(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        return await reply.text()


async def metric(orch: Orchestrator, prefix: str) -> float:
    body = await http_get(f"http://127.0.0.1:{orch.port}/metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(prefix))


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appliance",
        *args,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_worker_registers_heartbeats_deregisters_and_expires(
    redis_server, rclient, workers, tmp_path, make_orchestrator
):
    a = start_worker(redis_server, mock_config(tmp_path, "alpha"), "alpha")
    workers.append(a)
    key = f"appliance:worker:{a.address}"
    deadline = time.monotonic() + 60
    while not await rclient.exists(key):
        assert time.monotonic() < deadline, a.log()
        await asyncio.sleep(0.1)
    record = json.loads(await rclient.get(key))
    assert (record["name"], record["address"], record["default_model"]) == ("alpha", a.address, MOCK)
    assert record["resident_models"] == [MOCK] and record["capabilities"]["streaming"] is True
    assert (
        record["capabilities"]["max_concurrent_sessions"] == 64 and record["metrics"]["active_sessions"] == 0
    )
    assert 0 < await rclient.pttl(key) <= 3000
    await asyncio.sleep(1.5)
    assert json.loads(await rclient.get(key))["seq"] > record["seq"]  # the heartbeat rewrites it

    orch = await make_orchestrator()
    await wait_workers(orch, [a.address], 10)

    # `appliance workers`, from Redis and from the orchestrator
    code, out, err = await run_cli(
        "workers", "--redis-url", redis_server.url, env={"APPLIANCE_REDIS_PASSWORD": redis_server.password}
    )
    assert code == 0, err
    assert "alpha" in out and a.address in out and MOCK in out and "0/64" in out
    assert redis_server.password not in out + err
    code, out, err = await run_cli("workers", "--url", f"http://127.0.0.1:{orch.port}", "--json")
    assert code == 0, err
    view = json.loads(out)
    assert view["redis"]["connected"] and [w["name"] for w in view["workers"]] == ["alpha"]

    # graceful stop: the record goes at once, and the orchestrator hears it
    assert a.stop() == 0
    assert not await rclient.exists(key)
    await orch.pool.registry.wait_until(lambda: a.address not in orch.pool.registry.entries, 2)

    # SIGKILL: no deregistration; the record expires with its TTL, and the orchestrator drops it
    b = start_worker(redis_server, mock_config(tmp_path, "beta"), "beta")
    workers.append(b)
    await wait_workers(orch, [b.address])
    b.proc.kill()
    b.proc.wait()
    killed = time.monotonic()
    assert await rclient.exists(f"appliance:worker:{b.address}")
    await orch.pool.registry.wait_until(lambda: b.address not in orch.pool.registry.entries, 10)
    assert 1.0 < time.monotonic() - killed < 6
    assert not await rclient.exists(f"appliance:worker:{b.address}")


async def test_routing_by_model_language_and_load(redis_server, workers, tmp_path, make_orchestrator):
    piper = start_worker(redis_server, str(ROOT / "etc/appliance/tts/piper.toml"), "piper")
    en1 = start_worker(redis_server, mock_config(tmp_path, "en1"), "en1")
    en2 = start_worker(redis_server, mock_config(tmp_path, "en2"), "en2")
    de = start_worker(redis_server, mock_config(tmp_path, "de", languages=("de-DE",)), "de")
    workers.extend([piper, en1, en2, de])
    orch = await make_orchestrator(language="en")
    await wait_workers(orch, [w.address for w in workers])

    # the model: a Piper voice goes to the worker that has it resident, and speaks
    client, sid = await open_session(orch, PIPER)
    assert served_by(orch, sid) == piper.address
    pcm = await say(client, "The weather is lovely today.")
    assert wer("the weather is lovely today", listen(pcm, 48000, "the weather is lovely today")) <= 0.34
    await client.close()

    # the load: mock sessions spread over the two English mock workers; the German one (least loaded
    # of all) is never chosen for English
    clients, served = [], []
    for _ in range(4):
        c, s = await open_session(orch, MOCK)
        clients.append(c)
        served.append(served_by(orch, s))
    assert sorted(served) == sorted([en1.address, en1.address, en2.address, en2.address])
    assert len(await say(clients[0], "beep")) > 0
    for c in clients:
        await c.close()
    assert await metric(orch, f'appliance_worker_routed_total{{address="{en1.address}"') == 2
    assert await metric(orch, f'appliance_worker_routed_total{{address="{de.address}"') == 0


async def test_model_loaded_on_demand_while_a_fallback_serves(
    redis_server, rclient, workers, tmp_path, make_orchestrator
):
    a = start_worker(redis_server, mock_config(tmp_path, "a"), "a")
    b = start_worker(redis_server, mock_config(tmp_path, "b"), "b")
    workers.extend([a, b])
    orch = await make_orchestrator()
    await wait_workers(orch, [a.address, b.address])

    first, sid = await open_session(orch, PIPER)  # resident nowhere: served now, by a fallback
    assert len(await say(first, "hello")) > 0
    loader = {w.address for w in (a, b)} - {served_by(orch, sid)}
    assert len(loader) == 1  # the fallback is not the worker busy loading
    loader = loader.pop()

    async def resident_in_redis() -> bool:
        raw = await rclient.get(f"appliance:worker:{loader}")
        return raw is not None and PIPER in json.loads(raw)["resident_models"]

    deadline = time.monotonic() + 60
    while not await resident_in_redis():  # announced by the worker itself
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    second, sid2 = await open_session(orch, PIPER)
    assert served_by(orch, sid2) == loader
    pcm = await say(second, "Good morning to you.")
    assert wer("good morning to you", listen(pcm, 48000, "good morning to you")) <= 0.34
    assert await metric(orch, f'appliance_worker_model_loads_total{{model="{PIPER}",outcome="ok"') == 1
    await first.close()
    await second.close()


async def test_redis_stopped_and_restarted_mid_conversation(
    redis_server, rclient, workers, tmp_path, make_orchestrator
):
    a = start_worker(redis_server, mock_config(tmp_path, "a"), "a")
    b = start_worker(redis_server, mock_config(tmp_path, "b"), "b")
    workers.extend([a, b])
    orch = await make_orchestrator()
    await wait_workers(orch, [a.address, b.address])
    client, _ = await open_session(orch)
    assert len(await say(client, "before")) > 0

    redis_server.stop()
    await orch.pool.registry.wait_until(lambda: not orch.pool.registry.connected, 10)
    await asyncio.sleep(4)  # longer than the records' TTL: nothing expires while Redis is away
    assert len(await say(client, "during")) > 0  # the session goes on
    other, sid = await open_session(orch)  # and new ones are routed to the workers last known
    assert served_by(orch, sid) in (a.address, b.address)
    assert len(await say(other, "new")) > 0
    assert {w["address"] for w in orch.pool.view()["workers"]} == {a.address, b.address}

    redis_server.start()  # empty: the workers must register again
    deadline = time.monotonic() + 20
    while not (
        await rclient.exists(f"appliance:worker:{a.address}", f"appliance:worker:{b.address}") == 2
        and orch.pool.registry.connected
    ):
        assert time.monotonic() < deadline, a.log()
        await asyncio.sleep(0.2)
    assert len(await say(client, "after")) > 0
    assert client.rx.closed is None and other.rx.closed is None  # no session dropped
    await asyncio.sleep(4)  # and nobody expires after the reconnect (they heartbeat again)
    assert len(orch.pool.registry.entries) == 2
    for w in (a, b):  # the outage is logged once, not once per retry
        log = w.log()
        assert log.count("Redis unreachable") == 1 and "after an outage" in log
    await client.close()
    await other.close()


async def test_bad_records_are_ignored_with_a_log_line(
    redis_server, rclient, workers, tmp_path, make_orchestrator, caplog
):
    a = start_worker(redis_server, mock_config(tmp_path, "good"), "good")
    workers.append(a)
    await rclient.set("appliance:worker:junk:1", b"\x00\xffnot json")
    await rclient.set(
        "appliance:worker:10.0.0.9:7001",
        json.dumps({"name": "typo", "address": "10.0.0.9:7001", "capabilities": {"streaming": "yes"}}),
    )
    await rclient.set("appliance:worker:10.0.0.8:7001", json.dumps([1, 2, 3]))
    await rclient.hset("appliance:worker:hash:1", "name", "x")  # not even a string
    with caplog.at_level("WARNING", logger="appliance.orchestrator.workers.registry"):
        orch = await make_orchestrator(resync_s=0.3)
        await wait_workers(orch, [a.address])
        await rclient.publish("appliance:workers", "garbage")
        await rclient.publish("appliance:workers", json.dumps({"event": "update", "record": {"name": 7}}))
        await asyncio.sleep(1.5)  # several re-reads of the same bad keys
    client, sid = await open_session(orch)
    assert served_by(orch, sid) == a.address
    assert len(await say(client, "still fine")) > 0
    await client.close()
    assert [w["name"] for w in orch.pool.view()["workers"]] == ["good"]
    lines = [r.getMessage() for r in caplog.records if "bad worker record" in r.getMessage()]
    assert len([x for x in lines if "junk:1" in x]) == 1  # once, not once per re-read
    assert any("streaming: must be bool" in x for x in lines) and any("JSON object" in x for x in lines)
    assert sum("source=appliance:workers" in x for x in lines) == 2


async def test_marked_down_worker_waits_for_proof_of_health(
    redis_server, workers, tmp_path, make_orchestrator
):
    # long heartbeats: only the gRPC health probe can bring the worker back within this test
    a = start_worker(redis_server, mock_config(tmp_path, "a", heartbeat_s=20), "a")
    b = start_worker(redis_server, mock_config(tmp_path, "b", heartbeat_s=20), "b")
    workers.extend([a, b])
    orch = await make_orchestrator()
    pool = orch.pool
    await wait_workers(orch, [a.address, b.address])
    a.proc.send_signal(signal.SIGSTOP)  # hung: no heartbeat, no health
    try:
        pool.mark_down(a.address, "stream died (test)")  # what failover does
        for i in range(3):
            assert (await pool.start_session(f"down-{i}")).address == b.address
        with pytest.raises(TtsUnavailable, match="no TTS worker accepted"):
            await pool.start_session("none-left", exclude={b.address})  # the probe of a fails: still down
        assert a.address in pool.registry.down_addresses()
    finally:
        a.proc.send_signal(signal.SIGCONT)
    await pool.registry.wait_until(
        lambda: a.address not in pool.registry.down_addresses(), 10
    )  # probe passes
    assert (await pool.start_session("back", exclude={b.address})).address == a.address
    assert [w["down"] for w in pool.view()["workers"]] == [None, None]


async def test_static_list_counts_routes_without_redis(orchestrator, piper_worker):
    client = WsClient(orchestrator.url)
    await client.connect(16000)
    await client.close()
    body = await http_get(orchestrator.http + "/metrics")
    address = piper_worker.address
    assert f'appliance_worker_routed_total{{address="{address}",worker="{address}"}}' in body
    view = json.loads(await http_get(orchestrator.http + "/workers"))
    assert view["redis"] is None and view["workers"][0]["address"] == piper_worker.address
