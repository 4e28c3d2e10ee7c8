"""Real service processes on loopback for the tests: the TTS worker and the orchestrator."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance.orchestrator.access.secret import new_secret, write_secret
from appliance.process import free_port, terminate

ROOT = Path(__file__).resolve().parent.parent


class ServiceProcess:
    """A real `appliance …` service process, its output in a log file."""

    proc: subprocess.Popen
    log_path: Path

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None) -> None:
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"{name}-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        code = terminate(self.proc)
        self._log.close()
        return code


class WorkerProcess(ServiceProcess):
    """A real `appliance tts-worker` process on loopback (or on ``host`` inside network namespace
    ``netns``: another host, as far as the network can tell)."""

    def __init__(
        self,
        *extra: str,
        env: dict[str, str] | None = None,
        config: str | None = None,
        port: int | None = None,
        host: str = "127.0.0.1",
        netns: str | None = None,
    ) -> None:
        self.port = port or free_port()  # a port given: e.g. a restart where the last one listened
        self.metrics_port = free_port()
        self.address = f"{host}:{self.port}"
        self.netns = netns
        cmd = [
            *(["ip", "netns", "exec", netns] if netns else []),
            *self._program(),
            "tts-worker",
            "--config",
            config or str(ROOT / "etc/appliance/tts/piper.toml"),
            "--host",
            host,
            "--port",
            str(self.port),
            "--metrics-port",
            str(self.metrics_port),
            *extra,
        ]
        self._spawn("tts-worker", cmd, env)

    def _program(self) -> list[str]:
        return [sys.executable, "-m", "appliance"]

    def wait_ready(self, timeout: float = 60, credentials=None) -> None:
        """Until its health says SERVING; ``credentials``: a worker serving TLS."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        channel = (
            grpc.secure_channel(self.address, credentials)
            if credentials is not None
            else grpc.insecure_channel(self.address)
        )
        with channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    if (
                        stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                        == health_pb2.HealthCheckResponse.SERVING
                    ):
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise TimeoutError(f"worker not ready:\n{self.log()}")


class MockWorkerProcess(WorkerProcess):
    """A worker process serving the mock engine, slowed to ``delay_s`` per word (0.15 s of audio):
    at the default, a reply streams barely faster than real time (RTF 0.67), so the orchestrator
    holds little of it, like a streaming GPU engine (see `appliance bench failover`)."""

    def __init__(
        self, *extra: str, delay_s: float = 0.1, port: int | None = None, env: dict[str, str] | None = None
    ):
        self.delay_s = delay_s
        super().__init__(*extra, port=port, env={"APPLIANCE_MODELS__DEFAULT": "mock-sine", **(env or {})})

    def _program(self) -> list[str]:
        boot = (
            "import sys; from appliance.tts.adapters.mock import MockSineAdapter as M; "
            f"M.delay_s = {self.delay_s}; from appliance.cli import main; sys.exit(main(sys.argv[1:]))"
        )
        return [sys.executable, "-c", boot]


class OrchestratorProcess(ServiceProcess):
    """A real `appliance orchestrator` process on loopback, talking to ``workers``."""

    def __init__(
        self,
        workers: list[str],
        env: dict[str, str] | None = None,
        port: int | None = None,
        secret_file: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.http = f"http://127.0.0.1:{self.port}"
        # Its own access secret, known to the test (clients through a proxy need it); a restart
        # passes the last one's ``secret_file``, so paired browsers stay paired.
        if secret_file is None:
            secret_file = Path(tempfile.mkdtemp(prefix="appliance-access-")) / "access_secret"
            write_secret(secret_file, new_secret())
        self.secret_file = secret_file
        self.secret = secret_file.read_text().strip()
        env = {"APPLIANCE_ACCESS__SECRET_FILE": str(secret_file), **(env or {})}
        cmd = [
            sys.executable,
            "-m",
            "appliance",
            "orchestrator",
            "--config",
            str(ROOT / "etc/appliance/orchestrator.toml"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        for w in workers:
            cmd += ["--worker", w]
        self._spawn("orchestrator", cmd, env)

    def wait_ready(self, timeout: float = 90) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"orchestrator exited with {self.proc.returncode}:\n{self.log()}")
            try:
                urllib.request.urlopen(self.http + "/healthz", timeout=1).read()
                return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"orchestrator not ready:\n{self.log()}")


class WyomingProcess(ServiceProcess):
    """A real `appliance wyoming` process on loopback, talking to ``workers``."""

    def __init__(self, workers: list[str], env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "appliance",
            "wyoming",
            "--config",
            str(ROOT / "etc/appliance/orchestrator.toml"),
            "--uri",
            f"tcp://127.0.0.1:{self.port}",
        ]
        for w in workers:
            cmd += ["--worker", w]
        self._spawn("wyoming", cmd, env)

    def wait_ready(self, timeout: float = 90) -> None:
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"wyoming exited with {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"wyoming not ready:\n{self.log()}")
