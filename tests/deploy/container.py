"""A real Debian bookworm system under systemd, in a `systemd-nspawn --boot` container.

The root filesystem comes from debootstrap once and is cached as a tarball outside the clone
(``APPLIANCE_DEPLOY_CACHE``, default /var/cache/appliance-deploy-test), named by suite, variant,
package list and mirror; every test session unpacks a fresh copy. An online container gets a pip
cache kept there too (``pip/``: downloads by URL and hash), so a rerun does not fetch every wheel
from the index again. The container shares the host's network namespace (no bridge to set up), so each
service in it must listen on a port the test picked free; sshd listens on 127.0.0.1 only. A second
host gets a network namespace of its own instead (``netns_path``), sshd on its address there.
Commands run inside through ``nsenter -t <container PID 1> -a``. It is stopped by its PID:
SIGRTMIN+3 to its systemd (a clean halt), then waiting for systemd-nspawn to exit.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

CACHE = Path(os.environ.get("APPLIANCE_DEPLOY_CACHE", "/var/cache/appliance-deploy-test"))
INCLUDE = "systemd,systemd-sysv,dbus,python3,openssh-server,iproute2"
SUITE = "bookworm"
TOOLS = ("debootstrap", "systemd-nspawn", "nsenter", "ssh", "ssh-keygen", "dpkg-scanpackages", "tar")
# Inside the container: a clean environment, not the host's (pyenv shims, venvs, …).
INSIDE_ENV = [
    "env",
    "-i",
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
    "HOME=/root",
    "SYSTEMD_PAGER=",
    "SYSTEMD_COLORS=0",
]


def missing_requirements() -> str | None:
    """Why this host cannot run the deploy tests, or None."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, systemd-nspawn)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return "missing tools: " + ", ".join(missing) + " (make system-deps as root installs them)"
    if not Path("/sys/fs/cgroup").is_dir():
        return "no cgroup file system"
    return None


def debian_mirror() -> str:
    """The Debian mirror this host's apt uses (deb822 .sources first, then sources.list)."""
    texts = [p.read_text() for p in sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))]
    for text in texts:
        for stanza in text.split("\n\n"):
            if re.search(r"^Suites:.*\bbookworm\b", stanza, re.MULTILINE) and "security" not in stanza:
                m = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
                if m:
                    return m.group(1)
    lists = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    for p in lists:
        if p.exists():
            for line in p.read_text().splitlines():
                m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line)
                if m and "security" not in m.group(1):
                    return m.group(1)
    return "http://deb.debian.org/debian"


def rootfs_tarball(log=print) -> Path:
    """The cached debootstrap tarball, made on first use (≈1 min) under a lock."""
    mirror = debian_mirror()
    key = hashlib.sha256(f"{SUITE} minbase {INCLUDE} {mirror}".encode()).hexdigest()[:12]
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / f"{SUITE}-minbase-{key}.tar"
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists():
            return tarball
        work = CACHE / f".debootstrap-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        log(f"debootstrap {SUITE} from {mirror} into {work} (cached as {tarball}) …")
        try:
            subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={INCLUDE}", SUITE, str(work), mirror],
                check=True,
                capture_output=True,
            )
            partial = tarball.with_suffix(".partial")
            subprocess.run(["tar", "--numeric-owner", "-C", str(work), "-cf", str(partial), "."], check=True)
            os.replace(partial, tarball)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return tarball


