"""A real `redis-server` for the tests: loopback, a free port, a password, nothing saved to disk."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

from appliance.process import free_port, terminate

PASSWORD = "test-redis-secret"


class RedisServer:
    def __init__(
        self,
        password: str = PASSWORD,
        port: int | None = None,
        aclfile: Path | None = None,
        user: str | None = None,
        tls: dict[str, Path] | None = None,
    ) -> None:
        """``aclfile``: users from it instead of ``requirepass``; ``user``/``password``: one of them,
        for the readiness check. ``tls``: TLS only (no plaintext port), with ``cert``, ``key`` and
        ``ca`` (the CA clients' certificates must be signed by: every client needs one)."""
        if shutil.which("redis-server") is None:
            raise RuntimeError(
                "redis-server is not installed (Debian package redis-server; `make system-deps`)"
            )
        self.password = password
        self.aclfile, self.user, self.tls = aclfile, user, tls
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="redis-"))
        self.log_path = self.dir / "redis.log"
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        """Without the password (the tests pass it separately, as a deployment should)."""
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    @property
    def url_with_password(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start (again, on the same port, empty: nothing is saved)."""
        listen = ["--port", str(self.port)]
        if self.tls:
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "yes"]
            for option, key in (
                ("--tls-cert-file", "cert"),
                ("--tls-key-file", "key"),
                ("--tls-ca-cert-file", "ca"),
            ):
                listen += [option, str(self.tls[key])]
        cmd = [
            "redis-server",
            *listen,
            "--bind",
            "127.0.0.1",
            *(["--aclfile", str(self.aclfile)] if self.aclfile else ["--requirepass", self.password]),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.log_path),
            "--protected-mode",
            "yes",
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.log()}")
            try:
                if self.command("PING") == "+PONG":
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"redis-server not ready on port {self.port}: {self.log()}")

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def command(self, *args: str) -> str:
        """One command over a raw socket (RESP), authenticated; returns the first reply line (for readiness)."""
        with self._connection() as sock:
            payload = b""
            auth = ("AUTH", self.user, self.password) if self.user else ("AUTH", self.password)
            for cmd in (auth, args):
                payload += f"*{len(cmd)}\r\n".encode() + b"".join(
                    f"${len(a.encode())}\r\n{a}\r\n".encode() for a in cmd
                )
            sock.sendall(payload)
            data = b""
            while data.count(b"\r\n") < 2:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        lines = data.split(b"\r\n")
        return lines[1].decode() if len(lines) > 1 else ""

    def _connection(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        if not self.tls:
            return sock
        context = ssl.create_default_context(cafile=str(self.tls["ca"]))
        context.load_cert_chain(self.tls["client_cert"], self.tls["client_key"])
        return context.wrap_socket(sock, server_hostname="127.0.0.1")
