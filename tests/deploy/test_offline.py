"""The real playbook, offline mode: `appliance bundle` → ansible/site.yml over ssh into a booted
bookworm container with no name service → the appliance runs under systemd.

The tests run in file order against one container (module fixtures `booted`, then `offline`),
torn down when the module ends."""

from __future__ import annotations

import json
import re
import time
import urllib.request

import grpc
import pytest
from deployment import (
    WORKER,
    bundle_for_session,
    differences_from_the_checkout,
    grpc_credentials,
    healthz,
    record,
    redis_cli,
    seconds,
    ssl_context,
    wait_units_running,
    worker_health,
    worker_serving,
)
from grpc_health.v1 import health_pb2
from livekit_turn import check_turn, exposure, livekit_metrics, spoken_turn
from speech import listen, wer
from turns import spoken_turn_through_caddy
from upgrade import files_with_identity, next_release, starts_since

from appliance.transport.ws_client import WsClient

RATE = 16000
SAY_AGAIN = "The service is running again, thank you for waiting."
WORKER_UNIT = f"appliance-tts@{WORKER}.service"
VENV = "/opt/appliance/venv"
MODELS_DIR = "/var/lib/appliance/models"


# ------------------------------------------------------------------ install


def test_container_runs_systemd_and_ansible_reaches_it(booted, tmp_path):
    c = booted.container
    assert c.run("systemctl", "is-system-running").stdout.strip() in ("running", "degraded")
    assert c.run("cat", "/proc/1/comm").stdout.strip() == "systemd"
    play = tmp_path / "ping.yml"
    play.write_text(
        "- hosts: all\n  gather_facts: true\n  tasks:\n"
        "    - ansible.builtin.ping:\n"
        "    - ansible.builtin.copy: {dest: /root/harness-was-here, content: ok}\n"
        "    - ansible.builtin.assert: {that: [ansible_facts.distribution_release == 'bookworm',"
        " ansible_facts.service_mgr == 'systemd']}\n"
    )
    run = booted.playbook(play, timeout=300, label="harness")
    assert run.returncode == 0 and run.recap.get("failed") == 0, run.tail()
    assert (c.path("root/harness-was-here")).read_text() == "ok"
    # Offline: the container has no name service, so nothing can quietly reach a mirror.
    assert c.run("getent", "hosts", "deb.debian.org", check=False).returncode != 0


def test_fresh_install_from_the_bundle(offline):
    run = offline.install_run
    assert run.recap["failed"] == 0 and run.recap["unreachable"] == 0, run.tail()
    out = offline.container.run(
        f"{VENV}/bin/python", "-c", "import importlib.metadata as m; print(m.version('appliance'))"
    ).stdout.strip()
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", out), out
    # The appliance is the wheel of this checkout (built on the controller), its dependencies the bundle's.
    assert differences_from_the_checkout(offline) == []
    assert offline.container.run("id", "-u", "appliance", check=False).returncode == 0, "no appliance user"


def test_target_active_and_every_unit_running(offline):
    assert (
        offline.container.run("systemctl", "is-active", "appliance.target", check=False).stdout.strip()
        == "active"
    )
    states = wait_units_running(offline, 60)
    bad = {u: s for u, s in states.items() if s != ("active", "running")}
    assert not bad, f"not active (running): {bad}"


def test_the_access_secret_is_made_once_0600_for_the_service_and_printed_once(offline):
    secret = offline.container.path("etc/appliance/access_secret")
    st = secret.stat()
    assert oct(st.st_mode & 0o777) == "0o600"
    owner = offline.container.run("stat", "-c", "%U", "/etc/appliance/access_secret").stdout.strip()
    assert owner == "appliance"
    assert offline.access_secret in offline.install_run.output  # shown by the first install


def test_healthz_answers_through_caddy_over_https(offline):
    status, body = healthz(offline)
    assert status == 200, body
    # Plain HTTP to the TLS port is refused: it really is TLS in front.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://localhost:{offline.https_port}/healthz", timeout=5).read()


