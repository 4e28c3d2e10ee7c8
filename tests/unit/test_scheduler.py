from __future__ import annotations

import asyncio
import threading

import pytest

from appliance.tts.scheduler import DeadlineScheduler


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
