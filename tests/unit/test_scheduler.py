from __future__ import annotations

import asyncio
import os
import threading

import pytest

from appliance.tts.scheduler import ENGINE_NICE, DeadlineScheduler


async def test_earliest_deadline_runs_first():
    scheduler = DeadlineScheduler(threads=1)
    gate = threading.Event()
    order: list[str] = []
    try:
        blocker = scheduler.run(gate.wait, deadline=0)  # occupies the only thread
        await asyncio.sleep(0.05)
        jobs = [
            scheduler.run(lambda name=name: order.append(name), deadline=d)
            for name, d in [("late", 30.0), ("now", 1.0), ("soon", 5.0), ("also-now", 1.0)]
        ]
        assert scheduler.queued == 4
        gate.set()
        await asyncio.gather(blocker, *jobs)
        assert order == ["now", "also-now", "soon", "late"]  # ties keep submission order
    finally:
        scheduler.shutdown(wait=True)


async def test_results_and_exceptions_reach_the_caller():
    scheduler = DeadlineScheduler(threads=2)
    try:
        assert await scheduler.run(lambda: 6 * 7, deadline=0) == 42

        def boom():
            raise ValueError("engine failed")

        with pytest.raises(ValueError, match="engine failed"):
            await scheduler.run(boom, deadline=0)
    finally:
        scheduler.shutdown(wait=True)


async def test_jobs_run_in_parallel_on_several_threads():
    scheduler = DeadlineScheduler(threads=2)
    barrier = threading.Barrier(2, timeout=5)
    try:
        # Both must be inside their job at once for the barrier to open.
        await asyncio.gather(scheduler.run(barrier.wait, 0), scheduler.run(barrier.wait, 0))
    finally:
        scheduler.shutdown(wait=True)


async def test_cancelled_job_is_skipped_and_shutdown_refuses_new_work():
    scheduler = DeadlineScheduler(threads=1)
    gate = threading.Event()
    ran: list[int] = []
    blocker = scheduler.run(gate.wait, 0)
    await asyncio.sleep(0.05)
    doomed = scheduler.run(lambda: ran.append(1), 1)
    doomed.cancel()
    gate.set()
    await blocker
    await scheduler.run(lambda: None, 2)
    assert ran == []
    scheduler.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        scheduler.run(lambda: None, 0)


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="thread priorities are a POSIX feature")
async def test_engine_threads_run_at_a_lower_priority_than_the_loop():
    scheduler = DeadlineScheduler(threads=1)
    try:
        loop_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        engine_nice = await scheduler.run(
            lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), 0
        )
        assert engine_nice == min(19, loop_nice + ENGINE_NICE)
        assert (
            os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == loop_nice
        )  # the loop's is unchanged
    finally:
        scheduler.shutdown(wait=True)
