"""llama.cpp in this process (the ``xllamacpp`` wheel): one loaded model shared by every session.

The model is loaded once, by :meth:`LlamaEngine.load`, and serves ``parallel`` generations at
once (llama.cpp's own slots, continuous batching; each slot has ``context_tokens`` of context).
A generation runs on a thread of the engine's own pool, never on the event loop, so one
session's reply cannot hold up another session's audio. Its chunks reach the loop through
``call_soon_threadsafe``; the stop flag is read by llama.cpp's per-chunk callback, whose ``True``
ends the generation at the next token.

At most ``parallel`` generations run and at most ``max_waiting`` more wait for a slot; beyond
that :meth:`LlamaEngine.generate` refuses at once with ``responder_busy`` — there is no
unbounded queue.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.orchestrator.respond.base import ResponderError

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
_END = object()


def default_threads() -> int:
    """Half the CPU cores, at least one: ASR and the voice share the CPU, and llama.cpp's threads
    spin while they wait, so one thread per core makes every part slower (measured on two cores
    under load: 1.5 tokens/s with two threads, 12 with one)."""
    return max(1, (os.cpu_count() or 2) // 2)


class ModelLoadError(RuntimeError):
    """The model file is missing, is not a GGUF, or llama.cpp could not load it."""


class ContextOverflow(Exception):
    """The prompt does not fit the slot's context (the runtime's own token counts, when it gave them)."""

    def __init__(self, message: str, prompt_tokens: int = 0, context_tokens: int = 0) -> None:
        super().__init__(message)
        self.prompt_tokens = prompt_tokens
        self.context_tokens = context_tokens


@dataclass
class EngineSettings:
    model_path: Path
    context_tokens: int = 2048  # per generation (slot)
    parallel: int = 2
    max_waiting: int = 2
    n_gpu_layers: int = 0
    threads: int = 0  # 0: default_threads()
    fetch_hint: str = "appliance models fetch"


@dataclass
class Chunk:
    """A piece of the reply (``text``), or the end with llama.cpp's own timings."""

    text: str = ""
    finish_reason: str | None = None
    timings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Generation:
    """Counters of one generation, kept by the worker thread (read after it ends)."""

    stop: threading.Event = field(default_factory=threading.Event)
    chunks_after_stop: int = 0
    done: threading.Event = field(default_factory=threading.Event)


class LlamaEngine:
    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self._server = None
        self._pool = concurrent.futures.ThreadPoolExecutor(settings.parallel, thread_name_prefix="llm")
        self._slots: asyncio.Semaphore | None = None
        self._waiting = 0
        self.running = 0

    @property
    def name(self) -> str:
        return self.settings.model_path.name

    # --- loading -----------------------------------------------------------------------------

    def load(self) -> None:
        """Check the file and load it (blocking: call it from a thread). Raises :class:`ModelLoadError`."""
        path = self.settings.model_path
        hint = self.settings.fetch_hint
        if not path.is_file():
            raise ModelLoadError(f"the LLM model file {path} does not exist; install it with `{hint}`")
        with path.open("rb") as fh:
            magic = fh.read(4)
        if magic != GGUF_MAGIC:
            raise ModelLoadError(
                f"{path} is not a GGUF model file (it starts with {magic!r}); reinstall it with `{hint}`"
            )
        import xllamacpp

        s = self.settings
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_parallel = s.parallel
        params.n_ctx = s.context_tokens * s.parallel  # llama.cpp splits the context across its slots
        params.n_gpu_layers = s.n_gpu_layers
        params.warmup = False
        params.verbosity = 0  # llama.cpp's own log is per token; failures come back as exceptions and errors
        params.ctx_shift = False  # overflow is handled here (history trimmed), not by dropping tokens
        threads = s.threads or default_threads()
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        try:
            self._server = xllamacpp.Server(params)
        except Exception as exc:  # noqa: BLE001 - the binding raises whatever llama.cpp reported
            raise ModelLoadError(
                f"llama.cpp could not load {path}: {exc}; reinstall it with `{hint}`"
            ) from None
        log.info(
            "LLM loaded: %s (context %d tokens × %d slots, n_gpu_layers=%d)",
            path.name,
            s.context_tokens,
            s.parallel,
            s.n_gpu_layers,
        )

    async def load_async(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.load)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._server = None

    # --- generating --------------------------------------------------------------------------

    async def generate(
        self, request: dict[str, Any], generation: Generation | None = None
    ) -> AsyncIterator[Chunk]:
        """Stream one chat completion (``request`` as for ``/chat/completions``, ``stream`` implied).
        Closing the iterator (or cancelling its consumer) stops the generation at its next token."""
        if self._server is None:
            raise ResponderError("responder_unavailable", "the LLM is not loaded")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.parallel)
        if self._slots.locked() and self._waiting >= self.settings.max_waiting:
            raise ResponderError(
                "responder_busy",
                f"the assistant is answering {self.running} other sessions; please try again shortly",
            )
        gen = generation or Generation()
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        self.running += 1
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        loop.run_in_executor(self._pool, self._run, {**request, "stream": True}, gen, loop, queue)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            gen.stop.set()  # llama.cpp returns at its next token; a new job waits that long for the thread
            self.running -= 1
            self._slots.release()

    def _run(
        self, request: dict[str, Any], gen: Generation, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue
    ) -> None:
        put = queue.put_nowait

        def on_chunk(chunk: Any) -> bool:
            if gen.stop.is_set():
                gen.chunks_after_stop += 1
                return True
            item = _parse(chunk)
            if item is not None:
                try:
                    loop.call_soon_threadsafe(put, item)
                except RuntimeError:  # the loop is gone (shutdown): nobody to tell, stop
                    gen.stop.set()
                    return True
            return False

        def tell(item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop may be gone (shutdown)
                loop.call_soon_threadsafe(put, item)

        try:
            result = self._server.handle_chat_completions(request, on_chunk)
            if isinstance(result, dict) and "error" in result:  # refused before the first token
                tell(_error(result["error"]))
        except Exception as exc:  # noqa: BLE001 - reported to the consumer, never lost
            tell(ResponderError("responder_unavailable", f"llama.cpp failed: {exc}"))
        finally:
            gen.done.set()
            tell(_END)


def _parse(chunk: Any) -> Chunk | ResponderError | ContextOverflow | None:
    if not isinstance(chunk, dict):
        return None
    if "error" in chunk:
        return _error(chunk["error"])
    choices = chunk.get("choices") or []
    if not choices:
        return None
    choice = choices[0]
    text = (choice.get("delta") or {}).get("content") or ""
    reason = choice.get("finish_reason")
    if not text and not reason:
        return None
    return Chunk(text=text, finish_reason=reason, timings=chunk.get("timings") or {})


def _error(error: Any) -> ResponderError | ContextOverflow:
    message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
    kind = error.get("type", "") if isinstance(error, dict) else ""
    if kind == "exceed_context_size_error" or "context" in message.lower() and "exceed" in message.lower():
        counts = error if isinstance(error, dict) else {}
        return ContextOverflow(
            message, int(counts.get("n_prompt_tokens") or 0), int(counts.get("n_ctx") or 0)
        )
    return ResponderError("responder_unavailable", f"llama.cpp refused the request: {message}")
