"""A real livekit-server for the tests: built once per machine from its Go module
(scripts/build-livekit-server.sh, cached outside the clone by version), then run by
:class:`appliance.bench.livekit_server.LiveKitServer`."""

from __future__ import annotations

import subprocess
from pathlib import Path

from appliance.bench.livekit_server import LiveKitServer

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "scripts/build-livekit-server.sh"


class GoMissing(RuntimeError):
    """No Go toolchain and no cached binary: the tests that need the server skip, saying so."""


def livekit_binary() -> Path:
    """The cached binary, building it first where it is missing (minutes, once)."""
    done = subprocess.run(["bash", str(BUILD)], check=False, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        if "Go is not installed" in done.stderr:
            raise GoMissing(done.stderr.strip())
        raise RuntimeError(f"building livekit-server failed:\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def livekit_server() -> LiveKitServer:
    return LiveKitServer(livekit_binary())
