"""The soak benchmark's own rules, on made-up arrivals: when a reply frame counts as late for
playback, and what growth is measured between two samples at rest; and the runtime gauges every
service exports."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, generate_latest

from appliance.bench.soak import _growth, reply_lateness
from appliance.runtime_metrics import add_runtime_gauges, os_threads

RATE = 48000
FRAME = b"\0\0" * 960  # 20 ms at 48 kHz


def test_frames_on_time_or_early_are_not_late():
    frames = [(10.0 + i * 0.02 - (0.1 if i else 0), FRAME) for i in range(200)]
    assert reply_lateness(frames, RATE) == (0, 0)


def test_a_stall_after_the_first_second_counts_the_frames_that_missed_their_moment():
    frames = [(10.0 + i * 0.02, FRAME) for i in range(60)]  # 1.2 s on time
    frames += [(10.0 + 1.5 + i * 0.02, FRAME) for i in range(20)]  # then 0.3 s behind
    assert reply_lateness(frames, RATE) == (0, 20)


def test_lateness_inside_the_first_second_is_counted_apart():
    frames = [(10.0, FRAME), (10.2, FRAME), (10.21, FRAME)]
    assert reply_lateness(frames, RATE) == (2, 0)
    assert reply_lateness([], RATE) == (0, 0)


def test_growth_is_end_at_rest_against_warm_up_at_rest():
    a = {"orchestrator": {"rss_mb": 200.0, "fds": 30, "threads": 20, "asyncio_tasks": 10.0}}
    b = {"orchestrator": {"rss_mb": 230.0, "fds": 31, "threads": 20, "asyncio_tasks": 12.0}}
    assert _growth(a, b) == {"orchestrator": {"rss_pct": 15.0, "fds": 1, "threads": 0, "asyncio_tasks": 2.0}}


async def test_runtime_gauges_count_tasks_threads_and_descriptors_once_per_registry():
    registry = CollectorRegistry()
    loop = asyncio.get_running_loop()
    add_runtime_gauges(registry, loop)
    add_runtime_gauges(registry, loop)  # a retried start: no duplicate registration error
    before = registry.get_sample_value("appliance_asyncio_tasks")
    parked = [asyncio.create_task(asyncio.sleep(30)) for _ in range(5)]
    try:
        assert registry.get_sample_value("appliance_asyncio_tasks") == before + 5
    finally:
        for t in parked:
            t.cancel()
        await asyncio.gather(*parked, return_exceptions=True)
    assert registry.get_sample_value("appliance_process_threads") == os_threads() >= 1
    text = generate_latest(registry).decode()
    assert "process_resident_memory_bytes" in text and "process_open_fds" in text
