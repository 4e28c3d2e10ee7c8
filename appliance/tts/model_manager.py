"""Which TTS models are in memory: loaded on demand, shared by refcount, evicted by LRU and TTL.

Sessions ``acquire`` a model and hold a :class:`ModelLease` while they synthesise; a model with
a lease is never evicted or unloaded (``close`` excepted). The default model is pinned: LRU and
TTL eviction skip it. Blocking adapter calls (load, warmup, unload) run in an executor, and at
most ``max_parallel_loads`` loads or reloads run at once.

All bookkeeping happens on the event loop thread, so state changes between two ``await``s are
atomic; that is what makes the capacity check and the adapter swap on reload race-free.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from enum import StrEnum
from typing import Self

from appliance.tts.adapters import create_adapter
from appliance.tts.adapters.base import EngineAdapter
from appliance.tts.catalog import Catalog, ModelError, ModelSpec, UnknownModel  # errors: re-exported

log = logging.getLogger(__name__)


class ModelInUse(ModelError):
    def __init__(self, model_id: str, refcount: int) -> None:
        super().__init__(model_id, f"model {model_id!r} is in use by {refcount} session(s)")
        self.refcount = refcount


class NotResident(ModelError):
    def __init__(self, model_id: str, detail: str = "is not loaded") -> None:
        super().__init__(model_id, f"model {model_id!r} {detail}")


class CapacityExceeded(ModelError):
    def __init__(self, model_id: str, cap: int, occupants: list[str]) -> None:
        super().__init__(
            model_id,
            f"cannot load model {model_id!r}: all {cap} resident slot(s) are taken by models "
            f"in use, pinned or loading ({', '.join(occupants)})",
        )
        self.cap = cap
        self.occupants = occupants


class ModelLoadFailed(ModelError):
    def __init__(self, model_id: str, reason: str) -> None:
        super().__init__(model_id, f"model {model_id!r} failed to load: {reason}")
        self.reason = reason


class ModelState(StrEnum):
    AVAILABLE = "available"
    LOADING = "loading"
    RESIDENT = "resident"
    FAILED = "failed"


@dataclass(frozen=True)
class ModelStatus:
    model_id: str
    engine: str
    language: str
    sample_rate: int
    state: ModelState
    refcount: int
    idle_s: float  # seconds since last use; 0 while in use or not resident
    load_ms: float  # load + warmup time of the resident adapter; 0 when not resident
    pinned: bool
    is_default: bool
    error: str | None  # the last load or reload failure, cleared by a successful one


@dataclass(eq=False)
class _Entry:
    spec: ModelSpec
    pinned: bool
    adapter: EngineAdapter | None = None
    refcount: int = 0
    loaded_at: float = 0.0
    last_used: float = 0.0
    load_ms: float = 0.0
    error: str | None = None
    loading: asyncio.Task[float] | None = None

    @property
    def model_id(self) -> str:
        return self.spec.model_id


class ModelLease:
    """One session's hold on a model. ``adapter`` is looked up on each access, so a reload
    swaps it under a running session."""

    def __init__(self, manager: ModelManager, entry: _Entry) -> None:
        self._manager = manager
        self._entry = entry
        self._released = False

    @property
    def model_id(self) -> str:
        return self._entry.model_id

    @property
    def adapter(self) -> EngineAdapter:
        adapter = self._entry.adapter
        if adapter is None:
            raise NotResident(self.model_id, "was unloaded while leased")
        return adapter

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._manager._release_entry(self._entry)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


class ModelManager:
    def __init__(
        self,
        catalog: Catalog,
        *,
        default_model: str,
        resident_cap: int = 2,
        ttl_s: float = 600,
        min_residency_s: float = 60,
        max_parallel_loads: int = 1,
        warmup: bool = True,
        device: str = "auto",
        clock: Callable[[], float] = time.monotonic,
        adapter_factory: Callable[[ModelSpec], EngineAdapter] | None = None,
        executor: Executor | None = None,
    ) -> None:
        if resident_cap < 1:
            raise ValueError(f"resident_cap must be at least 1, got {resident_cap}")
        if max_parallel_loads < 1:
            raise ValueError(f"max_parallel_loads must be at least 1, got {max_parallel_loads}")
        catalog.get(default_model)
        self.catalog = catalog
        self.default_model = default_model
        self.resident_cap = resident_cap
        self.ttl_s = ttl_s
        self.min_residency_s = min_residency_s
        self._warmup = warmup
        self._clock = clock
        self._executor = executor
        self._factory = adapter_factory or (lambda spec: create_adapter(spec, device, catalog.models_dir))
        self._entries = {s.model_id: _Entry(s, pinned=s.model_id == default_model) for s in catalog.specs()}
        self._load_slots = asyncio.Semaphore(max_parallel_loads)
        # Models past the capacity check whose adapter is not in place yet: they hold a slot.
        self._claimed: set[str] = set()

    async def start(self, preload: list[str] | None = None) -> None:
        """Load the default model (a failure raises) and then each preload model (a failure is
        logged and left FAILED in the snapshot)."""
        extra = [m for m in dict.fromkeys(preload or []) if m != self.default_model]
        for model_id in extra:
            self._entry(model_id)
        if 1 + len(extra) > self.resident_cap:
            raise ValueError(
                f"default model plus preload list is {1 + len(extra)} models, "
                f"more than resident_cap={self.resident_cap}"
            )
        await self.load(self.default_model)
        for model_id in extra:
            try:
                await self.load(model_id)
            except ModelError as exc:
                log.warning("preload of %s skipped: %s", model_id, exc)

    async def close(self) -> None:
        """Wait for loads in flight, then unload every resident model, leased or not."""
        pending = [e.loading for e in self._entries.values() if e.loading is not None]
        if pending:
            await asyncio.wait(pending)  # not gather: cancelling close must not cancel the loads
        for entry in self._entries.values():
            if entry.adapter is not None:
                await self._unload_adapter(*self._detach(entry), reason="shutdown")

    async def acquire(self, model_id: str | None = None) -> ModelLease:
        """Lease a model (None or "" means the default), loading it first if needed."""
        entry = self._entry(model_id or self.default_model)
        # Counting the waiter before the load keeps the fresh model from being evicted by
        # another load between this load finishing and this coroutine resuming.
        entry.refcount += 1
        try:
            if entry.adapter is None:
                await self.load(entry.model_id)
            if entry.adapter is None:
                raise NotResident(entry.model_id, "was unloaded before the lease was granted")
        except BaseException:
            entry.refcount -= 1
            raise
        entry.last_used = self._clock()
        return ModelLease(self, entry)

    def release(self, lease: ModelLease) -> None:
        lease.release()

    def _release_entry(self, entry: _Entry) -> None:
        entry.refcount -= 1
        entry.last_used = self._clock()

    async def load(self, model_id: str) -> float:
        """Make the model resident; returns the load time in ms (0.0 if it already was).
        Concurrent calls for one model share a single load."""
        entry = self._entry(model_id)
        if entry.adapter is not None:
            return 0.0
        if entry.loading is None:
            entry.loading = asyncio.create_task(self._load_fresh(entry), name=f"load-{model_id}")
            # Retrieve the outcome even if every awaiter was cancelled, so asyncio does not warn.
            entry.loading.add_done_callback(lambda t: t.cancelled() or t.exception())
        # Shielded: one cancelled caller must not cancel the load the others are waiting for.
        return await asyncio.shield(entry.loading)

    async def _load_fresh(self, entry: _Entry) -> float:
        try:
            async with self._load_slots:
                victims = self._claim_slot(entry)
                try:
                    for victim_id, adapter in victims:
                        await self._unload_adapter(victim_id, adapter, reason="lru")
                    adapter, ms = await self._build(entry.spec)
                    entry.adapter, entry.load_ms, entry.error = adapter, ms, None
                    entry.loaded_at = entry.last_used = self._clock()
                finally:
                    self._claimed.discard(entry.model_id)
        except ModelLoadFailed as exc:
            entry.error = exc.reason
            raise
        finally:
            entry.loading = None
        log.info("loaded %s in %.0f ms", entry.model_id, ms)
        return ms

    async def unload(self, model_id: str) -> None:
        entry = self._entry(model_id)
        if entry.refcount > 0:
            raise ModelInUse(model_id, entry.refcount)
        if entry.adapter is None:
            raise NotResident(model_id, "is still loading" if entry.loading else "is not loaded")
        await self._unload_adapter(*self._detach(entry), reason="requested")

    async def reload(self, model_id: str) -> float:
        """Load and warm a fresh adapter, then swap it in; the old one is unloaded after the
        swap. A model that is not resident is simply loaded. Returns the load time in ms."""
        entry = self._entry(model_id)
        if entry.adapter is None:
            return await self.load(model_id)
        async with self._load_slots:
            try:
                fresh, ms = await self._build(entry.spec)
            except ModelLoadFailed as exc:
                entry.error = exc.reason
                raise
        old = entry.adapter
        if old is None:
            await self._unload_adapter(model_id, fresh, reason="reload abandoned")
            raise NotResident(model_id, "was unloaded while its reload was building")
        entry.adapter, entry.load_ms, entry.error = fresh, ms, None
        entry.loaded_at = self._clock()
        log.info("reloaded %s in %.0f ms", model_id, ms)
        await self._unload_adapter(model_id, old, reason="replaced")
        return ms

    async def evict_idle(self) -> list[str]:
        """Unload every unpinned, unleased model idle for ttl_s and resident for
        min_residency_s. Returns the ids it unloaded."""
        now = self._clock()
        stale = [
            e
            for e in self._entries.values()
            if self._evictable(e)
            and now - e.last_used >= self.ttl_s
            and now - e.loaded_at >= self.min_residency_s
        ]
        detached = [self._detach(e) for e in stale]
        for model_id, adapter in detached:
            await self._unload_adapter(model_id, adapter, reason="idle")
        return [model_id for model_id, _ in detached]

    async def run_evictor(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.evict_idle()
            except Exception:
                log.exception("idle eviction pass failed")

    def snapshot(self) -> list[ModelStatus]:
        now = self._clock()
        return [self._status(e, now) for e in self._entries.values()]

    def resident_ids(self) -> list[str]:
        return [e.model_id for e in self._entries.values() if e.adapter is not None]

    def refcount(self, model_id: str) -> int:
        return self._entry(model_id).refcount

    def total_refcount(self) -> int:
        return sum(e.refcount for e in self._entries.values())

    def is_resident(self, model_id: str) -> bool:
        entry = self._entries.get(model_id)
        return entry is not None and entry.adapter is not None

    def _entry(self, model_id: str) -> _Entry:
        try:
            return self._entries[model_id]
        except KeyError:
            missing = self.catalog.missing.get(model_id, "")
            raise UnknownModel(model_id, sorted(self._entries), missing) from None

    @staticmethod
    def _evictable(entry: _Entry) -> bool:
        return entry.adapter is not None and entry.refcount == 0 and not entry.pinned

    def _claim_slot(self, entry: _Entry) -> list[tuple[str, EngineAdapter]]:
        """Reserve a resident slot for ``entry``, detaching LRU victims to make room. No awaits
        in here, so concurrent loads cannot both take the last slot."""
        occupants = self.resident_ids() + sorted(self._claimed)
        excess = len(occupants) + 1 - self.resident_cap
        victims: list[tuple[str, EngineAdapter]] = []
        if excess > 0:
            candidates = [e for e in self._entries.values() if self._evictable(e)]
            candidates.sort(key=lambda e: e.last_used)
            if len(candidates) < excess:
                raise CapacityExceeded(entry.model_id, self.resident_cap, occupants)
            victims = [self._detach(e) for e in candidates[:excess]]
        self._claimed.add(entry.model_id)
        return victims

    def _detach(self, entry: _Entry) -> tuple[str, EngineAdapter]:
        adapter = entry.adapter
        assert adapter is not None
        entry.adapter = None
        entry.loaded_at = entry.load_ms = 0.0
        return entry.model_id, adapter

    async def _build(self, spec: ModelSpec) -> tuple[EngineAdapter, float]:
        def build() -> tuple[EngineAdapter, float]:
            t0 = time.perf_counter()
            adapter = self._factory(spec)
            try:
                adapter.load()
                if self._warmup:
                    adapter.warmup()
            except BaseException:
                with contextlib.suppress(Exception):
                    adapter.unload()  # best effort: free whatever the half-built adapter holds
                raise
            return adapter, (time.perf_counter() - t0) * 1000

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, build)
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            log.warning("loading %s failed: %s", spec.model_id, reason)
            raise ModelLoadFailed(spec.model_id, reason) from exc

    async def _unload_adapter(self, model_id: str, adapter: EngineAdapter, *, reason: str) -> None:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        try:
            await loop.run_in_executor(self._executor, adapter.unload)
        except Exception:
            log.exception("unloading %s (%s) raised; dropping it anyway", model_id, reason)
            return
        verb = "evicted" if reason in ("lru", "idle") else "unloaded"
        log.info("%s %s (%s) in %.0f ms", verb, model_id, reason, (time.perf_counter() - t0) * 1000)

    def _status(self, entry: _Entry, now: float) -> ModelStatus:
        if entry.adapter is not None:
            state = ModelState.RESIDENT
        elif entry.loading is not None:
            state = ModelState.LOADING
        elif entry.error is not None:
            state = ModelState.FAILED
        else:
            state = ModelState.AVAILABLE
        idle = now - entry.last_used if state is ModelState.RESIDENT and entry.refcount == 0 else 0.0
        spec = entry.spec
        return ModelStatus(
            model_id=spec.model_id,
            engine=spec.engine,
            language=spec.language,
            sample_rate=spec.sample_rate,
            state=state,
            refcount=entry.refcount,
            idle_s=idle,
            load_ms=entry.load_ms,
            pinned=entry.pinned,
            is_default=spec.model_id == self.default_model,
            error=entry.error,
        )
