"""Discovery over Redis's own TLS, against a real redis-server that listens on TLS only and asks
every client for a certificate, all from the appliance's CA (`appliance certs`): a real worker
registers over rediss:// with its certificate and the orchestrator's pool routes a session to it.
A client that does not trust the appliance CA, or that has no certificate, gets no connection; a
plaintext URL to a host off loopback is refused at start, naming the setting that allows it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from redis_server import RedisServer
from services import ROOT, WorkerProcess

from appliance import certs
from appliance.config import ConfigError, OrchestratorSettings, load_settings
from appliance.orchestrator.operator_view import read_redis
from appliance.orchestrator.workers.routed_pool import RoutedPool

PASSWORD = "tls-redis-secret"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("ca")
    certs.create_ca(d)
    for name in ("redis", "orchestrator", "worker-a"):
        certs.issue(d, name, ["127.0.0.1", "localhost"])
    return d


@pytest.fixture(scope="module")
def tls_redis(pki):
    server = RedisServer(
        password=PASSWORD,
        tls={
            "cert": pki / "redis.crt",
            "key": pki / "redis.key",
            "ca": pki / "ca.crt",
            "client_cert": pki / "orchestrator.crt",
            "client_key": pki / "orchestrator.key",
        },
    )
    try:
        yield server
    finally:
        server.close()


def _settings(server: RedisServer, **discovery_settings) -> OrchestratorSettings:
    return load_settings(
        OrchestratorSettings, redis_url=server.url, redis_password=PASSWORD, discovery=discovery_settings
    )


async def test_a_worker_registers_over_tls_and_is_routed_to(pki, tls_redis):
    assert tls_redis.url.startswith("rediss://")
    worker = WorkerProcess(
        "--redis-url",
        tls_redis.url,
        env={
            "APPLIANCE_REDIS_PASSWORD": PASSWORD,
            "APPLIANCE_DISCOVERY__CA_FILE": str(pki / "ca.crt"),
            "APPLIANCE_DISCOVERY__CERT_FILE": str(pki / "worker-a.crt"),
            "APPLIANCE_DISCOVERY__KEY_FILE": str(pki / "worker-a.key"),
        },
    )
    settings = _settings(
        tls_redis,
        ca_file=pki / "ca.crt",
        cert_file=pki / "orchestrator.crt",
        key_file=pki / "orchestrator.key",
    )
    pool = RoutedPool.from_settings(settings)
    try:
        await asyncio.to_thread(worker.wait_ready)
        for _ in range(300):  # a guard against a worker that never registers, not a measurement
            records = (await read_redis(settings))["workers"]
            if records:
                break
            await asyncio.sleep(0.1)
        assert [r["address"] for r in records] == [worker.address], records
        await pool.start()
        client = await pool.start_session("tls-session")
        assert client.address == worker.address
        await client.end_session("tls-session")
        assert "Traceback" not in worker.log(), worker.log()[-4000:]
    finally:
        await pool.close()
        worker.stop()


async def test_no_connection_without_the_ca_or_without_a_client_certificate(pki, tls_redis):
    with pytest.raises(ConnectionError, match="certificate verify failed"):  # the system CAs only
        await read_redis(_settings(tls_redis))
    with pytest.raises(ConnectionError):  # Redis asks for a client certificate
        await read_redis(_settings(tls_redis, ca_file=pki / "ca.crt"))
    assert (
        await read_redis(
            _settings(
                tls_redis,
                ca_file=pki / "ca.crt",
                cert_file=pki / "orchestrator.crt",
                key_file=pki / "orchestrator.key",
            )
        )
    )["bad"] == []


def _pool_from(url: str, **discovery_settings) -> RoutedPool:
    settings = load_settings(
        OrchestratorSettings, redis_url=url, redis_password="x", discovery=discovery_settings
    )
    return RoutedPool.from_settings(settings)


def test_bad_tls_settings_are_start_up_errors_that_name_them(pki, tmp_path):
    with pytest.raises(ConfigError, match="allow_plaintext"):
        _pool_from("redis://192.0.2.7:6379/0")
    with pytest.raises(ConfigError, match="nope.crt"):
        _pool_from("rediss://192.0.2.7:6379/0", ca_file=tmp_path / "nope.crt")
    with pytest.raises(ConfigError, match="rediss://"):  # a CA is no use to a plaintext URL
        _pool_from("redis://127.0.0.1:6379/0", ca_file=pki / "ca.crt")


def test_a_worker_with_a_plaintext_url_to_another_host_does_not_start():
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "appliance",
            "tts-worker",
            "--port",
            "0",
            "--redis-url",
            "redis://192.0.2.7:6379/0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env={**os.environ, "APPLIANCE_MODELS__DEFAULT": "mock-sine", "APPLIANCE_METRICS_PORT": "0"},
    )
    assert done.returncode != 0, done.stdout + done.stderr
    assert "allow_plaintext" in done.stderr and "Traceback" not in done.stderr, done.stderr
