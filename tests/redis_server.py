"""A real `redis-server` for the tests: loopback, a free port, a password, nothing saved to disk."""

from __future__ import annotations

import shutil
import socket
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
    ) -> None:
        """``aclfile``: users from it instead of ``requirepass``; ``user``/``password``: one of them,
        for the readiness check."""
        if shutil.which("redis-server") is None:
            raise RuntimeError(
                "redis-server is not installed (Debian package redis-server; `make system-deps`)"
            )
        self.password = password
        self.aclfile, self.user = aclfile, user
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="redis-"))
        self.log_path = self.dir / "redis.log"
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        """Without the password (the tests pass it separately, as a deployment should)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def url_with_password(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start (again, on the same port, empty: nothing is saved)."""
        cmd = [
            "redis-server",
            "--port",
            str(self.port),
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
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
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
