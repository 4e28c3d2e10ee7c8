"""Recognition work by priority, one pass at a time on one engine.

Three kinds of pass compete for the engine (which runs one at a time and cannot be stopped once
started): the **final** pass of a turn that ended always goes first; a **speculative** pass (the
utterance so far, at a pause) and a **partial** one (a progress transcript of a long turn) are
only started when the engine is idle and its measured pass time says the pass will be over before
a final could need the engine (``budget_ms``). A pass still waiting when its caller gives up is
dropped without running. Every result carries ``queue_ms``: how long it waited for the engine.

One scheduler per engine (:func:`scheduler_for`), shared by every session using that engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import heapq
import itertools
import weakref

import numpy as np

from appliance.asr.base import AsrEngine, Transcript

PASS_SMOOTHING = 0.3  # weight of the newest pass in the running estimate of the pass time


class Priority(enum.IntEnum):
    FINAL = 0
    SPECULATIVE = 1
    PARTIAL = 2


@dataclasses.dataclass(order=True)
class _Job:
    priority: int
    seq: int
    audio: np.ndarray = dataclasses.field(compare=False)
    future: asyncio.Future = dataclasses.field(compare=False)
    requested_at: float = dataclasses.field(compare=False)


class AsrScheduler:
    def __init__(self, engine: AsrEngine) -> None:
        self.engine = engine
        warmup = getattr(engine, "warmup_ms", None)
        self.pass_ms: float | None = warmup if isinstance(warmup, int | float) and warmup > 0 else None
        self.skipped = {Priority.SPECULATIVE: 0, Priority.PARTIAL: 0}
        self._queue: list[_Job] = []
        self._seq = itertools.count()
        self._running: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def idle(self) -> bool:
        self._bind()
        return self._running is None and not any(not j.future.done() for j in self._queue)

    def worth_starting(self, priority: Priority, budget_ms: float) -> bool:
        """May an optional pass start now: the engine is idle and one pass fits in ``budget_ms``
        (an engine not measured yet: a speculative pass may, a partial may not)."""
        known = self.pass_ms is not None and self.pass_ms <= budget_ms
        ok = self.idle and (known or (self.pass_ms is None and priority is Priority.SPECULATIVE))
        if not ok:
            self.skipped[priority] += 1
        return ok

    async def transcribe(self, audio: np.ndarray, priority: Priority = Priority.FINAL) -> Transcript:
        """The transcript of ``audio`` once the engine has run it, after every pass of a higher
        priority that was waiting; cancelling drops a pass that has not started."""
        loop = self._bind()
        job = _Job(int(priority), next(self._seq), audio, loop.create_future(), loop.time())
        heapq.heappush(self._queue, job)
        self._dispatch()
        return await job.future

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests): nothing of the old one is running here
            self._loop, self._queue, self._running = loop, [], None
        return loop

    def _dispatch(self) -> None:
        while self._running is None and self._queue:
            job = heapq.heappop(self._queue)
            if not job.future.done():
                self._running = asyncio.ensure_future(self._run(job))

    async def _run(self, job: _Job) -> None:
        loop = asyncio.get_running_loop()
        queue_ms = (loop.time() - job.requested_at) * 1000
        try:
            transcript = await self.engine.transcribe(job.audio, partial=job.priority == Priority.PARTIAL)
        except BaseException as exc:  # noqa: BLE001 (the caller gets it)
            if not job.future.done():
                job.future.set_exception(exc)
        else:
            if transcript.asr_ms > 0:
                self.pass_ms = (
                    transcript.asr_ms
                    if self.pass_ms is None
                    else ((1 - PASS_SMOOTHING) * self.pass_ms + PASS_SMOOTHING * transcript.asr_ms)
                )
            if not job.future.done():
                job.future.set_result(dataclasses.replace(transcript, queue_ms=round(queue_ms, 1)))
        finally:
            if self._loop is loop:
                self._running = None
                self._dispatch()


_SCHEDULERS: weakref.WeakKeyDictionary[AsrEngine, AsrScheduler] = weakref.WeakKeyDictionary()


def scheduler_for(engine: AsrEngine) -> AsrScheduler:
    """The engine's scheduler (made on first use): every session on an engine queues in one place."""
    scheduler = _SCHEDULERS.get(engine)
    if scheduler is None:
        scheduler = _SCHEDULERS[engine] = AsrScheduler(engine)
    return scheduler
