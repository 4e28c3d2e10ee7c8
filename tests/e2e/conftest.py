"""End-to-end fixtures: the real orchestrator and Piper worker behind a real Caddy (tls internal)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_helpers import CaddyProcess


@pytest.fixture(scope="session")
def caddy(orchestrator, tmp_path_factory):
    proxy = CaddyProcess(f"127.0.0.1:{orchestrator.port}", tmp_path_factory.mktemp("caddy"))
    proxy.secret = orchestrator.secret  # through Caddy, clients need the orchestrator's access secret
    try:
        proxy.wait_ready()
        yield proxy
    finally:
        proxy.stop()
