"""The engine adapter interface: one small class per engine kind.

An adapter knows nothing of gRPC or sessions. It loads a model and turns text into float32
mono PCM chunks at the engine's native rate through a *blocking* generator; the base class
runs that generator off the event loop, one chunk per hop, and stops between chunks when the
caller cancels. The worker turns the chunks into 20 ms frames at 48 kHz.
"""

from __future__ import annotations

import asyncio
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from appliance.discovery import UNKNOWN_ENGINE, EngineCapabilities
from appliance.tts.catalog import ModelSpec

WARMUP_TEXT = "Hello, this is a warm-up."


class SynthesisTracker:
    """Start times of the blocking synthesis calls in flight, for the watchdog."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._started: dict[int, float] = {}
        self._next = 0

    def begin(self) -> int:
        with self._lock:
            self._next += 1
            self._started[self._next] = self._clock()
            return self._next

    def end(self, token: int) -> None:
        with self._lock:
            self._started.pop(token, None)

    def oldest_age(self) -> float:
        """Seconds the longest-running call has been going (0 when none is)."""
        with self._lock:
            if not self._started:
                return 0.0
            return self._clock() - min(self._started.values())

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._started)


@dataclass
class PcmChunk:
    samples: np.ndarray  # float32, mono, in [-1, 1]
    sample_rate: int
    synth_s: float = 0.0  # wall time the engine took to make it
    text: str = field(default="", repr=False)
    processed: object = field(default=None, repr=False)  # what ``stream(post=...)`` made of it


_END = object()


class EngineBusy(RuntimeError):
    """The engine cannot take this stream now (another has what it needs): the worker answers
    UNAVAILABLE, so the caller may go to another worker."""


class InputRejected(ValueError):
    """Text an engine cannot voice as given (too long for its context): the caller's error, which
    the worker answers INVALID_ARGUMENT, not an engine failure."""


class EngineAdapter(ABC):
    engine: ClassVar[str]
    # What the engine can do, for routing; the worker's record combines those of its engines.
    capabilities: ClassVar[EngineCapabilities] = UNKNOWN_ENGINE
    # True when a segment's first audio comes before the whole segment is made (set at load).
    streams_within_segment: bool = False

    def __init__(self, spec: ModelSpec, device: str = "cpu") -> None:
        self.spec = spec
        self.device = device
        self.models_dir = None
        self.onnx_threads = 0  # intra-op threads for ONNX engines; 0 lets onnxruntime decide
        # True while other engine calls run at the same time (set by the worker); engines may
        # then trade single-call speed for throughput.
        self.contended: Callable[[], bool] = lambda: False
        self.loaded = False
        # stream() calls under way: a reload unloads the adapter it replaced once none is.
        self.streaming = 0

    @property
    def sample_rate(self) -> int:
        return self.spec.sample_rate

    @abstractmethod
    def load(self) -> None:
        """Load weights (blocking; called in a worker thread)."""

    @abstractmethod
    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        """Blocking generator of float32 mono chunks at ``sample_rate``."""

    def check_options(self, options: Mapping[str, str]) -> None:
        """Raise InputRejected for session options (``StartSession.options``) this model cannot
        honour; the default takes any (an engine with none to read ignores them)."""

    def synthesize_with(self, text: str, options: Mapping[str, str]) -> Iterator[np.ndarray]:
        """:meth:`synthesize` for a session with ``options`` (already checked)."""
        return self.synthesize(text)

    def unload(self) -> None:
        self.loaded = False

    def warmup(self) -> None:
        for _ in self.synthesize(WARMUP_TEXT):
            pass

    async def stream(
        self,
        text: str,
        *,
        cancel: threading.Event | None = None,
        run: Callable[[Callable[[], object]], Awaitable] | None = None,
        tracker: SynthesisTracker | None = None,
        post: Callable[[np.ndarray], object] | None = None,
        options: Mapping[str, str] | None = None,
    ) -> AsyncIterator[PcmChunk]:
        """Drive :meth:`synthesize` off the event loop, one chunk per ``run(fn)`` call (default:
        the loop's executor); stop between chunks once ``cancel`` is set. ``post`` runs on each
        chunk in the same call (off the loop too); its result is the chunk's ``processed``."""
        loop = asyncio.get_running_loop()
        run = run or (lambda fn: loop.run_in_executor(None, fn))
        gen = self.synthesize_with(text, options) if options else self.synthesize(text)
        # A stream cancelled while an engine call is inside the generator cannot close it then
        # (a generator running in another thread refuses); that call closes it as it returns,
        # so an engine's clean-up (a thread of its own, a model's run) never waits for the GC.
        inside = threading.Lock()
        state = {"running": False, "abandoned": False}

        def next_chunk():
            token = tracker.begin() if tracker else None
            t0 = time.perf_counter()
            with inside:
                state["running"] = True
            try:
                chunk = next(gen, _END)
                took = time.perf_counter() - t0
            finally:
                with inside:
                    state["running"] = False
                    abandoned = state["abandoned"]
                if abandoned:
                    gen.close()
                if tracker:
                    tracker.end(token)
            if chunk is _END:
                return chunk, took, None
            samples = np.asarray(chunk, dtype=np.float32)
            return samples, took, post(samples) if post else None

        self.streaming += 1
        try:
            while cancel is None or not cancel.is_set():
                samples, took, processed = await run(next_chunk)
                if samples is _END or (cancel is not None and cancel.is_set()):
                    return
                yield PcmChunk(samples, self.sample_rate, took, text, processed)
        finally:
            self.streaming -= 1
            with inside:
                state["abandoned"] = state["running"]
            if not state["abandoned"]:
                gen.close()
