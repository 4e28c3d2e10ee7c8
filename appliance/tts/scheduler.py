"""Earliest-deadline-first scheduling of engine work on a few threads.

A stream's first segment is needed *now* (it is the time to first audio); later segments are
needed only when the audio before them has played out. Ordering the blocking engine calls by
that deadline lets a new session's first words overtake the tails of sessions that are already
talking, which is what keeps time-to-first-audio low when several sessions share two cores.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import threading
from collections.abc import Callable
from typing import Any

# Engine threads are CPU-bound for tens of ms at a time; at a lower priority they cannot hold a
# core that the event loop (frames, control acks) needs when it wakes. Linux: per-thread nice.
ENGINE_NICE = 5


class DeadlineScheduler:
    def __init__(self, threads: int = 2, name: str = "tts-synth") -> None:
        if threads < 1:
            raise ValueError("threads must be >= 1")
        self._heap: list[tuple[float, int, Callable[[], Any], asyncio.Future, asyncio.AbstractEventLoop]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._running = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(threads)
        ]
        for t in self._threads:
            t.start()

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._heap)

    @property
    def busy(self) -> int:
        """Engine calls running or waiting for a thread now."""
        with self._cond:
            return len(self._heap) + self._running

    def run(self, fn: Callable[[], Any], deadline: float) -> asyncio.Future:
        """Run ``fn`` on a worker thread, earliest ``deadline`` (loop.time() seconds) first."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._cond:
            if self._closed:
                raise RuntimeError("scheduler is shut down")
            heapq.heappush(self._heap, (deadline, next(self._order), fn, future, loop))
            self._cond.notify()
        return future

    def _work(self) -> None:
        _lower_priority(ENGINE_NICE)
        while True:
            with self._cond:
                while not self._heap and not self._closed:
                    self._cond.wait()
                if not self._heap:
                    return
                _deadline, _n, fn, future, loop = heapq.heappop(self._heap)
                if future.cancelled():
                    continue
                self._running += 1
            try:
                outcome = (fn(), None)
            except BaseException as exc:  # noqa: BLE001 -- handed to the awaiting coroutine
                outcome = (None, exc)
            finally:
                with self._cond:
                    self._running -= 1
            try:
                loop.call_soon_threadsafe(_settle, future, *outcome)
            except RuntimeError:  # the loop is gone (shutdown): nobody is waiting
                pass

    def shutdown(self, wait: bool = False) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if wait:
            for t in self._threads:
                t.join()


def _lower_priority(step: int) -> None:
    """Make this thread yield the CPU to the event loop and the RPC threads when they wake."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + step))
    except (AttributeError, OSError):  # not Linux, or not allowed: keep the default
        pass


def _settle(future: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