async def test_a_spoken_turn_through_caddy_gets_a_transcript_and_reply_audio(offline):
    metrics = await spoken_turn_through_caddy(offline)
    record("offline_voice_to_voice_ms", metrics["voice_to_voice_ms"])


async def test_the_livekit_role_serves_a_spoken_turn_through_caddy(offline):
    if not offline.livekit:
        pytest.skip("livekit-server could not be built on this host (no Go): the bundle has none")
    c = offline.container
    assert c.systemctl_show("livekit.service", "ActiveState", "SubState", "PartOf") == {
        "ActiveState": "active",
        "SubState": "running",
        "PartOf": "appliance.target",
    }
    record("livekit_security_exposure", exposure(offline, "livekit.service"))
    assert exposure(offline, "livekit.service") <= 2.0
    secret = c.path("etc/appliance/livekit.secret").read_text().strip()
    assert len(secret) >= 32
    assert c.run("stat", "-c", "%U:%G %a", "/etc/appliance/livekit.secret").stdout.split() == [
        "root:appliance",
        "640",
    ]
    assert c.run("stat", "-c", "%U:%G %a", "/etc/appliance/livekit/keys.yaml").stdout.split() == [
        "root:root",
        "600",
    ]
    assert "livekit_" in livekit_metrics(offline)

    turn = await spoken_turn(offline)
    check_turn(turn, offline.https_port)
    journal = c.run(
        "journalctl", "--no-pager", "-u", "livekit", "-u", "appliance-orchestrator", check=False
    ).stdout
    assert secret not in journal


# ------------------------------------------------------------------ gRPC TLS and Redis users


def _owner_mode(c, path: str) -> tuple[str, str]:
    return tuple(c.run("stat", "-c", "%U %a", path).stdout.split())


def test_the_worker_speaks_grpc_only_over_mutual_tls(offline):
    """The spoken turn above went through it: the orchestrator dials its loopback worker over TLS
    (loopback = true) with its client certificate; nothing else gets an answer."""
    c = offline.container
    assert _owner_mode(c, "/etc/appliance/ca") == ("root", "700")
    assert _owner_mode(c, "/etc/appliance/ca/ca.key") == ("root", "600")
    for name in ("orchestrator", f"worker-{WORKER}"):
        assert _owner_mode(c, f"/etc/appliance/tls/{name}.key") == ("appliance", "600")
        assert _owner_mode(c, f"/etc/appliance/tls/{name}.crt") == ("appliance", "640")
    denied = c.run("runuser", "-u", "appliance", "--", "cat", "/etc/appliance/ca/ca.key", check=False)
    assert denied.returncode != 0, "the service user can read the CA key"
    assert "APPLIANCE_TLS__LOOPBACK=true" in c.path("etc/appliance/orchestrator.env").read_text()

    serving = health_pb2.HealthCheckResponse.SERVING
    assert worker_health(offline.worker_port, grpc_credentials(offline)) == serving
    with pytest.raises(grpc.RpcError) as plaintext:
        worker_health(offline.worker_port, None)
    assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE, plaintext.value
    with pytest.raises(grpc.RpcError) as no_client_cert:
        worker_health(offline.worker_port, grpc_credentials(offline, client_cert=False))
    assert no_client_cert.value.code() == grpc.StatusCode.UNAVAILABLE, no_client_cert.value


