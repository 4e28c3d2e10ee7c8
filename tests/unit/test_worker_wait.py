"""The retry-with-backoff helper behind waiting for a TTS worker ([playback] tts_retry_s)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from appliance.orchestrator.workers.wait import Backoff, retry_until


class Unavailable(Exception):
    pass


def test_backoff_doubles_up_to_its_cap():
    assert list(itertools.islice(Backoff().delays(), 7)) == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert list(itertools.islice(Backoff(0.05, 0.3, 3.0).delays(), 4)) == pytest.approx(
        [0.05, 0.15, 0.3, 0.3]
    )


class Attempts:
    """Fails ``failures`` times, then returns "ok"; records when each try came and its time left."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[tuple[float, float]] = []

    async def __call__(self, left_s: float) -> str:
        self.calls.append((asyncio.get_running_loop().time(), left_s))
        if len(self.calls) <= self.failures:
            raise Unavailable(f"try {len(self.calls)}")
        return "ok"


async def test_retries_with_backoff_until_an_attempt_succeeds():
    attempt = Attempts(failures=3)
    t0 = asyncio.get_running_loop().time()
    assert await retry_until(attempt, 5.0, retry_on=(Unavailable,), backoff=Backoff(0.02, 0.08)) == "ok"
    times = [t - t0 for t, _ in attempt.calls]
    assert len(times) == 4
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    for gap, delay in zip(gaps, [0.02, 0.04, 0.08, 0.08], strict=True):  # slept before each try
        assert gap >= delay - 0.005
    assert all(0 < left <= 5.0 for _, left in attempt.calls)


async def test_gives_up_after_the_bound_with_the_last_error():
    attempt = Attempts(failures=10**6)
    t0 = asyncio.get_running_loop().time()
    with pytest.raises(Unavailable) as info:
        await retry_until(attempt, 0.3, retry_on=(Unavailable,), backoff=Backoff(0.02, 0.05))
    took = asyncio.get_running_loop().time() - t0
    assert 0.3 <= took < 2.0
    assert str(info.value) == f"try {len(attempt.calls)}"
    assert len(attempt.calls) >= 4
    assert attempt.calls[-1][1] <= 0.05  # the last try was told how little time was left


async def test_other_errors_are_not_retried():
    calls = []

    async def broken(left_s: float) -> None:
        calls.append(left_s)
        raise ValueError("bad request")

    with pytest.raises(ValueError):
        await retry_until(broken, 5.0, retry_on=(Unavailable,), backoff=Backoff(0.01))
    assert len(calls) == 1


async def test_cancelling_the_caller_ends_the_wait_at_once():
    attempt = Attempts(failures=10**6)
    task = asyncio.ensure_future(
        retry_until(attempt, 30.0, retry_on=(Unavailable,), backoff=Backoff(0.01, 0.05))
    )
    while len(attempt.calls) < 3:
        await asyncio.sleep(0.01)
    t0 = asyncio.get_running_loop().time()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.get_running_loop().time() - t0 < 0.1
    tries = len(attempt.calls)
    await asyncio.sleep(0.15)
    assert len(attempt.calls) == tries  # nothing keeps trying behind the caller's back
