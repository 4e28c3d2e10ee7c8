"""Bit-exact PAUSE/RESUME with the deterministic mock engine through a real gRPC server."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from appliance.config import WorkerSettings, load_settings
from appliance.tts.adapters.mock import MockSineAdapter
from appliance.tts.client import Control, TTSClient
from appliance.tts.stream import SynthesisStream
from appliance.tts.worker import TTSWorker


async def _mock_worker() -> TTSWorker:
    settings = load_settings(
        WorkerSettings, None, name="mock", port=0, metrics_port=None, models={"default": "mock-sine"}
    )
    worker = TTSWorker(settings)
    await worker.start()
    return worker


def _slow_close(monkeypatch, delay_s: float) -> None:
    close = SynthesisStream.close

    async def slow_close(self):
        await asyncio.sleep(delay_s)
        await close(self)

    monkeypatch.setattr(SynthesisStream, "close", slow_close)


async def test_resume_continues_exactly_where_pause_stopped():
    worker = await _mock_worker()
    text = " ".join(f"word{i}" for i in range(120))  # ~18 s of tones
    try:
        async with TTSClient(worker.address) as client:
            await client.start_session("ref")
            reference, _ = await client.synthesize_all("ref", text)

            await client.start_session("paused")
            call = client.synthesize("paused", [text])
            frames = []
            for _ in range(3):  # pause and resume three times along the way
                for _ in range(40):
                    frames.append(await call.read())
                await client.control("paused", Control.PAUSE)
                await asyncio.sleep(0.2)
                await client.control("paused", Control.RESUME)
            while (frame := await call.read()) is not grpc.aio.EOF:
                frames.append(frame)
            assert [f.sequence_number for f in frames] == list(range(len(frames)))
            assert b"".join(f.audio_data for f in frames) == reference
            for sid in ("ref", "paused"):
                await client.end_session(sid)
            assert worker.manager.total_refcount() == 0
    finally:
        await worker.stop(grace=0)


async def test_next_stream_may_open_as_soon_as_the_final_frame_arrives(monkeypatch):
    """A client (the orchestrator) opens a session's next stream the moment it reads the last one's
    final frame, normally or after STOP: the worker must not still count the old stream as open,
    however long its clean-up takes (here made slow on purpose)."""
    _slow_close(monkeypatch, 0.05)
    worker = await _mock_worker()
    try:
        async with TTSClient(worker.address) as client:
            await client.start_session("s")
            for i in range(40):
                call = client.synthesize("s", [f"turn {i} one two"])
                if i % 2:  # every other stream is stopped early, as barge-in does
                    await call.read()
                    await client.control("s", Control.STOP)
                frames = []
                while (frame := await call.read()) is not grpc.aio.EOF:
                    frames.append(frame)
                    if frame.is_final:
                        break  # the next stream opens now, before the server's handler has returned
                assert frames and frames[-1].is_final, f"stream {i} ended without its final frame"
            await client.end_session("s")
            assert worker.manager.total_refcount() == 0
            assert not worker.service.streams
    finally:
        await worker.stop(grace=0)


async def test_next_stream_may_open_right_after_the_last_one_is_cancelled(monkeypatch):
    """Barge-in cancels the reply's call and the next turn's reply may open its stream at once,
    before the worker has finished cleaning up the cancelled one: the worker waits for that
    clean-up instead of refusing the new stream as a second open one."""
    _slow_close(monkeypatch, 0.2)
    worker = await _mock_worker()
    try:
        async with TTSClient(worker.address) as client:
            await client.start_session("s")
            for i in range(6):
                call = client.synthesize("s", [f"turn {i} " + "word " * 40])
                await call.read()
                call.cancel()  # no STOP: the caller just goes away
                frames = []
                async for frame in client.synthesize("s", [f"reply {i} one two"]):
                    frames.append(frame)
                assert frames and frames[-1].is_final
            # a stream that is really still open is refused, as before
            busy = client.synthesize("s", ["word " * 200])
            await busy.read()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for _ in client.synthesize("s", ["second"]):
                    pass
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            busy.cancel()
            await client.end_session("s")
            for _ in range(50):
                if worker.manager.total_refcount() == 0 and not worker.service.streams:
                    break
                await asyncio.sleep(0.05)
            assert worker.manager.total_refcount() == 0
            assert not worker.service.streams
    finally:
        await worker.stop(grace=0)


async def test_frames_of_a_stream_the_caller_cancelled_are_counted(monkeypatch):
    # A barge-in cancels the reply's stream: the frames it did send are in appliance_tts_frames_total
    # as they go, not only once a stream ends normally.
    monkeypatch.setattr(MockSineAdapter, "delay_s", 0.05)  # 150 ms of audio per 50 ms: seconds of stream
    worker = await _mock_worker()
    counted = worker.metrics.frames.labels("mock-sine")
    text = " ".join(f"word{i}" for i in range(120))
    try:
        async with TTSClient(worker.address) as client:
            await client.start_session("cut")
            call = client.synthesize("cut", [text])
            received = [await call.read() for _ in range(30)]
            deadline = asyncio.get_running_loop().time() + 10
            while counted._value.get() < len(received):  # a write returns just after the frame is out
                assert asyncio.get_running_loop().time() < deadline, (
                    "frames not counted while the stream runs"
                )
                await asyncio.sleep(0.01)
            assert "cut" in worker.service.streams  # counted before the stream ended
            call.cancel()
            while "cut" in worker.service.streams:
                assert asyncio.get_running_loop().time() < deadline, "the cancelled stream never closed"
                await asyncio.sleep(0.02)
            assert counted._value.get() >= len(received)  # what was written, read or not
            await client.end_session("cut")
    finally:
        await worker.stop(grace=0)
