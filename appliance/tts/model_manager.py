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

from appliance.tts.adapters import create_adapter
from appliance.tts.adapters.base import EngineAdapter
from appliance.tts.catalog import Catalog, ModelError, ModelSpec, UnknownModel  # errors: re-exported
from appliance.tts.model_lease import ModelEntry, ModelLease
from appliance.tts.model_memory import MB, Holder, MemoryProbe, OverBudget, growth, plan_room, read_memory
from appliance.tts.model_status import (  # re-exported: the worker and tests import them from here
    CapacityExceeded,
    MemoryBudgetExceeded,
    ModelInUse,
    ModelLoadFailed,
    ModelStatus,
    NotResident,
)

log = logging.getLogger(__name__)

RETIRE_POLL_S = 0.05


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
        ram_budget_mb: float = 0,
        vram_budget_mb: float = 0,
        memory_probe: MemoryProbe = read_memory,
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
        self._device = device
        self._budgets = {"cpu": int(ram_budget_mb * MB), "cuda": int(vram_budget_mb * MB)}
        self._probe = memory_probe
        self._factory = adapter_factory or (lambda spec: create_adapter(spec, device, catalog.models_dir))
        self._entries = {
            s.model_id: ModelEntry(s, pinned=s.model_id == default_model) for s in catalog.specs()
        }
        self._load_slots = asyncio.Semaphore(max_parallel_loads)
        # Models past the capacity check whose adapter is not in place yet: they hold a slot
        # and the memory they are expected to take, by device.
        self._claimed: dict[str, tuple[str, int]] = {}
        self._retiring: set[asyncio.Task] = set()  # replaced adapters waiting for their last stream

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
        for task in self._retiring:
            task.cancel()  # each unloads its adapter as it ends
        if self._retiring:
            await asyncio.wait(self._retiring)
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

    def _release_entry(self, entry: ModelEntry) -> None:
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

    async def _load_fresh(self, entry: ModelEntry) -> float:
        try:
            async with self._load_slots:
                victims = self._claim_slot(entry)
                try:
                    for victim_id, adapter in victims:
                        await self._unload_adapter(victim_id, adapter, reason="lru")
                    adapter, ms, size, device = await self._build(entry.spec)
                    entry.adapter, entry.load_ms, entry.error = adapter, ms, None
                    entry.resident_bytes = entry.size_hint = size
                    entry.device = device
                    entry.loaded_at = entry.last_used = self._clock()
                finally:
                    self._claimed.pop(entry.model_id, None)
                await self._trim(entry)
        except ModelLoadFailed as exc:
            entry.error = exc.reason
            raise
        finally:
            entry.loading = None
        log.info("loaded %s in %.0f ms: %.0f MB on %s", entry.model_id, ms, size / MB, device)
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
                fresh, ms, size, device = await self._build(entry.spec)
            except ModelLoadFailed as exc:
                entry.error = exc.reason
                raise
        old = entry.adapter
        if old is None:
            await self._unload_adapter(model_id, fresh, reason="reload abandoned")
            raise NotResident(model_id, "was unloaded while its reload was building")
        entry.adapter, entry.load_ms, entry.error = fresh, ms, None
        entry.resident_bytes = entry.size_hint = size
        entry.device = device
        entry.loaded_at = self._clock()
        log.info("reloaded %s in %.0f ms", model_id, ms)
        if old.streaming:
            # Another session's segment under way finishes on the adapter it began on.
            task = asyncio.create_task(self._retire(model_id, old), name=f"retire-{model_id}")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        else:
            await self._unload_adapter(model_id, old, reason="replaced")
        return ms

    async def _retire(self, model_id: str, adapter: EngineAdapter) -> None:
        try:
            while adapter.streaming:
                await asyncio.sleep(RETIRE_POLL_S)
        finally:
            await self._unload_adapter(model_id, adapter, reason="replaced")

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
        return [e.status(now, self.default_model) for e in self._entries.values()]

    def resident_ids(self) -> list[str]:
        return [e.model_id for e in self._entries.values() if e.adapter is not None]

    def refcount(self, model_id: str) -> int:
        return self._entry(model_id).refcount

    def total_refcount(self) -> int:
        return sum(e.refcount for e in self._entries.values())

    def is_resident(self, model_id: str) -> bool:
        entry = self._entries.get(model_id)
        return entry is not None and entry.adapter is not None

    def _entry(self, model_id: str) -> ModelEntry:
        try:
            return self._entries[model_id]
        except KeyError:
            missing = self.catalog.missing.get(model_id, "")
            raise UnknownModel(model_id, sorted(self._entries), missing) from None

    @staticmethod
    def _evictable(entry: ModelEntry) -> bool:
        return entry.adapter is not None and entry.refcount == 0 and not entry.pinned

    def _claim_slot(self, entry: ModelEntry) -> list[tuple[str, EngineAdapter]]:
        """Reserve a resident slot and the memory budget for ``entry``, detaching LRU victims to
        make room. No awaits in here, so concurrent loads cannot both take the last of either."""
        occupants = self.resident_ids() + sorted(self._claimed)
        excess = len(occupants) + 1 - self.resident_cap
        candidates = sorted(
            (e for e in self._entries.values() if self._evictable(e)), key=lambda e: e.last_used
        )
        if excess > 0 and len(candidates) < excess:
            raise CapacityExceeded(entry.model_id, self.resident_cap, occupants)
        chosen = candidates[: max(0, excess)]
        device, need = self._expected_device(entry), self._expected_size(entry)
        holders = [
            Holder(e.model_id, e.device, e.resident_bytes, self._evictable(e), e.last_used)
            for e in self._entries.values()
            if e.adapter is not None and e not in chosen
        ] + [Holder(m, d, n, False, 0.0) for m, (d, n) in self._claimed.items()]
        try:
            more = plan_room(holders, device, need, self._budgets.get(device, 0))
        except OverBudget as exc:
            raise MemoryBudgetExceeded(
                entry.model_id, exc.device, need, exc.used, exc.budget, exc.holders
            ) from None
        victims = [self._detach(e) for e in chosen + [self._entries[m] for m in more]]
        self._claimed[entry.model_id] = (device, need)
        return victims

    async def _trim(self, fresh: ModelEntry) -> None:
        """After a load whose size was not known before: unload LRU idle models on its device
        until the budget holds again, or the fresh model itself when that cannot be done."""
        budget = self._budgets.get(fresh.device, 0)
        others = [
            Holder(e.model_id, e.device, e.resident_bytes, self._evictable(e), e.last_used)
            for e in self._entries.values()
            if e.adapter is not None and e is not fresh
        ]
        try:
            victims = plan_room(others, fresh.device, fresh.resident_bytes, budget)
        except OverBudget as exc:
            size = fresh.resident_bytes
            await self._unload_adapter(*self._detach(fresh), reason="over budget")
            raise MemoryBudgetExceeded(
                fresh.model_id, exc.device, size, exc.used, exc.budget, exc.holders
            ) from None
        for model_id, adapter in [self._detach(self._entries[m]) for m in victims]:
            await self._unload_adapter(model_id, adapter, reason="lru")

    def _expected_device(self, entry: ModelEntry) -> str:
        return entry.device or ("cuda" if self._device == "cuda" else "cpu")

    def _expected_size(self, entry: ModelEntry) -> int:
        """The model's last measured size, else the size of its files."""
        if entry.size_hint:
            return entry.size_hint
        try:
            files = entry.spec.locate(self.catalog.models_dir)
            return sum(p.stat().st_size for p in files.values())
        except (OSError, ImportError):
            return 0

    def _detach(self, entry: ModelEntry) -> tuple[str, EngineAdapter]:
        adapter = entry.adapter
        assert adapter is not None
        entry.adapter = None
        entry.loaded_at = entry.load_ms = 0.0
        entry.resident_bytes = 0  # the device stays: the next load's budget check is for it
        return entry.model_id, adapter

    async def _build(self, spec: ModelSpec) -> tuple[EngineAdapter, float, int, str]:
        """A loaded, warmed adapter, its load time (ms), the memory it took and its device."""

        def build() -> tuple[EngineAdapter, float, int, str]:
            t0 = time.perf_counter()
            before = self._probe()
            adapter = self._factory(spec)
            try:
                adapter.load()
                if self._warmup:
                    adapter.warmup()
            except BaseException:
                with contextlib.suppress(Exception):
                    adapter.unload()  # best effort: free whatever the half-built adapter holds
                raise
            device = getattr(adapter, "actual_device", None) or "cpu"
            return adapter, (time.perf_counter() - t0) * 1000, growth(before, self._probe(), device), device

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
