"""One deployment under test: a container, its free ports, an ssh key, a generated inventory, and
`ansible-playbook ansible/site.yml` against it. Figures are written to .artifacts/deploy/."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
from container import Container, rootfs_tarball
from grpc_health.v1 import health_pb2, health_pb2_grpc

from appliance.process import free_port, free_udp_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".artifacts/deploy"
FIGURES = ARTIFACTS / "figures.json"
WATCHDOG_SEC = 10
WORKER = "piper"
# Units every install must leave active (running); more `appliance*` units are checked as found.
REQUIRED_UNITS = (
    "appliance-orchestrator.service",
    f"appliance-tts@{WORKER}.service",
    "caddy.service",
    "redis-server.service",
)

_figures: dict = {}


def record(key: str, value) -> None:
    """Keep a figure and rewrite figures.json at once (a later failure keeps what was measured)."""
    _figures[key] = round(value, 2) if isinstance(value, float) else value
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    FIGURES.write_text(json.dumps(_figures, indent=2) + "\n")
    print(f"[deploy figure] {key} = {_figures[key]}", file=sys.stderr)


def site_playbook() -> Path:
    """ansible/site.yml, or APPLIANCE_DEPLOY_PLAYBOOK (to try a work-in-progress playbook)."""
    return Path(os.environ.get("APPLIANCE_DEPLOY_PLAYBOOK") or ROOT / "ansible/site.yml")


def ansible_playbook() -> str | None:
    beside = Path(sys.executable).parent / "ansible-playbook"
    return str(beside) if beside.exists() else shutil.which("ansible-playbook")


def bundle_for_session(out: Path, livekit_server: Path | None = None, source: Path | None = None) -> Path:
    """The full offline bundle, built from this tree (or APPLIANCE_DEPLOY_BUNDLE, a prebuilt one),
    or from ``source`` (another release's tree); with ``livekit_server``, `--livekit` carrying that
    binary."""
    given = os.environ.get("APPLIANCE_DEPLOY_BUNDLE")
    if given and source is None:
        return Path(given)
    t0 = time.monotonic()
    livekit = ["--livekit", str(livekit_server)] if livekit_server else []
    tree = ["--source", str(source)] if source else []
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "bundle", "--out", str(out), *tree, *livekit],
        cwd=source or ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert proc.returncode == 0, f"appliance bundle {' '.join(tree)} failed:\n{proc.stdout}\n{proc.stderr}"
    tar = Path(proc.stdout.strip().splitlines()[-1])
    if source is None:
        record("bundle_build_s", time.monotonic() - t0)
        record("bundle_mib", tar.stat().st_size / 2**20)
    return tar


def _free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


_RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


class PlaybookRun:
    def __init__(self, proc: subprocess.CompletedProcess, seconds: float, log: Path) -> None:
        self.returncode = proc.returncode
        self.output = proc.stdout
        self.seconds = seconds
        self.log = log
        # The play recap per host; .recap is the first host's (the one host of most inventories).
        self.recaps = {
            m.group(1): dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups()[1:])))
            for m in _RECAP.finditer(self.output)
        }
        self.recap = next(iter(self.recaps.values()), {})

    def tail(self, n: int = 6000) -> str:
        return f"(full log: {self.log})\n" + self.output[-n:]

    def changed_tasks(self) -> list[str]:
        """Task names whose result was 'changed' (for a readable idempotence failure)."""
        tasks, current = [], None
        for line in self.output.splitlines():
            if line.startswith("TASK ["):
                current = line[6:].split("]")[0]
            elif line.startswith("changed:") and current:
                tasks.append(current)
        return tasks


class Deployment:
    def __init__(
        self, work: Path, name: str, mode: str, bundle: Path | None, other_host=None, figures: bool = True
    ) -> None:
        """``other_host``: a :class:`netns.OtherHost` the container lives in (a second host, reached
        at its address) instead of this host's network namespace; ``figures``: record its boot and
        install times (the one deployment of a mode whose figures they are)."""
        self.work = work
        self.name = name
        self.mode = mode
        self.bundle = bundle
        self.other_host = other_host
        self.figures = figures
        self.address = other_host.address if other_host else "127.0.0.1"
        (
            self.ssh_port,
            self.http_port,
            self.https_port,
            self.orchestrator_port,
            self.redis_port,
            self.worker_port,
            self.worker_metrics_port,
            self.livekit_port,
            self.livekit_tcp_port,
            self.livekit_metrics_port,
        ) = _free_ports(10)
        self.livekit_udp_port = free_udp_port()
        self.key = work / "id_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deploy-test", "-f", str(self.key)],
            check=True,
        )
        self.container = Container(
            work / "root",
            name,
            ARTIFACTS / f"{name}-console.log",
            offline=(mode == "offline"),
            netns_path=other_host.path if other_host else None,
        )
        self.inventory = work / "inventory.yml"
        self.runs: list[PlaybookRun] = []
        self.install_run: PlaybookRun | None = None
        self.extra_vars: dict = {}  # more inventory variables (a test changing a setting)
        self.livekit = False  # appliance_livekit on (the offline fixture, where livekit-server builds)
        for old in ARTIFACTS.glob(f"{name}-*.log"):  # this session's logs only
            old.unlink()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    # -------------------------------------------------------------- container
    def boot(self) -> None:
        tarball = rootfs_tarball(log=lambda m: print(m, file=sys.stderr))
        self.container.log_path.unlink(missing_ok=True)
        self.container.unpack(tarball)
        self.container.setup_ssh(self.ssh_port, self.key.with_suffix(".pub").read_text(), self.address)
        t0 = self.container.boot()
        state = self.container.wait_running(60)
        if self.figures:
            record(f"{self.mode}_container_boot_s", time.monotonic() - t0)
        assert state in ("running", "degraded"), f"container: {state!r}\n{self.container.console()}"
        self.write_inventory()

    def teardown(self) -> None:
        try:
            self.save_journal()
        finally:
            self.container.destroy()

    def save_journal(self) -> None:
        if self.container.leader:
            out = self.container.run(
                "journalctl", "--no-pager", "-o", "short-monotonic", "-n", "3000", check=False
            )
            (ARTIFACTS / f"{self.name}-journal.log").write_text(out.stdout + out.stderr)

    # -------------------------------------------------------------- ansible
    def host_vars(self) -> dict:
        v = {
            "ansible_host": self.address,
            "ansible_port": self.ssh_port,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            "ansible_python_interpreter": "/usr/bin/python3",
            "appliance_install_mode": self.mode,
            "appliance_host": "localhost",
            "appliance_http_port": self.http_port,
            "appliance_https_port": self.https_port,
            "appliance_orchestrator_port": self.orchestrator_port,
            "appliance_redis_port": self.redis_port,
            "appliance_tts_workers": [
                {"name": WORKER, "port": self.worker_port, "metrics_port": self.worker_metrics_port}
            ],
            "appliance_watchdog_sec": WATCHDOG_SEC,
            # Used where a test turns appliance_livekit on (the host's network namespace: free ports).
            "appliance_livekit_port": self.livekit_port,
            "appliance_livekit_tcp_port": self.livekit_tcp_port,
            "appliance_livekit_udp_port": self.livekit_udp_port,
            "appliance_livekit_metrics_port": self.livekit_metrics_port,
            "appliance_livekit_node_ip": "127.0.0.1",
        }
        if self.bundle is not None:
            v["appliance_bundle_src"] = str(self.bundle)
        return {**v, **self.extra_vars}

    def write_inventory(self) -> None:
        inv = {"all": {"hosts": {"appliance-test": self.host_vars()}}}
        self.inventory.write_text(json.dumps(inv, indent=2) + "\n")  # JSON is YAML

    def ansible_env(self) -> dict[str, str]:
        tmp = self.work / "ansible-tmp"
        tmp.mkdir(exist_ok=True)
        return {
            **os.environ,
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_LOCAL_TEMP": str(tmp),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp / "cp"),
            "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
        }

    def playbook(
        self, playbook: Path | None = None, timeout: float = 1500, label: str = "site"
    ) -> PlaybookRun:
        playbook = playbook or site_playbook()
        log = ARTIFACTS / f"{self.name}-{label}-{len(self.runs) + 1}.log"
        t0 = time.monotonic()
        proc = subprocess.run(
            [ansible_playbook(), "-i", str(self.inventory), str(playbook)],
            cwd=playbook.parent,
            env=self.ansible_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        run = PlaybookRun(proc, time.monotonic() - t0, log)
        log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
        if proc.returncode != 0:
            run.output += "\n" + proc.stderr
        self.runs.append(run)
        return run

    def install(self) -> PlaybookRun:
        run = self.playbook()
        assert run.returncode == 0 and run.recap.get("failed") == 0, f"site.yml failed:\n{run.tail()}"
        if self.figures:
            record(f"{self.mode}_fresh_install_s", run.seconds)
        self.install_run = run
        return run

    # -------------------------------------------------------------- units
    def appliance_units(self) -> list[str]:
        out = self.container.run(
            "systemctl", "list-units", "--all", "--plain", "--no-legend", "appliance*"
        ).stdout
        found = [line.split()[0] for line in out.splitlines() if line.strip()]
        return sorted(set(found) | set(REQUIRED_UNITS) | ({"livekit.service"} if self.livekit else set()))

    def unit_states(self) -> dict[str, tuple[str, str]]:
        """Every appliance service (and caddy, redis): (ActiveState, SubState); targets are left out."""
        states = {}
        for unit in self.appliance_units():
            if unit.endswith(".service"):
                p = self.container.systemctl_show(unit, "ActiveState", "SubState")
                states[unit] = (p.get("ActiveState", "?"), p.get("SubState", "?"))
        return states

    def caddy_root_ca(self) -> Path:
        return self.container.path("var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt")

    @property
    def https(self) -> str:
        return f"https://localhost:{self.https_port}"

    @property
    def access_secret(self) -> str:
        """What the playbook made at the first install (clients through Caddy need it)."""
        return self.container.path("etc/appliance/access_secret").read_text().strip()


# ------------------------------------------------------------------ checks from the host


def ssl_context(dep) -> ssl.SSLContext:
    roots = [dep.caddy_root_ca(), *dep.container.path("var/lib").glob("**/pki/authorities/local/root.crt")]
    root = next((p for p in roots if p.exists()), None)
    assert root is not None, "no Caddy internal root CA in the container"
    return ssl.create_default_context(cafile=str(root))


def healthz(dep, timeout: float = 30) -> tuple[int, bytes]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(dep.https + "/healthz", timeout=5, context=ssl_context(dep)) as r:
                return r.status, r.read()
        except (OSError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def differences_from_the_checkout(dep) -> list[str]:
    """How the appliance installed in the container's venv differs from this checkout's appliance/
    (every module by the sha256 its wheel's RECORD holds); empty when it is this tree's code."""
    records = sorted(
        dep.container.path("opt/appliance/venv/lib").glob(
            "python3*/site-packages/appliance-*.dist-info/RECORD"
        )
    )
    assert len(records) == 1, f"not one appliance installed: {records}"
    installed = {}
    for line in records[0].read_text().splitlines():
        path, digest, _ = line.rsplit(",", 2)
        if path.startswith("appliance/") and path.endswith(".py"):
            installed[path] = digest
    here = {}
    for p in sorted((ROOT / "appliance").rglob("*.py")):
        raw = hashlib.sha256(p.read_bytes()).digest()
        here[p.relative_to(ROOT).as_posix()] = "sha256=" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return (
        [f"only installed: {p}" for p in sorted(installed.keys() - here.keys())]
        + [f"only in the checkout: {p}" for p in sorted(here.keys() - installed.keys())]
        + [f"differs: {p}" for p in sorted(here.keys() & installed.keys()) if here[p] != installed[p]]
    )


def seconds(value: str) -> float:
    """systemd's time span ("10s", "1min 30s", "500ms") in seconds."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1, "min": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)\s*(us|ms|min|s|h)", value))


TLS_DIR = "etc/appliance/tls"


def grpc_credentials(dep, client_cert: bool = True) -> grpc.ChannelCredentials | None:
    """The orchestrator's view of the workers' gRPC: the appliance CA and its client certificate
    (None where the playbook set up no TLS)."""
    tls = dep.container.path(TLS_DIR)
    if not (tls / "ca.crt").exists():
        return None
    if not client_cert:
        return grpc.ssl_channel_credentials(root_certificates=(tls / "ca.crt").read_bytes())
    return grpc.ssl_channel_credentials(
        root_certificates=(tls / "ca.crt").read_bytes(),
        private_key=(tls / "orchestrator.key").read_bytes(),
        certificate_chain=(tls / "orchestrator.crt").read_bytes(),
    )


def worker_health(
    port: int, credentials: grpc.ChannelCredentials | None, timeout: float = 5, host: str = "127.0.0.1"
) -> int:
    """One gRPC health check of the worker on host:port (raises grpc.RpcError)."""
    target = f"{host}:{port}"
    with (
        grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    ) as channel:
        return (
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout).status
        )


def worker_serving(dep, timeout: float) -> bool:
    """Whether the worker answers SERVING within timeout, dialled as the orchestrator dials it."""
    credentials = grpc_credentials(dep)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if worker_health(dep.worker_port, credentials, 2) == health_pb2.HealthCheckResponse.SERVING:
                return True
        except grpc.RpcError:
            pass
        time.sleep(0.3)
    return False


def redis_cli(dep, *args: str, user: str | None = None) -> str:
    """redis-cli in the container, as the default user or as `user` (with its generated password);
    what it printed (replies and errors alike)."""
    cmd = ["redis-cli", "-p", str(dep.redis_port)]
    if user is not None:
        password = dep.container.path(f"etc/appliance/redis/{user}.password").read_text().strip()
        cmd += ["--user", user, "--pass", password, "--no-auth-warning"]
    out = dep.container.run(*cmd, *args, check=False)
    return (out.stdout + out.stderr).strip()


def wait_units_running(dep, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        states = dep.unit_states()
        if all(s == ("active", "running") for s in states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(0.3)