class Container:
    def __init__(
        self, root: Path, name: str, log_path: Path, offline: bool = True, netns_path: str | None = None
    ) -> None:
        self.root = root
        self.name = name
        self.log_path = log_path
        self.offline = offline
        # None: the host's network namespace; else a namespace of its own (another host).
        self.netns_path = netns_path
        # Online: root's pip cache in the container is one kept outside it, across sessions.
        self.binds = {} if offline else {CACHE / "pip": "/root/.cache/pip"}
        self.proc: subprocess.Popen | None = None
        self.leader: int | None = None

    # -------------------------------------------------------------- the file system
    def unpack(self, tarball: Path) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        subprocess.run(["tar", "--numeric-owner", "-C", str(self.root), "-xf", str(tarball)], check=True)
        self.write("etc/hostname", self.name + "\n")
        self.write("etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {self.name}\n::1 localhost ip6-localhost\n")
        # The network is the host's: no service may start on a default port behind the test's back
        # (caddy :80, redis :6379 on package install). The playbook starts what it configures.
        self.write("usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", mode=0o755)
        if self.offline:
            # No DNS at all: anything that reaches for a mirror or PyPI fails instead of quietly working.
            self.write("etc/resolv.conf", "# appliance deploy test: offline, no name service\n")
        else:
            shutil.copy("/etc/resolv.conf", self.path("etc/resolv.conf"))
            # The host's CA bundle, so the container reaches the mirrors through this host's TLS setup.
            ca = Path("/etc/ssl/certs/ca-certificates.crt")
            if ca.exists():
                self.path("usr/local/share/ca-certificates").mkdir(parents=True, exist_ok=True)
                shutil.copy(ca, self.path("usr/local/share/ca-certificates/host-bundle.crt"))
                self.path("etc/ssl/certs").mkdir(parents=True, exist_ok=True)
                shutil.copy(ca, self.path("etc/ssl/certs/ca-certificates.crt"))

    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def write(self, rel: str, text: str, mode: int = 0o644) -> Path:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)
        return p

    def setup_ssh(self, port: int, public_key: str, listen: str = "127.0.0.1") -> None:
        self.write(
            "etc/ssh/sshd_config.d/deploy-test.conf",
            f"Port {port}\nListenAddress {listen}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nUseDNS no\n",
        )
        ssh_dir = self.path("root/.ssh")
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.write("root/.ssh/authorized_keys", public_key, mode=0o600)

    # -------------------------------------------------------------- lifecycle
    def boot(self) -> float:
        """Start systemd in the container in the background; returns the monotonic start time."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        for host in self.binds:
            host.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [
                "systemd-nspawn",
                "--boot",
                "-D",
                str(self.root),
                f"--machine={self.name}",
                "--register=no",
                "--keep-unit",
                "--console=read-only",
                "--resolv-conf=off",
                "--timezone=off",
                "--link-journal=no",
                *[f"--bind={host}:{inside}" for host, inside in self.binds.items()],
                *([f"--network-namespace-path={self.netns_path}"] if self.netns_path else []),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.leader = self._find_leader(timeout=20)
        return t0

    def _find_leader(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited with {self.proc.returncode}:\n{self.console()}")
            try:
                children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            except OSError:
                children = []
            for pid in children:
                try:
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                        return int(pid)
                except OSError:
                    pass
            time.sleep(0.05)
        raise TimeoutError(f"no systemd in the container:\n{self.console()}")

    def console(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""

    def run(
        self, *cmd: str, check: bool = True, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess:
        """Run a command inside the container (all its namespaces, a clean environment)."""
        assert self.leader, "not booted"
        proc = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", *INSIDE_ENV, *cmd],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            )
        return proc

    def wait_running(self, timeout: float = 60) -> str:
        """`systemctl is-system-running --wait`: running (or degraded, returned for the caller to judge)."""
        deadline = time.monotonic() + timeout
        while True:  # right after exec, systemd's bus is not there yet ("Failed to connect to bus")
            left = max(1, int(deadline - time.monotonic()))
            proc = self.run(
                "timeout",
                str(left),
                "systemctl",
                "is-system-running",
                "--wait",
                check=False,
                timeout=left + 5,
            )
            state = proc.stdout.strip()
            if state in ("running", "degraded", "maintenance", "stopping") or time.monotonic() > deadline:
                return state or proc.stderr.strip()
            time.sleep(0.2)

    def systemctl_show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, "-p", ",".join(props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def halt(self, timeout: float = 60) -> None:
        """Stop the container by PID: SIGRTMIN+3 to its systemd, wait for systemd-nspawn to exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.kill(self.leader, signal.SIGRTMIN + 3)
            self.proc.wait(timeout)
        except ProcessLookupError:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)  # only our own systemd-nspawn, by its PID
            self.proc.wait(10)
        finally:
            self.leader = None

    def destroy(self) -> None:
        self.halt()
        shutil.rmtree(self.root, ignore_errors=True)
