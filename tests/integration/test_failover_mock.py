"""Failover plumbing, bit-exact, with the deterministic mock engine: two real gRPC worker servers
in this process, the orchestrator's TtsLink/ReplyStream against them. (test_failover.py proves the
feature with real Piper worker processes.)"""

from __future__ import annotations

import asyncio

import pytest

from appliance.config import WorkerSettings, load_settings
from appliance.orchestrator.metrics import OrchestratorMetrics
from appliance.orchestrator.workers import StaticPool, TtsLink
from appliance.tts.adapters.mock import MockSineAdapter
from appliance.tts.client import Control, TTSClient
from appliance.tts.service import TTSService
from appliance.tts.text import split_text
from appliance.tts.worker import TTSWorker

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
]
TEXT = " ".join(
    f"{WORDS[i % 16].capitalize()} {WORDS[(i + 3) % 16]} {WORDS[(i + 7) % 16]} {WORDS[(i + 11) % 16]}."
    for i in range(24)
)
STALL_S = 0.4


async def _worker() -> TTSWorker:
    settings = load_settings(
        WorkerSettings, None, name="mock", port=0, metrics_port=0, models={"default": "mock-sine"}
    )
    worker = TTSWorker(settings)
    await worker.start()
    return worker


@pytest.fixture
async def workers(monkeypatch):
    monkeypatch.setattr(MockSineAdapter, "delay_s", 0.01)  # 150 ms of audio per 10 ms: a stream takes a while
    a, b = await _worker(), await _worker()
    yield a, b
    for w in (a, b):
        await w.stop(grace=0)


@pytest.fixture
async def link(workers):
    pool = StaticPool([w.address for w in workers])
    link = TtsLink(pool, "conv-1", stall_s=STALL_S, metrics=OrchestratorMetrics())
    await link.open()
    assert link.client.address == workers[0].address
    yield link
    await link.close()
    await pool.close()


async def _reference(worker: TTSWorker, text: str) -> list[bytes]:
    async with TTSClient(worker.address) as client:
        await client.start_session("ref")
        _, frames = await client.synthesize_all("ref", text)
        await client.end_session("ref")
    return [f.audio_data for f in frames if f.audio_data]


async def _play(reply, on_frame) -> tuple[list[bytes], int, int]:
    """All frames, the index of the first one from the next worker, and the frames dropped
    (an unfinished segment that is voiced again)."""
    frames: list[bytes] = []
    dropped: list[int] = []
    reply.on_failover = dropped.append
    switch = None
    async for frame in reply.frames():
        if switch is None and reply.failovers:
            switch = len(frames)
        frames.append(frame)
        await on_frame(len(frames))
    return frames, switch, sum(dropped)


def _check_resumed_bit_exact(frames, switch, dropped, reference, rest_reference):
    kept = switch - dropped  # frames of fully voiced segments from the first worker
    assert kept > 0 and frames[:kept] == reference[:kept]
    assert frames[switch:] == rest_reference


async def test_text_offsets_mark_segment_ends(workers):
    async with TTSClient(workers[0].address) as client:
        await client.start_session("s")
        _, frames = await client.synthesize_all("s", TEXT)
    offsets = [f.text_offset for f in frames]
    assert offsets == sorted(offsets) and offsets[-1] == len(TEXT) and frames[-1].is_final
    ends, pos = [], 0
    for segment in split_text(TEXT, first_clause_max_words=5, first_segment_hard_max_words=6):
        pos = TEXT.index(segment, pos) + len(segment)
        ends.append(pos)
    # Every segment end is announced, by the last frame of that segment.
    assert sorted(set(offsets) - {0}) == ends
    for end in ends[:-1]:
        last = max(i for i, o in enumerate(offsets) if o < end) + 1
        assert offsets[last] == end and frames[last].audio_data


async def test_a_worker_lost_mid_reply_is_replaced_and_nothing_is_lost(workers, link):
    a, b = workers
    reference = await _reference(b, TEXT)
    reply = link.reply()
    reply.feed(TEXT[:100])
    reply.feed(TEXT[100:])
    reply.finish()

    async def kill_a(n):
        if n == 120:
            await a.stop(grace=0)

    frames, switch, dropped = await _play(reply, kill_a)
    [failover] = reply.failovers
    assert (failover.worker, failover.cause, failover.to) == (a.address, "lost", b.address)
    resend = failover.resend_from
    assert 0 < resend < len(TEXT) and TEXT[resend - 1] == "."
    _check_resumed_bit_exact(frames, switch, dropped, reference, await _reference(b, TEXT[resend:]))
    assert link.client.address == b.address  # the session moved: controls and later replies go there
    assert link.metrics.failovers.labels(a.address, "lost")._value.get() == 1
    assert link.metrics.failover_gap._sum.get() > 0


