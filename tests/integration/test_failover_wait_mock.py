"""Waiting for the only worker to come back ([playback] tts_retry_s), bit-exact with the mock
engine: one real gRPC worker server in this process, stopped mid-reply and started again on the
same port, and the orchestrator's TtsLink/ReplyStream against it. (test_failover_wait.py proves it with
worker processes, SIGKILL and the real orchestrator.)"""

from __future__ import annotations

import asyncio

import pytest

from appliance.config import WorkerSettings, load_settings
from appliance.orchestrator.metrics import OrchestratorMetrics
from appliance.orchestrator.workers import StaticPool, TtsLink, TtsUnavailable
from appliance.tts.adapters.mock import MockSineAdapter
from appliance.tts.client import TTSClient
from appliance.tts.worker import TTSWorker

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
TEXT = " ".join(f"{WORDS[i % 8].capitalize()} {WORDS[(i + 3) % 8]} {WORDS[(i + 5) % 8]}." for i in range(16))
RETRY_S = 5.0
DOWN_S = 1.0


async def _worker(port: int = 0) -> TTSWorker:
    settings = load_settings(
        WorkerSettings, None, name="mock", port=port, metrics_port=0, models={"default": "mock-sine"}
    )
    worker = TTSWorker(settings)
    await worker.start()
    return worker


class OneWorker:
    """The only worker, which can be stopped (a crash, for the orchestrator) and started again."""

    def __init__(self) -> None:
        self.worker: TTSWorker | None = None
        self.address = ""

    async def start(self, port: int = 0) -> None:
        self.worker = await _worker(port)
        self.address = self.worker.address

    async def stop(self) -> None:
        if self.worker is not None:
            await self.worker.stop(grace=0)
            self.worker = None

    def restart_later(self, delay_s: float) -> asyncio.Task:
        port = _port_of(self.address)

        async def restart() -> None:
            await asyncio.sleep(delay_s)
            await self.start(port)

        return asyncio.ensure_future(restart())


def _port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


@pytest.fixture
async def one_worker(monkeypatch):
    monkeypatch.setattr(MockSineAdapter, "delay_s", 0.01)  # 150 ms of audio per 10 ms: a stream takes a while
    w = OneWorker()
    await w.start()
    yield w
    await w.stop()


async def _link(one_worker: OneWorker, retry_s: float = RETRY_S):
    pool = StaticPool([one_worker.address])
    link = TtsLink(pool, "conv-1", stall_s=0.4, retry_s=retry_s, metrics=OrchestratorMetrics())
    await link.open()
    return pool, link


async def _reference(address: str, text: str) -> list[bytes]:
    async with TTSClient(address) as client:
        await client.start_session("ref")
        _, frames = await client.synthesize_all("ref", text)
        await client.end_session("ref")
    return [f.audio_data for f in frames if f.audio_data]


def _count(link: TtsLink, outcome: str) -> int:
    for metric in link.metrics.worker_wait.collect():
        for s in metric.samples:
            if s.name.endswith("_count") and s.labels.get("outcome") == outcome:
                return int(s.value)
    return 0


async def test_the_reply_waits_for_its_restarted_worker_and_resumes_from_the_voiced_offset(one_worker):
    pool, link = await _link(one_worker)
    try:
        reply = link.reply()
        reply.feed(TEXT)
        reply.finish()
        frames: list[bytes] = []
        dropped: list[int] = []
        reply.on_failover = dropped.append
        switch = None
        restart = None
        async for frame in reply.frames():
            if switch is None and reply.failovers:
                switch = len(frames)
            frames.append(frame)
            if len(frames) == 80:
                await one_worker.stop()
                restart = one_worker.restart_later(DOWN_S)
        await restart
        [failover] = reply.failovers
        assert failover.cause == "lost"
        assert failover.worker == failover.to == one_worker.address  # the same worker, back on its address
        assert failover.gap_s >= DOWN_S
        resend = failover.resend_from
        assert 0 < resend < len(TEXT) and TEXT[resend - 1] == "."
        assert reply.voiced == len(TEXT)
        # The rest of the reply is exactly the restarted worker's audio of the text from the offset.
        assert frames[switch:] == await _reference(one_worker.address, TEXT[resend:])
        assert switch - sum(dropped) > 0
        assert _count(link, "recovered") == 1 and _count(link, "gave_up") == 0
        assert link.metrics.failovers.labels(one_worker.address, "lost")._value.get() == 1
        assert link.client.address == one_worker.address
    finally:
        await link.close()
        await pool.close()


async def test_with_no_worker_back_the_wait_gives_up_and_a_new_reply_waits_again(one_worker):
    pool, link = await _link(one_worker, retry_s=0.6)
    try:
        await one_worker.stop()
        reply = link.reply()
        reply.feed("One two three.")
        reply.finish()
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(TtsUnavailable, match="within 0.6s"):
            async for _ in reply.frames():
                pass
        assert 0.6 <= asyncio.get_running_loop().time() - t0 < 5
        assert link.client is None and _count(link, "gave_up") == 1

        # The next reply starts its session afresh, waiting for the worker that comes back meanwhile.
        link.retry_s = RETRY_S
        restart = one_worker.restart_later(0.3)
        reply = link.reply()
        reply.feed("Four five six.")
        reply.finish()
        frames = [f async for f in reply.frames()]
        await restart
        assert frames == await _reference(one_worker.address, "Four five six.")
        assert _count(link, "recovered") == 1
    finally:
        await link.close()
        await pool.close()


async def test_cancelling_the_reply_during_the_wait_ends_it_and_leaves_no_task(one_worker):
    pool, link = await _link(one_worker)
    before = asyncio.all_tasks()
    reply = link.reply()
    reply.feed(TEXT)
    reply.finish()
    got = []

    async def consume():
        async for frame in reply.frames():
            got.append(frame)
            if len(got) == 40:
                await one_worker.stop()

    task = asyncio.ensure_future(consume())
    for _ in range(200):  # until the wait has begun
        if reply.failovers and link.client is None and link._starting is None:
            break
        await asyncio.sleep(0.02)
    assert reply.failovers and link.client is None
    t0 = asyncio.get_running_loop().time()
    task.cancel()  # what barge-in, STOP and a client gone do to the reply
    await asyncio.gather(task, return_exceptions=True)
    assert asyncio.get_running_loop().time() - t0 < 0.5
    await link.close()
    assert _count(link, "cancelled") == 1 and _count(link, "gave_up") == 0
    for _ in range(50):
        left = {t for t in asyncio.all_tasks() - before if not t.done()} - {asyncio.current_task()}
        if not left:
            break
        await asyncio.sleep(0.02)
    assert not left, left
    # Nothing is left to start the session once the worker is back.
    await one_worker.start(_port_of(pool.clients[0].address))
    await asyncio.sleep(0.5)  # several of the wait's 100–400 ms retries
    async with TTSClient(one_worker.address) as probe:
        assert (await probe.capabilities()).active_sessions == 0
    await pool.close()