def test_redis_has_one_user_per_role_and_no_default_user(offline):
    c = offline.container
    worker = f"worker-{WORKER}"
    key = f"appliance:worker:127.0.0.1:{offline.worker_port}"
    assert "NOAUTH" in redis_cli(offline, "PING")  # the default user is off
    assert "NOAUTH" in redis_cli(offline, "KEYS", "*")
    # The worker registered as its own user; the orchestrator's reads the record, and only reads.
    record_json = redis_cli(offline, "GET", key, user="orchestrator")
    assert json.loads(record_json)["name"] == WORKER, record_json
    assert "NOPERM" in redis_cli(offline, "SET", key, "{}", user="orchestrator")
    # The worker's user is authenticated (PONG) but may touch nothing beyond its own record.
    assert redis_cli(offline, "PING", user=worker) == "PONG"
    assert "NOPERM" in redis_cli(offline, "FLUSHALL", user=worker)
    assert "NOPERM" in redis_cli(offline, "SET", "appliance:worker:127.0.0.1:1", "{}", user=worker)
    assert "NOPERM" in redis_cli(offline, "DEL", "appliance:worker:127.0.0.1:1", user=worker)
    assert "NOPERM" in redis_cli(offline, "PUBLISH", "elsewhere", "hi", user=worker)
    assert json.loads(redis_cli(offline, "GET", key, user="orchestrator"))["name"] == WORKER
    for user in ("orchestrator", worker):
        assert _owner_mode(c, f"/etc/appliance/redis/{user}.password") == ("appliance", "600")
    acl = c.path("etc/redis/users.acl").read_text()
    assert "user default off" in acl
    for user in ("orchestrator", worker):
        assert c.path(f"etc/appliance/redis/{user}.password").read_text().strip() not in acl
    assert not c.path("etc/appliance/redis.password").exists()  # no shared password any more


# ------------------------------------------------------------------ operations


def test_watchdog_restarts_a_stopped_worker(offline):
    c = offline.container
    before = c.systemctl_show(WORKER_UNIT, "MainPID", "NRestarts", "WatchdogUSec")
    pid, restarts = int(before["MainPID"]), int(before["NRestarts"])
    watchdog = seconds(before["WatchdogUSec"])
    assert pid > 0 and watchdog > 0, before
    c.run("kill", "-STOP", str(pid))
    t0 = time.monotonic()
    # The process stops pinging; systemd aborts it after WatchdogSec and Restart= brings it back.
    deadline = t0 + watchdog + 60
    now = before
    while time.monotonic() < deadline:
        now = c.systemctl_show(WORKER_UNIT, "MainPID", "NRestarts", "ActiveState", "SubState")
        if (
            int(now["NRestarts"]) > restarts
            and now["MainPID"] not in ("0", str(pid))
            and now["ActiveState"] == "active"
        ):
            break
        time.sleep(0.5)
    else:
        c.run("kill", "-CONT", str(pid), check=False)
        pytest.fail(f"not restarted within WatchdogSec ({watchdog:.0f} s) + 60 s: {now}")
    back = time.monotonic() - t0
    log = c.run("journalctl", "-u", WORKER_UNIT, "--no-pager", "-n", "200").stdout
    assert "watchdog" in log.lower(), log[-3000:]
    assert worker_serving(offline, 60), "the restarted worker does not answer gRPC health"
    record("watchdog_sec", watchdog)
    record("watchdog_stop_to_active_again_s", back)


async def test_the_orchestrator_speaks_again_after_the_worker_restart(offline):
    client = WsClient(f"wss://localhost:{offline.https_port}/ws", ssl=ssl_context(offline))
    await client.connect(RATE, token=offline.access_secret)
    try:
        await client.send_json({"type": "say", "text": SAY_AGAIN})
        await client.wait_for(lambda: client.rx.of_type("reply_end"), 60)
    finally:
        await client.close()
    assert client.rx.frames, client.rx.events
    heard = listen(client.rx.audio(), 48000, SAY_AGAIN)
    assert wer(SAY_AGAIN, heard) <= 0.3, heard


