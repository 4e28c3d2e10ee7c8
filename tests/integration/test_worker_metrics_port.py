"""A second worker from the same configuration, only --port changed: the metrics port is taken, and
it says so by name (exit 2, no traceback) instead of dying with one."""

from __future__ import annotations

import socket
import subprocess
import sys

from appliance.process import free_port


def test_a_taken_metrics_port_is_a_clear_configuration_error(tmp_path):
    config = tmp_path / "mock.toml"
    config.write_text('name = "mock"\n[models]\ndefault = "mock-sine"\nwarmup = false\n')
    with socket.socket() as taken:  # what the first worker holds
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics_port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "appliance",
                "tts-worker",
                "--config",
                str(config),
                "--port",
                str(free_port()),
                "--metrics-port",
                str(metrics_port),
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2, done.stderr
    assert f"metrics_port {metrics_port}" in done.stderr and "Traceback" not in done.stderr
