"""sd_notify over a real unix datagram socket: READY, STATUS, watchdog pings that stop while a
synthesis is stuck; graceful SIGTERM of the real worker process."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
import uuid

import grpc
import pytest
from services import WorkerProcess

from appliance.config import WorkerSettings, load_settings
from appliance.tts.adapters.mock import MockSineAdapter
from appliance.tts.client import TTSClient
from appliance.tts.worker import TTSWorker


class NotifySocket:
    def __init__(self, path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def lines(self, prefix: str, since: float = 0.0, until: float = float("inf")) -> list[str]:
        return [m for t, m in list(self.messages) if m.startswith(prefix) and since <= t <= until]

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


@pytest.fixture
def notify(tmp_path, monkeypatch):
    sock = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", sock.path)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # ping every 50 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield sock
    sock.close()


async def test_ready_status_and_watchdog_withheld_while_synthesis_is_stuck(notify, monkeypatch):
    settings = load_settings(
        WorkerSettings,
        None,
        name="dog",
        port=0,
        metrics_port=None,
        models={"default": "mock-sine"},
        watchdog={"stuck_synthesis_s": 0.5},
    )
    worker = TTSWorker(settings)
    await worker.start()
    try:
        await asyncio.sleep(0.4)
        assert notify.lines("READY=1"), notify.messages
        assert any("models: mock-sine" in m for m in notify.lines("STATUS="))
        assert len(notify.lines("WATCHDOG=1")) >= 3

        monkeypatch.setattr(MockSineAdapter, "delay_s", 2.0)  # the engine hangs for 2 s per chunk
        async with TTSClient(worker.address) as client:
            sid = f"w-{uuid.uuid4().hex[:8]}"
            await client.start_session(sid)
            stuck_from = time.monotonic()
            synth = asyncio.create_task(client.synthesize_all(sid, "hang"))
            await asyncio.sleep(1.8)
            # From the stuck limit (0.5 s) on, no pings, though the event loop is fine.
            assert notify.lines("WATCHDOG=1", since=stuck_from + 0.7, until=stuck_from + 1.8) == []
            assert worker.metrics.watchdog_ok._value.get() == 0
            pcm, frames = await asyncio.wait_for(synth, 10)
            assert frames[-1].is_final and pcm
            resumed_from = time.monotonic()
            await asyncio.sleep(0.4)
            assert len(notify.lines("WATCHDOG=1", since=resumed_from)) >= 3  # pings resume
            await client.end_session(sid)
    finally:
        await worker.stop(grace=0)
    assert notify.lines("STOPPING=1")


def test_sigterm_drains_and_exits_cleanly():
    worker = WorkerProcess()
    try:
        worker.wait_ready()

        async def stream_then_terminate():
            async with TTSClient(worker.address) as client:
                await client.start_session("drain")
                call = client.synthesize(
                    "drain", ["A sentence that is being spoken while the worker is asked to stop."]
                )
                first = await call.read()
                assert first.audio_data
                worker.proc.send_signal(signal.SIGTERM)
                frames = [first]
                while (frame := await call.read()) is not grpc.aio.EOF:
                    frames.append(frame)
                return frames

        frames = asyncio.run(stream_then_terminate())
        assert frames[-1].is_final, "the open stream was drained, not cut"
        assert worker.proc.wait(20) == 0
        log = worker.log()
        assert "stopping" in log and "stopped" in log
    finally:
        worker.stop()