def test_models_verify_passes_and_fails_after_one_byte_changes(offline):
    c = offline.container
    appliance = f"{VENV}/bin/appliance"
    if c.run(appliance, "models", "verify", "--help", check=False).returncode != 0:
        pytest.skip("`appliance models verify` is not in this tree yet (models branch)")
    ok = c.run(appliance, "models", "verify", "--dir", MODELS_DIR, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    files = [p for p in c.path(MODELS_DIR).rglob("*") if p.is_file() and not p.is_symlink()]
    assert files, f"nothing in {MODELS_DIR}"
    victim = max(files, key=lambda p: p.stat().st_size)
    offset = victim.stat().st_size // 2
    with victim.open("r+b") as f:
        f.seek(offset)
        original = f.read(1)
        f.seek(offset)
        f.write(bytes([original[0] ^ 0x01]))
    try:
        bad = c.run(appliance, "models", "verify", "--dir", MODELS_DIR, check=False)
        assert bad.returncode != 0, f"verify passed with one byte of {victim.name} changed:\n{bad.stdout}"
        assert victim.name in bad.stdout + bad.stderr, bad.stdout + bad.stderr
    finally:
        with victim.open("r+b") as f:
            f.seek(offset)
            f.write(original)
    again = c.run(appliance, "models", "verify", "--dir", MODELS_DIR, check=False)
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_second_run_changes_nothing(offline):
    run = offline.playbook()
    assert run.returncode == 0, run.tail()
    record("offline_rerun_s", run.seconds)
    assert run.recap["changed"] == 0, (
        f"changed={run.recap['changed']}: {run.changed_tasks()}\n{run.tail(3000)}"
    )


def test_a_removed_worker_certificate_is_issued_again_and_only_that_worker_restarts(offline):
    """How to re-issue a certificate (docs/access.md): remove it from the CA directory, rerun."""
    c = offline.container
    units = ("appliance-orchestrator.service", WORKER_UNIT)
    pids = {u: c.systemctl_show(u, "MainPID")["MainPID"] for u in units}
    installed = c.path(f"etc/appliance/tls/worker-{WORKER}.crt")
    ca, old = c.path("etc/appliance/tls/ca.crt").read_bytes(), installed.read_bytes()
    c.path(f"etc/appliance/ca/worker-{WORKER}.crt").unlink()
    run = offline.playbook()
    assert run.returncode == 0 and run.recap["failed"] == 0, run.tail()
    assert installed.read_bytes() != old, "not issued again"
    assert c.path("etc/appliance/tls/ca.crt").read_bytes() == ca, "the CA was made again"
    after = {u: c.systemctl_show(u, "MainPID")["MainPID"] for u in units}
    assert after[WORKER_UNIT] != pids[WORKER_UNIT], "the worker still serves the old certificate"
    assert after["appliance-orchestrator.service"] == pids["appliance-orchestrator.service"]
    assert worker_serving(offline, 60), "the worker does not answer over TLS with its new certificate"
    assert all(s == ("active", "running") for s in wait_units_running(offline, 60).values())


def test_operator_edits_survive_a_rerun_and_a_setting_restarts_only_its_service(offline):
    c = offline.container
    units = ("appliance-orchestrator.service", WORKER_UNIT)

    def pids() -> dict[str, str]:
        return {u: c.systemctl_show(u, "MainPID")["MainPID"] for u in units}

    toml = c.path("etc/appliance/orchestrator.toml")
    text = toml.read_text()
    edited = re.sub(r"(?m)^aggressiveness = \d+", "aggressiveness = 3", text)
    assert edited != text, "no [vad] aggressiveness line to edit"
    toml.write_text(edited)
    before = pids()
    run = offline.playbook()
    assert run.returncode == 0 and run.recap["changed"] == 0, f"{run.changed_tasks()}\n{run.tail(3000)}"
    assert toml.read_text() == edited, "the operator's orchestrator.toml was rewritten"
    assert pids() == before, "a rerun with nothing to do restarted a service"

    offline.extra_vars["appliance_orchestrator_env"] = {"LOG_LEVEL": "debug"}
    offline.write_inventory()
    run = offline.playbook()
    assert run.returncode == 0 and run.recap["changed"] > 0, run.tail()
    after = pids()
    assert after[WORKER_UNIT] == before[WORKER_UNIT], "an orchestrator setting restarted the worker"
    assert after["appliance-orchestrator.service"] != before["appliance-orchestrator.service"], "not applied"
    assert all(s == ("active", "running") for s in wait_units_running(offline, 60).values())
    assert toml.read_text() == edited


def test_boot_to_appliance_target_active(offline):
    """A cold boot of the installed container (halt, then systemd-nspawn --boot again) until
    appliance.target is active: the worker is READY only with its model loaded and warm."""
    c = offline.container
    c.halt()
    t0 = c.boot()
    deadline = t0 + 120
    while time.monotonic() < deadline:
        if c.run("systemctl", "is-active", "appliance.target", check=False).stdout.strip() == "active":
            break
        time.sleep(0.1)
    else:
        pytest.fail(
            f"appliance.target not active 120 s after boot:\n{c.run('systemctl', '--failed', check=False).stdout}"
        )
    record("boot_to_appliance_target_active_s", time.monotonic() - t0)
    states = wait_units_running(offline, 60)
    assert all(s == ("active", "running") for s in states.values()), states
    healthz(offline, 60)
    record("boot_to_healthz_through_caddy_s", time.monotonic() - t0)

    t1 = time.monotonic()
    c.run("systemctl", "restart", "appliance.target", timeout=180)
    record("restart_appliance_target_s", time.monotonic() - t1)
    assert c.run("systemctl", "is-active", "appliance.target", check=False).stdout.strip() == "active"
    assert worker_serving(offline, 30)


# ------------------------------------------------------------------ upgrade


async def test_the_next_release_s_bundle_upgrades_in_place(offline, tmp_path, livekit_binary_for_the_bundle):
    """The operator's upgrade: the next release's bundle, then site.yml from that release. Their
    config edits are kept, every appliance service restarts exactly once (others at most once),
    the models are not touched, and the appliance answers on the new version."""
    c = offline.container
    tree, version = next_release(tmp_path / "next")
    tar = bundle_for_session(tmp_path / "bundle", livekit_binary_for_the_bundle, source=tree)
    configs = [c.path("etc/appliance/orchestrator.toml"), c.path(f"etc/appliance/tts/{WORKER}.toml")]
    for config in configs:
        config.write_text(config.read_text() + "# the operator's note, kept across upgrades\n")
    edited = [config.read_bytes() for config in configs]
    models = files_with_identity(c, MODELS_DIR)
    units = [u for u in offline.appliance_units() if u.endswith(".service")]
    since = int(c.run("date", "+%s").stdout)

    offline.bundle = tar
    offline.write_inventory()
    run = offline.playbook(tree / "ansible/site.yml", label="upgrade")
    assert run.returncode == 0 and run.recap["failed"] == 0, run.tail()
    record("offline_upgrade_s", run.seconds)

    installed = c.run(f"{VENV}/bin/appliance", "--version").stdout
    assert version in installed, installed
    assert [config.read_bytes() for config in configs] == edited, "an operator's config was rewritten"
    assert files_with_identity(c, MODELS_DIR) == models, "the upgrade touched the models"
    started = starts_since(c, since)
    for unit in units:
        expected = (1,) if unit.startswith("appliance") else (0, 1)
        assert started.get(unit, 0) in expected, f"{unit} started {started.get(unit, 0)} times: {started}"
    assert all(s == ("active", "running") for s in wait_units_running(offline, 60).values())
    assert worker_serving(offline, 60)
    await spoken_turn_through_caddy(offline)
    rerun = offline.playbook(tree / "ansible/site.yml", label="upgrade-rerun")
    assert rerun.returncode == 0 and rerun.recap["changed"] == 0, rerun.changed_tasks()