async def test_a_stalled_worker_is_detected_by_deadline(workers, link):
    a, b = workers
    reference = await _reference(b, TEXT)
    reply = link.reply()
    reply.feed(TEXT)
    reply.finish()
    hung = TTSClient(a.address)

    async def hang_a(n):
        if n == 120:  # the worker stops sending, unknown to the orchestrator
            await hung.control("conv-1", Control.PAUSE)

    t0 = asyncio.get_running_loop().time()
    frames, switch, dropped = await _play(reply, hang_a)
    await hung.close()
    [failover] = reply.failovers
    assert (failover.worker, failover.cause) == (a.address, "stalled")
    assert STALL_S <= failover.detected_at - failover.last_frame_at < STALL_S + 0.5
    assert failover.detected_at - t0 > STALL_S
    _check_resumed_bit_exact(
        frames, switch, dropped, reference, await _reference(b, TEXT[failover.resend_from :])
    )


async def test_a_pause_in_force_holds_the_new_worker_until_resume(workers, link):
    a, b = workers
    reply = link.reply()
    reply.feed(TEXT)
    reply.finish()
    gate = {}

    async def pause_then_kill(n):
        if n == 60:
            await link.control(Control.PAUSE)  # barge-in: a PAUSE is in force …
            await a.stop(grace=0)  # … when the worker dies
            gate["killed"] = asyncio.get_running_loop().time()
            asyncio.get_running_loop().call_later(
                0.8, lambda: asyncio.ensure_future(link.control(Control.RESUME))
            )

    frames, switch, _dropped = await _play(reply, pause_then_kill)
    [failover] = reply.failovers
    assert failover.to == b.address and failover.cause == "lost"
    assert failover.gap_s >= 0.8  # nothing from the new worker before RESUME
    assert len(frames) - switch > 100


async def test_no_stall_while_the_responder_has_not_finished_a_sentence(workers, link):
    reply = link.reply()
    reply.feed("Alpha bravo charlie delta echo")  # no sentence end yet: nothing is due
    frames: list[bytes] = []

    async def consume():
        async for frame in reply.frames():
            frames.append(frame)

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(STALL_S * 2.5)
    reply.feed(" foxtrot golf. Hotel india juliet.")
    reply.finish()
    await asyncio.wait_for(task, 10)
    assert reply.failovers == [] and frames
    assert reply.voiced == len(reply.text)


async def test_with_no_worker_left_frames_raises(workers, link):
    from appliance.orchestrator.workers import TtsUnavailable

    reply = link.reply()
    reply.feed(TEXT)
    reply.finish()

    async def kill_both(n):
        if n == 40:
            for w in workers:
                await w.stop(grace=0)

    with pytest.raises(TtsUnavailable):
        await _play(reply, kill_both)
    assert len(reply.failovers) >= 1 and link.client is None


async def test_a_reply_that_fails_on_every_try_before_any_audio_gives_up(workers, monkeypatch):
    """Text no engine can voice fails the same way on every try; with the orchestrator's retry
    wait the failed worker is tried again (it may be restarting), so the reply gives up after a
    few tries instead of failing over for ever."""
    from appliance.orchestrator.workers import TtsUnavailable
    from appliance.orchestrator.workers.reply_stream import MAX_FRUITLESS_TRIES

    def unvoiceable(self, text):
        raise RuntimeError("this engine cannot voice it")
        yield  # unreachable: it makes this a generator

    monkeypatch.setattr(MockSineAdapter, "synthesize", unvoiceable)
    pool = StaticPool([workers[0].address])
    link = TtsLink(pool, "conv-1", stall_s=STALL_S, retry_s=5.0)
    await link.open()
    try:
        reply = link.reply()
        reply.feed("Alpha bravo charlie.")
        reply.finish()
        with pytest.raises(TtsUnavailable, match="before any audio"):
            async for _ in reply.frames():
                pass
        assert len(reply.failovers) == MAX_FRUITLESS_TRIES
    finally:
        await link.close()
        await pool.close()


async def test_a_busy_worker_is_late_but_not_failed_over(workers, link, monkeypatch, caplog):
    """Every word takes 1.5 stall times to synthesise (a worker with more first sentences queued
    than cores): frames are late, but the worker says it has engine work, so the reply waits its
    turn on it and arrives whole, from that worker alone."""
    a, _b = workers
    text = " ".join(TEXT.split()[:8])
    reference = await _reference(a, text)
    monkeypatch.setattr(MockSineAdapter, "delay_s", 1.5 * STALL_S)
    reply = link.reply()
    reply.feed(text)
    reply.finish()
    with caplog.at_level("INFO", logger="appliance.orchestrator.workers.reply_stream"):
        frames, switch, _ = await _play(reply, _nothing)
    assert reply.failovers == [] and switch is None
    assert frames == reference
    assert "audio late, waiting its turn" in caplog.text


