"""The real playbook across two hosts: the appliance in one bookworm container (this host's network
namespace), a TTS worker box in a second one with a network namespace of its own (a veth pair, its
own address), both installed offline by one run of ansible/site.yml with the second in group
tts_hosts. The box's worker gets its certificate and Redis user from the appliance host; gRPC between
the hosts is mutual TLS and Redis beyond loopback is TLS only, with a client certificate.

The tests run in file order against the two containers (module fixture `two_hosts`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from types import SimpleNamespace

import grpc
import netns
import pytest
from deployment import (
    WATCHDOG_SEC,
    WORKER,
    Deployment,
    grpc_credentials,
    record,
    wait_units_running,
    worker_health,
)
from grpc_health.v1 import health_pb2
from turns import spoken_turn_through_caddy

from appliance import certs
from appliance.process import free_port

BOX_WORKER = "box"
KEY_PREFIX = "appliance:"


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory, bundle_tar):
    work = tmp_path_factory.mktemp("two-hosts")
    for part in ("main", "box"):
        (work / part).mkdir()
    with netns.other_host("box", os.getpid() % 30 + 225) as net:
        main = Deployment(work / "main", "appl-main", "offline", bundle_tar, figures=False)
        box = Deployment(work / "box", "appl-box", "offline", bundle_tar, other_host=net, figures=False)
        box_port, box_metrics = free_port(), free_port()
        try:
            main.boot()
            box.boot()
            main.extra_vars["appliance_redis_tls_address"] = net.ours
            # What is under test is where the reply is spoken, not what it says: the echo responder.
            main.extra_vars["appliance_llm"] = {"kind": "echo"}
            inventory = {
                "all": {
                    "hosts": {"appliance-test": main.host_vars()},
                    "children": {
                        "tts_hosts": {
                            "hosts": {
                                "tts-box": {
                                    **{k: v for k, v in box.host_vars().items() if k.startswith("ansible_")},
                                    "appliance_install_mode": "offline",
                                    "appliance_bundle_src": str(bundle_tar),
                                    "appliance_watchdog_sec": WATCHDOG_SEC,
                                    "appliance_tts_workers": [
                                        {"name": BOX_WORKER, "port": box_port, "metrics_port": box_metrics}
                                    ],
                                }
                            }
                        }
                    },
                }
            }
            main.inventory.write_text(json.dumps(inventory, indent=2) + "\n")  # JSON is YAML
            run = main.playbook(label="two-hosts")
            yield SimpleNamespace(
                main=main, box=box, net=net, port=box_port, metrics_port=box_metrics, run=run
            )
        finally:
            try:
                box.teardown()
            finally:
                main.teardown()


def _ok(run) -> None:
    assert run.returncode == 0, run.tail()
    assert set(run.recaps) == {"appliance-test", "tts-box"}, run.tail()
    for host, recap in run.recaps.items():
        assert recap["failed"] == 0 and recap["unreachable"] == 0, (host, run.tail())


def test_one_run_sets_up_the_appliance_and_the_worker_box(two_hosts):
    _ok(two_hosts.run)
    record("two_hosts_fresh_install_s", two_hosts.run.seconds)
    box = two_hosts.box.container
    # The box runs its worker and nothing of the appliance host's.
    states = {
        unit: box.systemctl_show(unit, "ActiveState", "LoadState")
        for unit in (
            f"appliance-tts@{BOX_WORKER}.service",
            "appliance-orchestrator.service",
            "redis-server.service",
        )
    }
    assert states[f"appliance-tts@{BOX_WORKER}.service"]["ActiveState"] == "active", states
    assert states["appliance-orchestrator.service"]["LoadState"] == "not-found", states
    assert states["redis-server.service"]["LoadState"] == "not-found", states
    # Its secrets are its own worker's only, never the CA's key or another service's.
    tls = sorted(p.name for p in box.path("etc/appliance/tls").iterdir())
    assert tls == ["ca.crt", f"worker-{BOX_WORKER}.crt", f"worker-{BOX_WORKER}.key"], tls
    assert not box.path("etc/appliance/ca").exists()
    assert sorted(p.name for p in box.path("etc/appliance/redis").iterdir()) == [
        f"worker-{BOX_WORKER}.password"
    ]
    key = box.path(f"etc/appliance/tls/worker-{BOX_WORKER}.key").stat()
    assert oct(key.st_mode & 0o777) == "0o600"
    # The appliance host's own units run as on one host.
    states = wait_units_running(two_hosts.main, 60)
    assert all(s == ("active", "running") for s in states.values()), states


def _box_worker_serving(two_hosts, credentials, timeout: float = 60) -> int | str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return worker_health(two_hosts.port, credentials, 3, host=two_hosts.net.address)
        except grpc.RpcError as exc:
            if time.monotonic() > deadline:
                return exc.code().name
            time.sleep(0.5)


def test_the_box_worker_answers_only_over_mutual_tls_from_the_appliance_ca(two_hosts, tmp_path):
    serving = health_pb2.HealthCheckResponse.SERVING
    assert _box_worker_serving(two_hosts, grpc_credentials(two_hosts.main)) == serving
    # Plaintext, TLS without a client certificate, and a client of another CA are all refused.
    other = tmp_path / "other-ca"
    certs.create_ca(other)
    certs.issue(other, "orchestrator", ["127.0.0.1"])
    ca = two_hosts.main.container.path("etc/appliance/tls/ca.crt").read_bytes()
    refused = {
        "plaintext": None,
        "no client certificate": grpc_credentials(two_hosts.main, client_cert=False),
        "another CA's client": grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=(other / "orchestrator.key").read_bytes(),
            certificate_chain=(other / "orchestrator.crt").read_bytes(),
        ),
    }
    for what, credentials in refused.items():
        with pytest.raises(grpc.RpcError):
            worker_health(two_hosts.port, credentials, 3, host=two_hosts.net.address)
            pytest.fail(f"{what}: answered")


def _redis_cli(
    two_hosts, *args: str, tls: bool = True, client: bool = True, as_orchestrator: bool = False
) -> str:
    """redis-cli to the appliance host's Redis beyond loopback: from the box's network namespace as
    the box worker (its files), or from the appliance host's as the orchestrator (its files)."""
    dep, ns, user = two_hosts.box, ["ip", "netns", "exec", two_hosts.net.ns], f"worker-{BOX_WORKER}"
    if as_orchestrator:
        dep, ns, user = two_hosts.main, [], "orchestrator"
    c = dep.container
    cmd = [*ns, "redis-cli", "-h", two_hosts.net.ours, "-p", str(two_hosts.main.redis_port)]
    if tls:
        cmd += ["--tls", "--cacert", str(c.path("etc/appliance/tls/ca.crt"))]
    if client:
        cmd += ["--cert", str(c.path(f"etc/appliance/tls/{user}.crt"))]
        cmd += ["--key", str(c.path(f"etc/appliance/tls/{user}.key"))]
    password = c.path(f"etc/appliance/redis/{user}.password").read_text().strip()
    cmd += ["--user", user, "--pass", password, "--no-auth-warning"]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=20, check=False)
    return (proc.stdout + proc.stderr).strip()


