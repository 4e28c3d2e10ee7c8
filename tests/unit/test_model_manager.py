"""ModelManager: leases, load de-duplication, LRU/TTL eviction, reload and failure handling.

Adapters are fakes that count their calls and can be made to fail or to block on a
``threading.Event`` (their ``load`` runs in an executor thread), and time is a fake clock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from appliance.tts.adapters.base import EngineAdapter
from appliance.tts.adapters.mock import MockSineAdapter
from appliance.tts.catalog import Catalog, ModelSpec
from appliance.tts.model_manager import (
    CapacityExceeded,
    ModelError,
    ModelInUse,
    ModelLoadFailed,
    ModelManager,
    NotResident,
    UnknownModel,
)

MODEL_IDS = ("alpha", "bravo", "charlie", "delta")
CATALOG = Catalog(tuple(ModelSpec(m, engine="mock", language="en", sample_rate=24000) for m in MODEL_IDS))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeAdapter(EngineAdapter):
    engine = "mock"

    def __init__(self, spec: ModelSpec, engines: FakeEngines) -> None:
        super().__init__(spec, "cpu")
        self.engines = engines
        self.load_calls = 0
        self.warmup_calls = 0
        self.unload_calls = 0

    def load(self) -> None:
        self.load_calls += 1
        self.engines.enter_load()
        try:
            gate = self.engines.gates.get(self.spec.model_id)
            if gate is not None and not gate.wait(timeout=10):
                raise TimeoutError("test gate never opened")
            if failure := self.engines.load_failures.get(self.spec.model_id):
                raise failure
            self.loaded = True
        finally:
            self.engines.leave_load()

    def warmup(self) -> None:
        self.warmup_calls += 1
        if failure := self.engines.warmup_failures.get(self.spec.model_id):
            raise failure

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        yield np.zeros(10, dtype=np.float32)

    def unload(self) -> None:
        self.unload_calls += 1
        super().unload()


class FakeEngines:
    """The adapter factory: records every adapter it makes and how many loads overlap."""

    def __init__(self) -> None:
        self.created: list[FakeAdapter] = []
        self.load_failures: dict[str, Exception] = {}
        self.warmup_failures: dict[str, Exception] = {}
        self.gates: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.active_loads = 0
        self.peak_loads = 0

    def __call__(self, spec: ModelSpec) -> FakeAdapter:
        adapter = FakeAdapter(spec, self)
        self.created.append(adapter)
        return adapter

    def hold(self, *model_ids: str) -> threading.Event:
        gate = threading.Event()
        for model_id in model_ids:
            self.gates[model_id] = gate
        return gate

    def enter_load(self) -> None:
        with self._lock:
            self.active_loads += 1
            self.peak_loads = max(self.peak_loads, self.active_loads)

    def leave_load(self) -> None:
        with self._lock:
            self.active_loads -= 1

    def made(self, model_id: str) -> list[FakeAdapter]:
        return [a for a in self.created if a.spec.model_id == model_id]


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.002)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engines() -> FakeEngines:
    return FakeEngines()


@pytest.fixture
def make(clock, engines):
    def make(**kwargs) -> ModelManager:
        kwargs.setdefault("default_model", "alpha")
        return ModelManager(CATALOG, clock=clock, adapter_factory=engines, **kwargs)

    return make


def states(manager: ModelManager) -> dict[str, str]:
    return {s.model_id: s.state for s in manager.snapshot()}


# -- start ---------------------------------------------------------------------------------


async def test_start_loads_and_warms_default_and_preload(make, engines):
    manager = make(resident_cap=2)
    await manager.start(["bravo", "alpha", "bravo"])

    assert manager.resident_ids() == ["alpha", "bravo"]
    for model_id in ("alpha", "bravo"):
        (adapter,) = engines.made(model_id)
        assert (adapter.load_calls, adapter.warmup_calls) == (1, 1)
    status = {s.model_id: s for s in manager.snapshot()}
    assert status["alpha"].pinned and status["alpha"].is_default
    assert not status["bravo"].pinned and not status["bravo"].is_default


async def test_start_without_warmup_skips_it(make, engines):
    await make(warmup=False).start()
    (adapter,) = engines.made("alpha")
    assert adapter.load_calls == 1 and adapter.warmup_calls == 0


async def test_start_rejects_more_preloads_than_the_cap(make, engines):
    with pytest.raises(ValueError, match="resident_cap"):
        await make(resident_cap=2).start(["bravo", "charlie"])
    assert engines.created == []


async def test_start_raises_when_the_default_fails_but_tolerates_a_failed_preload(make, engines):
    engines.load_failures["bravo"] = RuntimeError("no weights for bravo")
    manager = make(resident_cap=3)
    await manager.start(["bravo", "charlie"])
    assert manager.resident_ids() == ["alpha", "charlie"]
    assert states(manager)["bravo"] == "failed"

    engines.load_failures["alpha"] = RuntimeError("no weights for alpha")
    with pytest.raises(ModelLoadFailed):
        await make().start()


# -- leases --------------------------------------------------------------------------------


async def test_acquire_defaults_and_counts_references(make):
    manager = make()
    await manager.start()

    first = await manager.acquire(None)
    second = await manager.acquire("")
    third = await manager.acquire("bravo")
    assert (first.model_id, second.model_id, third.model_id) == ("alpha", "alpha", "bravo")
    assert first.adapter is second.adapter
    assert manager.refcount("alpha") == 2 and manager.total_refcount() == 3

    first.release()
    first.release()
    assert manager.refcount("alpha") == 1, "a second release of one lease must not decrement again"
    manager.release(second)
    manager.release(second)
    with third:
        assert manager.refcount("bravo") == 1
    assert manager.total_refcount() == 0


async def test_release_marks_the_model_used(make, clock):
    manager = make()
    await manager.start()
    lease = await manager.acquire("bravo")
    clock.advance(500)
    assert next(s for s in manager.snapshot() if s.model_id == "bravo").idle_s == 0.0

    lease.release()
    clock.advance(7)
    assert next(s for s in manager.snapshot() if s.model_id == "bravo").idle_s == pytest.approx(7)


# -- TTL eviction --------------------------------------------------------------------------


async def test_idle_model_is_evicted_only_after_the_ttl(make, clock, engines):
    manager = make(ttl_s=100, min_residency_s=30)
    await manager.start()
    await manager.load("bravo")

    clock.advance(99)
    assert await manager.evict_idle() == []
    clock.advance(1)
    assert await manager.evict_idle() == ["bravo"]
    assert manager.resident_ids() == ["alpha"]
    assert engines.made("bravo")[0].unload_calls == 1


async def test_idle_model_stays_for_the_minimum_residency(make, clock):
    manager = make(ttl_s=10, min_residency_s=60)
    await manager.start()
    await manager.load("bravo")

    clock.advance(59)
    assert await manager.evict_idle() == []
    clock.advance(1)
    assert await manager.evict_idle() == ["bravo"]


async def test_model_in_use_and_pinned_default_are_never_evicted_by_ttl(make, clock):
    manager = make(ttl_s=100, min_residency_s=0)
    await manager.start()
    lease = await manager.acquire("bravo")

    clock.advance(10_000)
    assert await manager.evict_idle() == []
    lease.release()
    assert await manager.evict_idle() == [], "the release itself counts as a use"
    clock.advance(100)
    assert await manager.evict_idle() == ["bravo"]
    assert manager.resident_ids() == ["alpha"]


async def test_run_evictor_evicts_in_the_background_and_cancels(make):
    manager = make(ttl_s=0, min_residency_s=0)
    await manager.start()
    await manager.load("bravo")

    evictor = asyncio.create_task(manager.run_evictor(0.001))
    await wait_until(lambda: not manager.is_resident("bravo"))
    evictor.cancel()
    with pytest.raises(asyncio.CancelledError):
        await evictor
    assert manager.resident_ids() == ["alpha"]


# -- LRU and capacity ----------------------------------------------------------------------


async def test_lru_evicts_the_least_recently_used_unpinned_model(make, clock, engines):
    manager = make(resident_cap=3)
    await manager.start()
    for model_id in ("bravo", "charlie", "bravo"):
        clock.advance(10)
        (await manager.acquire(model_id)).release()

    clock.advance(10)
    await manager.load("delta")
    assert manager.resident_ids() == ["alpha", "bravo", "delta"]
    assert engines.made("charlie")[0].unload_calls == 1
    assert engines.made("bravo")[0].unload_calls == 0


async def test_capacity_exceeded_when_every_resident_model_is_in_use(make, engines):
    manager = make(resident_cap=2)
    await manager.start()
    lease = await manager.acquire("bravo")

    with pytest.raises(CapacityExceeded) as caught:
        await manager.acquire("charlie")
    assert isinstance(caught.value, ModelError) and "charlie" in str(caught.value)
    assert engines.made("charlie") == []
    assert manager.refcount("charlie") == 0
    assert manager.resident_ids() == ["alpha", "bravo"]
    assert states(manager)["charlie"] == "available"

    lease.release()
    await manager.acquire("charlie")
    assert manager.resident_ids() == ["alpha", "charlie"]


async def test_loads_in_flight_hold_a_resident_slot(make, engines):
    manager = make(resident_cap=2, max_parallel_loads=2)
    await manager.start()
    gate = engines.hold("bravo")
    bravo = asyncio.create_task(manager.load("bravo"))
    await wait_until(lambda: engines.active_loads == 1)

    with pytest.raises(CapacityExceeded):
        await manager.load("charlie")
    gate.set()
    await bravo
    assert manager.resident_ids() == ["alpha", "bravo"]


# -- concurrency ---------------------------------------------------------------------------


async def test_at_most_max_parallel_loads_run_at_once(make, engines):
    with ThreadPoolExecutor(max_workers=8) as pool:
        manager = make(resident_cap=4, max_parallel_loads=2, executor=pool)
        gate = engines.hold("alpha", "bravo", "charlie")
        loads = [asyncio.create_task(manager.load(m)) for m in ("alpha", "bravo", "charlie")]
        await wait_until(lambda: engines.active_loads == 2)
        # Give a third load every chance to start if the limit were broken.
        await asyncio.sleep(0.05)
        assert engines.active_loads == 2 and len(engines.created) == 2
        assert list(states(manager).values()).count("loading") == 3

        gate.set()
        await asyncio.gather(*loads)
    assert engines.peak_loads == 2
    assert manager.resident_ids() == ["alpha", "bravo", "charlie"]


async def test_concurrent_acquires_of_one_model_share_one_load(make, engines):
    manager = make()
    await manager.start()
    gate = engines.hold("bravo")
    acquires = [asyncio.create_task(manager.acquire("bravo")) for _ in range(5)]
    await wait_until(lambda: engines.active_loads == 1)
    assert states(manager)["bravo"] == "loading"

    gate.set()
    leases = await asyncio.gather(*acquires)
    (adapter,) = engines.made("bravo")
    assert adapter.load_calls == 1
    assert all(lease.adapter is adapter for lease in leases)
    assert manager.refcount("bravo") == 5


async def test_a_cancelled_waiter_does_not_cancel_the_shared_load(make, engines):
    manager = make()
    await manager.start()
    gate = engines.hold("bravo")
    quitter = asyncio.create_task(manager.acquire("bravo"))
    stayer = asyncio.create_task(manager.acquire("bravo"))
    await wait_until(lambda: engines.active_loads == 1)

    quitter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await quitter
    gate.set()
    lease = await stayer
    assert lease.adapter.loaded
    assert manager.refcount("bravo") == 1


async def test_concurrent_loads_return_the_same_load_time(make, engines):
    manager = make()
    gate = engines.hold("bravo")
    loads = [asyncio.create_task(manager.load("bravo")) for _ in range(3)]
    await wait_until(lambda: engines.active_loads == 1)
    gate.set()
    times = await asyncio.gather(*loads)
    assert len(set(times)) == 1 and times[0] > 0
    assert await manager.load("bravo") == 0.0


# -- reload --------------------------------------------------------------------------------


async def test_reload_swaps_the_adapter_under_an_existing_lease(make, engines):
    manager = make()
    await manager.start()
    lease = await manager.acquire("bravo")
    old = lease.adapter

    assert await manager.reload("bravo") > 0
    new = lease.adapter
    assert new is not old
    assert old.unload_calls == 1 and not old.loaded
    assert (new.load_calls, new.warmup_calls, new.unload_calls) == (1, 1, 0)
    assert manager.refcount("bravo") == 1 and manager.is_resident("bravo")


async def test_reload_unloads_the_old_adapter_only_once_no_stream_is_on_it(make, engines):
    manager = make()
    await manager.start()
    lease = await manager.acquire("bravo")
    old = lease.adapter
    stream = old.stream("Another session's sentence.")
    await anext(stream)  # a segment under way on the old adapter

    await manager.reload("bravo")
    assert lease.adapter is not old and old.unload_calls == 0  # it may still be synthesizing
    assert [chunk async for chunk in stream] == []  # and it finishes there
    await wait_until(lambda: old.unload_calls == 1)
    await manager.close()


async def test_failed_reload_keeps_the_old_adapter_serving(make, engines):
    manager = make()
    await manager.start()
    lease = await manager.acquire("bravo")
    old = lease.adapter

    engines.warmup_failures["bravo"] = RuntimeError("warmup exploded")
    with pytest.raises(ModelLoadFailed, match="warmup exploded"):
        await manager.reload("bravo")
    assert lease.adapter is old and old.unload_calls == 0
    (status,) = [s for s in manager.snapshot() if s.model_id == "bravo"]
    assert status.state == "resident" and "warmup exploded" in status.error
    assert engines.made("bravo")[1].unload_calls == 1, "the half-built adapter is cleaned up"


async def test_reload_of_a_model_not_resident_loads_it(make, engines):
    manager = make()
    await manager.reload("charlie")
    assert manager.is_resident("charlie") and len(engines.made("charlie")) == 1


# -- failures and errors -------------------------------------------------------------------


async def test_load_failure_marks_failed_and_a_retry_can_succeed(make, engines):
    manager = make()
    await manager.start()
    engines.load_failures["bravo"] = FileNotFoundError("bravo.onnx missing")

    with pytest.raises(ModelLoadFailed) as caught:
        await manager.load("bravo")
    assert caught.value.model_id == "bravo" and "bravo.onnx missing" in str(caught.value)
    assert not manager.is_resident("bravo")
    (status,) = [s for s in manager.snapshot() if s.model_id == "bravo"]
    assert status.state == "failed" and "bravo.onnx missing" in status.error
    with pytest.raises(ModelLoadFailed):
        await manager.acquire("bravo")
    assert manager.refcount("bravo") == 0

    del engines.load_failures["bravo"]
    lease = await manager.acquire("bravo")
    assert lease.adapter.loaded
    (status,) = [s for s in manager.snapshot() if s.model_id == "bravo"]
    assert status.state == "resident" and status.error is None
    assert len(engines.made("bravo")) == 3


async def test_unload_refuses_a_model_in_use(make, engines):
    manager = make()
    await manager.start()
    lease = await manager.acquire("bravo")

    with pytest.raises(ModelInUse, match="bravo"):
        await manager.unload("bravo")
    assert manager.is_resident("bravo")
    lease.release()
    await manager.unload("bravo")
    assert not manager.is_resident("bravo") and engines.made("bravo")[0].unload_calls == 1
    with pytest.raises(NotResident, match="bravo"):
        await manager.unload("bravo")


async def test_pinned_default_can_be_unloaded_explicitly_when_idle(make):
    manager = make()
    await manager.start()
    await manager.unload("alpha")
    assert manager.resident_ids() == []
    assert (await manager.acquire(None)).adapter.loaded


async def test_unknown_model_ids_are_rejected(make, engines):
    manager = make()
    for call in (manager.acquire, manager.load, manager.unload, manager.reload):
        with pytest.raises(UnknownModel, match="nope") as caught:
            await call("nope")
        assert (
            isinstance(caught.value, ModelError) and caught.value.model_id == "nope"
        )  # one except catches all
    with pytest.raises(UnknownModel):
        manager.refcount("nope")
    assert not manager.is_resident("nope")
    with pytest.raises(UnknownModel):
        make(default_model="nope")
    assert engines.created == []


# -- introspection and shutdown ------------------------------------------------------------


async def test_snapshot_reflects_every_catalog_model(make, clock, engines):
    engines.load_failures["delta"] = RuntimeError("bad delta")
    manager = make(resident_cap=3)
    await manager.start()
    lease = await manager.acquire("bravo")
    with pytest.raises(ModelLoadFailed):
        await manager.load("delta")
    clock.advance(12)

    snapshot = {s.model_id: s for s in manager.snapshot()}
    assert list(snapshot) == list(MODEL_IDS)
    alpha, bravo, charlie, delta = (snapshot[m] for m in MODEL_IDS)
    assert (alpha.state, alpha.refcount, alpha.idle_s, alpha.pinned) == ("resident", 0, 12, True)
    assert (bravo.state, bravo.refcount, bravo.idle_s, bravo.pinned) == ("resident", 1, 0.0, False)
    assert alpha.load_ms > 0 and bravo.load_ms > 0
    assert (charlie.state, charlie.refcount, charlie.load_ms, charlie.error) == ("available", 0, 0.0, None)
    assert (delta.state, delta.error) == ("failed", "bad delta")
    assert (bravo.engine, bravo.language, bravo.sample_rate) == ("mock", "en", 24000)
    lease.release()


async def test_close_unloads_everything_even_in_use(make, engines):
    manager = make(resident_cap=3)
    await manager.start(["charlie"])
    lease = await manager.acquire("bravo")

    await manager.close()
    assert manager.resident_ids() == []
    assert [a.unload_calls for a in engines.created] == [1, 1, 1]
    with pytest.raises(NotResident):
        _ = lease.adapter


async def test_real_mock_sine_adapter_through_the_default_factory():
    manager = ModelManager(Catalog(), default_model="mock-sine", resident_cap=1, device="cpu")
    await manager.start()
    lease = await manager.acquire(None)
    adapter = lease.adapter
    assert isinstance(adapter, MockSineAdapter) and adapter.loaded

    chunks = [chunk async for chunk in adapter.stream("two words")]
    assert len(chunks) == 2 and all(c.sample_rate == 24000 and c.samples.size > 0 for c in chunks)
    lease.release()
    await manager.close()
    assert not adapter.loaded
