"""A livekit-server of its own for a benchmark or a test: free loopback ports, a generated key and
secret, one muxed UDP port and the TCP fallback, no TURN; stopped by pid."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from appliance.process import free_port, free_udp_port, terminate


class LiveKitServer:
    def __init__(self, binary: str | Path) -> None:
        self.binary = Path(binary)
        self.api_key = "appliance-test"
        self.api_secret = secrets.token_urlsafe(32)  # livekit-server wants at least 32 characters
        self.port, self.tcp_port, self.udp_port = free_port(), free_port(), free_udp_port()
        self.dir = Path(tempfile.mkdtemp(prefix="livekit-"))
        self.log_path = self.dir / "livekit.log"
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        config = self.dir / "livekit.yaml"
        # One UDP port (ICE over a single muxed socket) and the TCP fallback, loopback only, no TURN.
        config.write_text(
            f"port: {self.port}\n"
            "rtc:\n"
            f"  tcp_port: {self.tcp_port}\n"
            f"  udp_port: {self.udp_port}\n"
            "  use_external_ip: false\n"
            "  node_ip: 127.0.0.1\n"
            "turn:\n  enabled: false\n"
            f"keys:\n  {self.api_key}: {self.api_secret}\n"
            "logging:\n  level: info\n"
        )
        config.chmod(0o600)
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(self.binary), "--config", str(config), "--bind", "127.0.0.1", "--node-ip", "127.0.0.1"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"livekit-server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"livekit-server not listening on {self.port}:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc)
            self.proc = None
            self._log.close()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