def test_redis_beyond_loopback_is_tls_only_and_the_box_worker_writes_only_its_record(two_hosts):
    record_key = f"{KEY_PREFIX}worker:{two_hosts.net.address}:{two_hosts.port}"
    assert _redis_cli(two_hosts, "PING") == "PONG"
    # Its record is there, under the address it advertises (the box's, not loopback).
    assert f'"{two_hosts.net.address}:{two_hosts.port}"' in _redis_cli(
        two_hosts, "GET", record_key, as_orchestrator=True
    )
    assert "NOPERM" in _redis_cli(two_hosts, "SET", f"{KEY_PREFIX}worker:10.0.0.9:7001", "{}")
    assert "NOPERM" in _redis_cli(
        two_hosts, "GET", f"{KEY_PREFIX}worker:127.0.0.1:{two_hosts.main.worker_port}"
    )
    # No plaintext and no TLS client without a certificate of the appliance CA.
    assert "PONG" not in _redis_cli(two_hosts, "PING", tls=False, client=False)
    assert "PONG" not in _redis_cli(two_hosts, "PING", client=False)


async def test_a_spoken_turn_is_answered_by_the_box_worker(two_hosts):
    main = two_hosts.main
    # The appliance host's own worker stops: only the box can speak the reply.
    main.container.run("systemctl", "stop", f"appliance-tts@{WORKER}.service")
    try:
        before = _box_frames(two_hosts)
        metrics = await spoken_turn_through_caddy(main)
        # The worker counts a stream's frames once the stream is over, which may be just after the
        # client has heard its end.
        deadline = time.monotonic() + 15
        while (after := _box_frames(two_hosts)) <= before and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert after > before, (before, after)
        record("two_hosts_voice_to_voice_ms", metrics["voice_to_voice_ms"])
    finally:
        main.container.run("systemctl", "start", f"appliance-tts@{WORKER}.service")


def _box_frames(two_hosts) -> float:
    """appliance_tts_frames_total of the box worker, read from its metrics port in the box."""
    out = two_hosts.box.container.run(
        "/opt/appliance/venv/bin/python",
        "-c",
        "import urllib.request,sys;"
        f"print(urllib.request.urlopen('http://127.0.0.1:{two_hosts.metrics_port}/metrics',timeout=5).read().decode())",
    ).stdout
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in out.splitlines()
        if line.startswith("appliance_tts_frames_total{")
    )


def test_a_second_run_changes_nothing_on_either_host(two_hosts):
    run = two_hosts.main.playbook(label="two-hosts")
    _ok(run)
    changed = {host: recap["changed"] for host, recap in run.recaps.items()}
    assert changed == {"appliance-test": 0, "tts-box": 0}, (changed, run.changed_tasks())
    record("two_hosts_rerun_s", run.seconds)
