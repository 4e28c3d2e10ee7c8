"""Retrying an attempt with backoff until it succeeds or a time bound passes.

Used when no TTS worker is available (a one-worker appliance whose worker is restarting): the
session is started again and again, 100 ms apart doubling to 1 s, for up to
``[playback] tts_retry_s``. Cancelling the caller ends the wait at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from appliance.orchestrator.workers.pool import TtsUnavailable

T = TypeVar("T")

log = logging.getLogger(__name__)

MIN_ATTEMPT_S = 0.2  # the last StartSession of a wait gets at least this long


@dataclass(frozen=True)
class Backoff:
    first_s: float = 0.1
    max_s: float = 1.0
    factor: float = 2.0

    def delays(self) -> Iterator[float]:
        delay = self.first_s
        while True:
            yield delay
            delay = min(self.max_s, delay * self.factor)


async def retry_until(
    attempt: Callable[[float], Awaitable[T]],
    bound_s: float,
    *,
    retry_on: tuple[type[BaseException], ...],
    backoff: Backoff = Backoff(),
) -> T:
    """``attempt(time_left_s)`` until it returns, sleeping ``backoff`` before each try (the caller
    has just seen a first try fail). An attempt that raises one of ``retry_on`` is tried again
    while time is left; the one that ends past ``bound_s`` raises its error."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound_s
    for delay in backoff.delays():
        await asyncio.sleep(max(0.0, min(delay, deadline - loop.time())))
        try:
            return await attempt(max(0.0, deadline - loop.time()))
        except retry_on:
            if loop.time() >= deadline:
                raise
    raise AssertionError("unreachable: the backoff never ends")


async def wait_for_worker(
    start: Callable[[float], Awaitable[None]],
    retry_s: float,
    why: str,
    *,
    session_id: str,
    metrics=None,
    serving: Callable[[], str | None] = lambda: None,
) -> None:
    """``start(timeout_s)`` (start the session on any worker) until it succeeds or ``retry_s`` has
    passed, then raise :class:`TtsUnavailable`. Observed in ``appliance_tts_worker_wait_seconds``
    by outcome; ``serving`` names the worker that took the session, for the log."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    attempts = 0
    outcome = "cancelled"
    log.warning(
        "tts worker wait session=%s: no worker available, waiting up to %.1fs (%s)", session_id, retry_s, why
    )

    async def attempt(left_s: float) -> None:
        nonlocal attempts
        attempts += 1
        await start(max(left_s, MIN_ATTEMPT_S))

    try:
        await retry_until(attempt, retry_s, retry_on=(TtsUnavailable,))
        outcome = "recovered"
    except TtsUnavailable as exc:
        outcome = "gave_up"
        raise TtsUnavailable(f"no TTS worker available within {retry_s:.1f}s ({exc})") from None
    finally:
        waited_s = loop.time() - started
        if metrics is not None:
            metrics.worker_wait.labels(outcome).observe(waited_s)
        address = serving() if outcome == "recovered" else None
        log.log(
            logging.INFO if outcome == "recovered" else logging.WARNING,
            "tts worker wait session=%s: %s after %.0f ms (%d attempts)%s",
            session_id,
            outcome.replace("_", " "),
            waited_s * 1000,
            attempts,
            f" worker={address}" if address else "",
        )
