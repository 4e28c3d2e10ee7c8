"""The static worker list alongside Redis, with the real parts: a real redis-server (or a closed port
where it should be), real mock-engine worker processes (some registering in Redis, some only
listed), and the orchestrator in this process (a stub ASR: only typed `say` turns are spoken)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys

import aiohttp
import pytest
from redis_server import PASSWORD, RedisServer
from services import ROOT, WorkerProcess

from appliance.orchestrator.server import Orchestrator
from appliance.orchestrator.workers import TtsUnavailable
from appliance.process import free_port
from appliance.transport.ws_client import WsClient

MOCK = "mock-sine"


class StubAsr:
    async def load_async(self) -> None:
        pass

    def close(self) -> None:
        pass


def mock_config(tmp_path, name: str) -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\n[models]\ndefault = "{MOCK}"\nwarmup = false\n'
        "[discovery]\nheartbeat_s = 1.0\nttl_s = 3.0\n"
    )
    return str(path)


@pytest.fixture
def workers():
    procs: list[WorkerProcess] = []
    yield procs
    for p in procs:
        if p.proc.poll() is None:
            p.stop()


def listed_worker(
    workers: list[WorkerProcess], tmp_path, name: str, port: int | None = None
) -> WorkerProcess:
    """A worker that knows nothing of Redis: the orchestrator has it only from its static list."""
    w = WorkerProcess("--name", name, config=mock_config(tmp_path, name), port=port)
    workers.append(w)
    return w


def registered_worker(workers: list[WorkerProcess], tmp_path, name: str, redis: RedisServer) -> WorkerProcess:
    w = WorkerProcess(
        "--redis-url",
        redis.url,
        "--name",
        name,
        config=mock_config(tmp_path, name),
        env={"APPLIANCE_REDIS_PASSWORD": redis.password},
    )
    workers.append(w)
    return w


@pytest.fixture
def make_orchestrator(start_orchestrator):
    async def make(redis_url: str, static: list[str], **settings) -> Orchestrator:
        return await start_orchestrator(
            asr=StubAsr(), redis_url=redis_url, workers=static, discovery={"health_check_s": 0.5}, **settings
        )

    return make


async def wait_registry(orch: Orchestrator, predicate, timeout: float = 60) -> None:
    await orch.pool.registry.wait_until(predicate, timeout)


async def say_over_websocket(orch: Orchestrator, text: str) -> tuple[str, bytes]:
    """One typed `say` turn over the real WebSocket: the worker that served it, and the reply audio."""
    client = WsClient(f"ws://127.0.0.1:{orch.port}/ws")
    ready = await client.connect(16000)
    try:
        served = orch.conversations[ready["session_id"]].tts.client.address
        await client.send_json({"type": "say", "text": text})
        await client.wait_for(lambda: client.rx.of_type("reply_end"), 60)
        return served, client.rx.audio()
    finally:
        await client.close()


async def http_json(url: str) -> dict:
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        return json.loads(await reply.text())


def sources(view: dict) -> dict[str, str]:
    return {w["address"]: w["source"] for w in view["workers"]}


async def test_redis_unreachable_at_start_routes_to_the_static_worker_then_adds_redis_workers(
    workers,
    tmp_path,
    make_orchestrator,
    caplog,
):
    static = listed_worker(workers, tmp_path, "listed")
    static.wait_ready()
    redis_port = free_port()  # nothing listens there (yet)
    url = f"redis://:{PASSWORD}@127.0.0.1:{redis_port}/0"
    with caplog.at_level(logging.INFO):
        orch = await make_orchestrator(url, [static.address])
        pool = orch.pool
        assert not pool.registry.connected

        client = await pool.start_session("through-the-pool")
        assert client.address == static.address
        await client.end_session("through-the-pool")
        served, audio = await say_over_websocket(orch, "Hello from the static list.")
        assert served == static.address and len(audio) > 0 and len(audio) % 1920 == 0
        view = await http_json(f"http://127.0.0.1:{orch.port}/workers")
        assert view["redis"]["connected"] is False and sources(view) == {static.address: "static"}

        # Redis comes up: workers registering there are added, next to the static one
        redis = RedisServer(port=redis_port)
        try:
            discovered = registered_worker(workers, tmp_path, "discovered", redis)
            await wait_registry(orch, lambda: discovered.address in pool.registry.entries)
            assert pool.registry.connected
            assert sources(pool.view()) == {static.address: "static", discovered.address: "redis"}
            assert (
                await pool.start_session("redis-one", exclude={static.address})
            ).address == discovered.address
            assert (
                await pool.start_session("static-one", exclude={discovered.address})
            ).address == static.address
        finally:
            redis.close()
    assert PASSWORD not in caplog.text
    assert sum("static worker joined" in r.getMessage() for r in caplog.records) == 1


async def test_static_and_redis_workers_are_both_routable_and_labelled(
    redis_server, workers, tmp_path, make_orchestrator
):
    in_redis = registered_worker(workers, tmp_path, "w1", redis_server)
    listed = listed_worker(workers, tmp_path, "w2")
    both = registered_worker(workers, tmp_path, "w3", redis_server)
    for w in workers:
        w.wait_ready()
    orch = await make_orchestrator(
        redis_server.url, [listed.address, both.address], redis_password=redis_server.password
    )
    pool = orch.pool
    await wait_registry(orch, lambda: {in_redis.address, both.address} <= set(pool.registry.entries))

    everyone = {in_redis.address, listed.address, both.address}
    for address in everyone:
        others = everyone - {address}
        assert (await pool.start_session(f"only-{address}", exclude=others)).address == address

    view = await http_json(f"http://127.0.0.1:{orch.port}/workers")
    assert sources(view) == {
        in_redis.address: "redis",
        listed.address: "static",
        both.address: "static+redis",
    }
    by_address = {w["address"]: w for w in view["workers"]}
    assert by_address[listed.address]["name"] == "w2"  # from the GetCapabilities probe
    assert by_address[listed.address]["resident_models"] == [MOCK]
    assert by_address[both.address]["heartbeat_age_s"] is not None  # the Redis record is the one used
    assert all(w["down"] is None for w in view["workers"])

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appliance",
        "workers",
        "--url",
        f"http://127.0.0.1:{orch.port}",
        cwd=ROOT,
        env=dict(os.environ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    rows = {line.split()[0]: line.split()[2] for line in out.decode().splitlines()[2:]}
    assert rows == {"w1": "redis", "w2": "static", "w3": "static+redis"}


async def test_a_killed_static_worker_is_marked_down_and_rejoins_after_a_restart(
    redis_server,
    workers,
    tmp_path,
    make_orchestrator,
    caplog,
):
    other = registered_worker(workers, tmp_path, "other", redis_server)
    listed = listed_worker(workers, tmp_path, "listed")
    for w in workers:
        w.wait_ready()
    with caplog.at_level(logging.INFO, logger="appliance.orchestrator"):
        orch = await make_orchestrator(
            redis_server.url, [listed.address], redis_password=redis_server.password
        )
        pool = orch.pool
        await wait_registry(orch, lambda: other.address in pool.registry.entries)
        assert (await pool.start_session("before", exclude={other.address})).address == listed.address

        listed.proc.kill()
        listed.proc.wait()
        await wait_registry(orch, lambda: listed.address in pool.registry.down_addresses(), 30)
        for i in range(3):
            assert (await pool.start_session(f"while-down-{i}")).address == other.address
        with pytest.raises(TtsUnavailable, match="no TTS worker accepted"):
            await pool.start_session("nowhere-else", exclude={other.address})
        assert listed.address in sources(pool.view())  # kept, down: it is listed

        restarted = listed_worker(workers, tmp_path, "listed", port=listed.port)
        restarted.wait_ready()
        await wait_registry(orch, lambda: listed.address not in pool.registry.down_addresses(), 60)
        assert (await pool.start_session("after", exclude={other.address})).address == listed.address
        assert {w["address"]: w["down"] for w in pool.view()["workers"]} == {
            other.address: None,
            listed.address: None,
        }
    lines = [r.getMessage() for r in caplog.records if listed.address in r.getMessage()]
    assert sum("static worker joined" in x for x in lines) == 1
    assert sum("marked down" in x and "source=static" in x for x in lines) == 1
    assert sum("back in rotation" in x and "source=static" in x for x in lines) == 1


async def test_a_static_worker_down_at_start_joins_once_it_answers(
    redis_server, workers, tmp_path, make_orchestrator
):
    port = free_port()
    address = f"127.0.0.1:{port}"
    orch = await make_orchestrator(redis_server.url, [address], redis_password=redis_server.password)
    pool = orch.pool
    assert pool.registry.entries[address].down is not None
    with pytest.raises(TtsUnavailable):
        await pool.start_session("too-early")

    late = listed_worker(workers, tmp_path, "late", port=port)
    late.wait_ready()
    await wait_registry(orch, lambda: address not in pool.registry.down_addresses(), 60)
    assert pool.registry.entries[address].record.name == "late"
    assert (await pool.start_session("now")).address == address
