"""The orchestrator under Type=notify: READY=1 only once it serves HTTP, WATCHDOG=1 pings from its
event loop, STOPPING=1 on the way down (over a real unix datagram socket; no models loaded)."""

from __future__ import annotations

import asyncio
import socket

import aiohttp

from appliance.config import OrchestratorSettings, load_settings
from appliance.orchestrator.server import Orchestrator


class StubAsr:
    loaded = False

    async def load_async(self) -> None:
        self.loaded = True

    def close(self) -> None:
        pass


async def _collect(sock: socket.socket, seconds: float) -> list[str]:
    """Read for ``seconds``, often: a unix datagram queue holds only ~10 messages before senders block."""
    lines: list[str] = []
    for _ in range(int(seconds / 0.02)):
        await asyncio.sleep(0.02)
        lines += _drain(sock)
    return lines


def _drain(sock: socket.socket) -> list[str]:
    lines = []
    while True:
        try:
            lines += sock.recv(4096).decode().splitlines()
        except BlockingIOError:
            return lines


async def test_ready_after_serving_then_watchdog_pings_then_stopping(tmp_path, monkeypatch):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a ping every 50 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    settings = load_settings(OrchestratorSettings, None, port=0, workers=["127.0.0.1:1"])
    orch = Orchestrator(settings, asr=StubAsr())
    assert _drain(sock) == []
    await orch.start()
    try:
        lines = _drain(sock)
        assert lines and lines[0] == "READY=1", lines
        # READY means it answers now.
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{orch.port}/healthz") as resp:
            assert resp.status == 200
        assert (await _collect(sock, 0.3)).count("WATCHDOG=1") >= 3
    finally:
        await orch.stop()
        sock.close()
    assert orch.asr.loaded


async def test_stopping_is_sent_and_pings_end(tmp_path, monkeypatch):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    orch = Orchestrator(load_settings(OrchestratorSettings, None, port=0), asr=StubAsr())
    await orch.start()
    await orch.stop()
    assert "STOPPING=1" in _drain(sock)
    assert "WATCHDOG=1" not in await _collect(sock, 0.2)
    sock.close()
