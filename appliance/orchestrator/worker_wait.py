"""Retrying an attempt with backoff until it succeeds or a time bound passes.

Used when no TTS worker is available (a one-worker appliance whose worker is restarting): the
session is started again and again, 100 ms apart doubling to 1 s, for up to
``[playback] tts_retry_s``. Cancelling the caller ends the wait at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


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
