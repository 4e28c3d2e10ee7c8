from __future__ import annotations

import asyncio

import pytest

from appliance.tts.sessions import (
    SessionExists,
    SessionNotFound,
    SessionRegistry,
    StreamBusy,
    TooManySessions,
    WorkerSession,
)
from appliance.tts.stream import FrameChannel, StreamError


class FakeLease:
    def __init__(self, model_id: str = "m") -> None:
        self.model_id = model_id
        self.released = 0

    def release(self) -> None:
        self.released += 1


async def test_gate_blocks_while_paused_and_opens_on_resume():
    s = WorkerSession("s", FakeLease())
    await s.begin_stream()
    assert await s.gate()
    s.write_done()
    await s.pause()
    waiter = asyncio.create_task(s.gate())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    s.resume()
    assert await asyncio.wait_for(waiter, 1) is True


async def test_pause_ack_waits_for_a_write_in_progress():
    s = WorkerSession("s", FakeLease())
    await s.begin_stream()
    assert await s.gate()  # a write is now under way
    pause = asyncio.create_task(s.pause())
    await asyncio.sleep(0.05)
    assert not pause.done()
    s.write_done()
    await asyncio.wait_for(pause, 1)


async def test_stop_releases_a_paused_writer_with_false():
    s = WorkerSession("s", FakeLease())
    await s.begin_stream()
    await s.pause()
    waiter = asyncio.create_task(s.gate())
    await asyncio.sleep(0.01)
    await s.stop()
    assert await asyncio.wait_for(waiter, 1) is False
    assert s.cancel.is_set()
    s.end_stream()
    await s.begin_stream()  # a new stream starts unpaused and unstopped
    assert not s.paused and not s.stopped and not s.cancel.is_set()


async def test_one_stream_at_a_time():
    s = WorkerSession("s", FakeLease())
    await s.begin_stream()
    with pytest.raises(StreamBusy):
        await s.begin_stream()


async def test_registry_limits_duplicates_and_release():
    reg = SessionRegistry(max_sessions=2)
    leases = [FakeLease(), FakeLease()]
    reg.add(WorkerSession("a", leases[0]))
    with pytest.raises(SessionExists):
        reg.reserve("a")
    reg.add(WorkerSession("b", leases[1]))
    with pytest.raises(TooManySessions):
        reg.reserve("c")
    await reg.end("a")
    assert leases[0].released == 1 and "a" not in reg and len(reg) == 1
    with pytest.raises(SessionNotFound):
        await reg.end("a")
    with pytest.raises(SessionNotFound):
        reg.get("zzz")


async def test_channel_is_fifo_bounded_and_closable():
    ch = FrameChannel(maxsize=2)
    await ch.put(b"1")
    await ch.put(b"2")
    blocked = asyncio.create_task(ch.put(b"3"))
    await asyncio.sleep(0.01)
    assert not blocked.done()  # back-pressure
    assert await ch.get() == b"1"
    await asyncio.wait_for(blocked, 1)
    ch.close()
    assert [await ch.get(), await ch.get(), await ch.get()] == [b"2", b"3", None]


async def test_channel_error_reaches_the_reader():
    ch = FrameChannel()
    reader = asyncio.create_task(ch.get())
    await asyncio.sleep(0.01)
    ch.close(StreamError("INVALID_ARGUMENT", "too long"))
    with pytest.raises(StreamError, match="too long"):
        await reader