async def test_a_busy_worker_that_never_delivers_is_failed_over_at_the_busy_limit(workers, link):
    """An engine call that runs for ever (the worker's loop answers, its engine thread is stuck)
    is given up on after BUSY_LIMIT stall times, and the reply goes to the other worker."""
    from appliance.orchestrator.workers.reply_stream import BUSY_LIMIT

    a, b = workers
    text = " ".join(TEXT.split()[:8])
    reference = await _reference(b, text)
    # Only a's engine hangs: b's first engine call may start before the test could see the
    # failover, so a setting both workers share would hang b as well.
    lease = await a.manager.acquire()
    lease.adapter.delay_s = BUSY_LIMIT * STALL_S + 3
    a.manager.release(lease)
    reply = link.reply()
    reply.feed(text)
    reply.finish()
    frames, switch, _ = await _play(reply, _nothing)
    [failover] = reply.failovers
    assert (failover.worker, failover.cause, failover.to) == (a.address, "stalled", b.address)
    assert "busy all along" in failover.detail
    waited = failover.detected_at - failover.last_frame_at
    assert BUSY_LIMIT * STALL_S <= waited < BUSY_LIMIT * STALL_S + 1.0
    assert switch == 0 and frames == reference


async def _nothing(_n: int) -> None:
    pass


@pytest.fixture
async def slow_controls(monkeypatch):
    """One worker whose Control answers ``delay[command]`` seconds late (a loaded machine, where a
    control can be overtaken by what is sent after it), a link to it, and what the worker did in
    order: ("control", command) once a control was handled, ("synthesize",) as a stream opened."""
    monkeypatch.setattr(MockSineAdapter, "delay_s", 0.01)
    control, synthesize = TTSService.Control, TTSService.Synthesize
    delay: dict[int, float] = {}
    seen: list[tuple] = []

    async def slow_control(self, request, context):
        await asyncio.sleep(delay.get(request.command, 0.0))
        try:
            return await control(self, request, context)
        finally:
            seen.append(("control", request.command))

    async def noted_synthesize(self, chunks, context):
        seen.append(("synthesize",))
        return await synthesize(self, chunks, context)

    monkeypatch.setattr(TTSService, "Control", slow_control)  # bound when the server starts
    monkeypatch.setattr(TTSService, "Synthesize", noted_synthesize)
    worker = await _worker()
    pool = StaticPool([worker.address])
    link = TtsLink(pool, "conv-1", stall_s=STALL_S)
    await link.open()
    yield worker, link, delay, seen
    await link.close()
    await pool.close()
    await worker.stop(grace=0)


async def test_a_stop_still_on_its_way_does_not_end_the_next_reply(slow_controls):
    # Barge-in sends STOP and at once (a backchannel check that found a real turn) the new reply
    # opens its stream: the STOP must still land on the reply it was for.
    worker, link, delay, seen = slow_controls
    delay[Control.STOP] = 0.3
    text = TEXT  # long enough to be under way when the STOP arrives
    reference = await _reference(worker, text)
    first = link.reply()
    first.feed(TEXT)
    first.finish()
    heard = 0
    async for _frame in first.frames():
        heard += 1
        if heard == 20:
            break
    first.cancel()
    stopping = asyncio.ensure_future(link.control(Control.STOP))  # as barge-in sends it
    second = link.reply()
    second.feed(text)
    second.finish()
    frames = [f async for f in second.frames()]
    assert await stopping
    assert frames == reference  # whole: the STOP ended the first reply, not this one
    assert seen[-2:] == [("control", Control.STOP), ("synthesize",)]  # the new stream after the STOP


async def test_controls_reach_the_worker_in_the_order_sent(slow_controls):
    # A false alarm: PAUSE, then RESUME right after. Had the RESUME overtaken the slow PAUSE, the
    # worker would stay paused and the reply would never finish.
    worker, link, delay, seen = slow_controls
    delay[Control.PAUSE] = 0.3
    text = TEXT[:300]
    reference = await _reference(worker, text)
    reply = link.reply()
    reply.feed(text)
    reply.finish()
    frames = []
    async for frame in reply.frames():
        frames.append(frame)
        if len(frames) == 20:
            pausing = asyncio.ensure_future(link.control(Control.PAUSE))
            resuming = asyncio.ensure_future(link.control(Control.RESUME))
    assert await pausing and await resuming
    assert frames == reference and not reply.failovers
    assert [e for e in seen if e[0] == "control"] == [("control", Control.PAUSE), ("control", Control.RESUME)]
