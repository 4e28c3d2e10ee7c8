"""Redis ACL users per role, against a real redis-server loading the file `appliance redis-acl`
writes: a real worker registers with its own user, the orchestrator's user routes to it, and
neither can do more than its role needs."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError
from redis_server import RedisServer
from services import WorkerProcess

from appliance import discovery
from appliance.cli import main
from appliance.config import OrchestratorSettings, load_settings
from appliance.orchestrator.workers.routed_pool import RoutedPool
from appliance.process import free_port

ORCH_PW, WORKER_PW, OTHER_PW = "orch-secret-1", "worker-secret-2", "other-secret-3"


@pytest.fixture
def acl_redis(tmp_path):
    port = free_port()  # the worker's, named in its ACL before it starts
    for name, pw in (("orch", ORCH_PW), ("worker", WORKER_PW), ("other", OTHER_PW)):
        (tmp_path / f"{name}.pw").write_text(pw + "\n")
    acl = tmp_path / "users.acl"
    args = ["redis-acl", "--orchestrator-password-file", str(tmp_path / "orch.pw"), "--out", str(acl)]
    args += ["--worker", f"piper=127.0.0.1:{port},{tmp_path / 'worker.pw'}"]
    args += ["--worker", f"other=127.0.0.1:1,{tmp_path / 'other.pw'}"]
    assert main(args) == 0
    assert ORCH_PW not in acl.read_text() and WORKER_PW not in acl.read_text()  # digests only
    server = RedisServer(password=ORCH_PW, aclfile=acl, user="orchestrator")
    try:
        yield server, port
    finally:
        server.close()


def _client(server: RedisServer, user: str, password: str) -> aioredis.Redis:
    return aioredis.Redis(host="127.0.0.1", port=server.port, username=user, password=password)


async def test_each_role_can_do_its_job_and_nothing_more(acl_redis):
    server, port = acl_redis
    worker = WorkerProcess(
        port=port,
        env={
            "APPLIANCE_REDIS_URL": f"redis://worker-piper@127.0.0.1:{server.port}/0",
            "APPLIANCE_REDIS_PASSWORD": WORKER_PW,
        },
    )
    settings = load_settings(
        OrchestratorSettings,
        redis_url=f"redis://orchestrator@127.0.0.1:{server.port}/0",
        redis_password=ORCH_PW,
    )
    pool = RoutedPool.from_settings(settings)
    orch = _client(server, "orchestrator", ORCH_PW)
    as_worker = _client(server, "worker-piper", WORKER_PW)
    try:
        await asyncio.to_thread(worker.wait_ready)
        own_key = discovery.worker_key("appliance:", worker.address)
        for _ in range(100):  # the worker registers with its own user
            if await orch.get(own_key):
                break
            await asyncio.sleep(0.1)
        record = json.loads(await orch.get(own_key))
        assert record["address"] == worker.address

        await pool.start()  # the orchestrator's user reads the records and routes
        client = await pool.start_session("acl-session")
        assert client.address == worker.address
        await client.end_session("acl-session")

        other_key = discovery.worker_key("appliance:", "127.0.0.1:1")
        with pytest.raises(NoPermissionError):  # a worker cannot write another worker's record
            await as_worker.set(other_key, "{}")
        with pytest.raises(NoPermissionError):
            await as_worker.publish("elsewhere", "x")
        with pytest.raises(NoPermissionError):
            await as_worker.flushall()
        with pytest.raises(NoPermissionError):  # the orchestrator only reads
            await orch.set(own_key, "{}")
        with pytest.raises(NoPermissionError):
            await orch.delete(own_key)
        assert json.loads(await orch.get(own_key))["address"] == worker.address  # unchanged
        with pytest.raises((AuthenticationError, ResponseError)):  # the default user is off
            await aioredis.Redis(host="127.0.0.1", port=server.port, password=ORCH_PW).ping()
        with pytest.raises((AuthenticationError, ResponseError)):  # and a wrong password is refused
            await _client(server, "worker-piper", "wrong").ping()
    finally:
        await pool.close()
        await orch.aclose()
        await as_worker.aclose()
        worker.stop()


def test_bad_arguments_are_named(tmp_path, capsys):
    (tmp_path / "o.pw").write_text("pw\n")
    (tmp_path / "empty.pw").write_text("")
    base = ["redis-acl", "--orchestrator-password-file", str(tmp_path / "o.pw")]
    assert main([*base, "--worker", f"w=127.0.0.1:7001,{tmp_path / 'empty.pw'}"]) == 2
    assert "is empty" in capsys.readouterr().err
    assert main([*base, "--worker", f"w=127.0.0.1:7001,{tmp_path / 'nope.pw'}"]) == 2
    assert "nope.pw" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--worker", "w=not-an-address,x"])
    assert "is not HOST:PORT" in capsys.readouterr().err


async def test_an_ipv6_workers_user_writes_its_own_key_and_no_look_alike(tmp_path):
    """The brackets of an IPv6 address are literal in its key pattern, not a glob class."""
    (tmp_path / "o.pw").write_text(ORCH_PW + "\n")
    (tmp_path / "w.pw").write_text(WORKER_PW + "\n")
    acl = tmp_path / "users.acl"
    args = ["redis-acl", "--orchestrator-password-file", str(tmp_path / "o.pw"), "--out", str(acl)]
    assert main([*args, "--worker", f"v6=[::1]:7001,{tmp_path / 'w.pw'}"]) == 0
    server = RedisServer(password=ORCH_PW, aclfile=acl, user="orchestrator")
    as_worker = _client(server, "worker-v6", WORKER_PW)
    try:
        own_key = discovery.worker_key("appliance:", "[::1]:7001")
        assert await as_worker.set(own_key, "{}")
        for look_alike in ("appliance:worker:1:7001", "appliance:worker:::7001"):
            with pytest.raises(NoPermissionError):  # what "[::1]" as a class would have let in
                await as_worker.set(look_alike, "{}")
    finally:
        await as_worker.aclose()
        server.close()
