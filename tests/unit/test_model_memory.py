"""The model manager's memory accounting: sizes measured at load, LRU eviction under a budget,
RESOURCE_EXHAUSTED-style errors with the numbers when models in use fill it (fake clock, fake sizes)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from appliance.tts.adapters.base import EngineAdapter
from appliance.tts.catalog import Catalog, ModelSpec
from appliance.tts.model_manager import MemoryBudgetExceeded, ModelManager
from appliance.tts.model_memory import MB, Holder, MemoryReading, OverBudget, growth, plan_room, process_rss

SIZES_MB = {"alpha": 100, "bravo": 300, "charlie": 300, "delta": 50, "gpu": 400}
CATALOG = Catalog(tuple(ModelSpec(m, engine="mock", language="en", sample_rate=24000) for m in SIZES_MB))


class FakeMemory:
    """The process's memory as the fake adapters take and give it back."""

    def __init__(self) -> None:
        self.ram = 500 * MB
        self.vram = 0

    def __call__(self) -> MemoryReading:
        return MemoryReading(self.ram, self.vram)


class SizedAdapter(EngineAdapter):
    engine = "mock"

    def __init__(self, spec: ModelSpec, memory: FakeMemory) -> None:
        super().__init__(spec, "cpu")
        self.memory = memory
        self.actual_device = "cuda" if spec.model_id == "gpu" else "cpu"

    def _take(self, sign: int) -> None:
        size = sign * SIZES_MB[self.spec.model_id] * MB
        if self.actual_device == "cuda":
            self.memory.vram += size
        else:
            self.memory.ram += size

    def load(self) -> None:
        self._take(+1)
        self.loaded = True

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        yield np.zeros(10, dtype=np.float32)

    def unload(self) -> None:
        self._take(-1)
        super().unload()


class FakeClock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def make(clock):
    def make(**kwargs) -> ModelManager:
        memory = FakeMemory()
        return ModelManager(
            CATALOG,
            default_model="alpha",
            resident_cap=4,
            warmup=False,
            clock=clock,
            memory_probe=memory,
            adapter_factory=lambda spec: SizedAdapter(spec, memory),
            **kwargs,
        )

    return make


def sizes(manager: ModelManager) -> dict[str, tuple[int, str]]:
    return {s.model_id: (s.resident_bytes // MB, s.device) for s in manager.snapshot() if s.resident_bytes}


async def test_each_models_size_and_device_are_measured_at_load(make):
    manager = make()
    await manager.start(preload=["bravo", "gpu"])
    assert sizes(manager) == {"alpha": (100, "cpu"), "bravo": (300, "cpu"), "gpu": (400, "cuda")}
    await manager.unload("bravo")
    assert "bravo" not in sizes(manager)


async def test_loading_past_the_ram_budget_evicts_the_least_recently_used_idle_model(make, clock):
    manager = make(ram_budget_mb=700)
    await manager.start()
    for model_id in ("bravo", "charlie"):
        clock.now += 10
        await manager.load(model_id)  # 100 + 300 + 300 = 700: fits
    clock.now += 10
    (await manager.acquire("bravo")).release()  # bravo used after charlie: charlie is the LRU
    clock.now += 10
    # delta's size is not known before its first load (no files): it loads, measures 50 MB,
    # and the LRU idle model makes room for it afterwards.
    await manager.load("delta")
    assert manager.resident_ids() == ["alpha", "bravo", "delta"]
    await manager.unload("delta")
    clock.now += 10
    await manager.load("charlie")  # its measured 300 MB: 400 + 300 fits
    clock.now += 10
    await manager.load("delta")  # 50 more than 700: bravo (least recently used) goes first
    assert manager.resident_ids() == ["alpha", "charlie", "delta"]
    assert sum(s.resident_bytes for s in manager.snapshot()) <= 700 * MB


async def test_models_in_use_filling_the_budget_give_the_numbers(make):
    manager = make(ram_budget_mb=500)
    await manager.start()
    lease = await manager.acquire("bravo")  # 100 + 300 in use
    with pytest.raises(MemoryBudgetExceeded) as info:
        await manager.acquire("charlie")  # +300 > 500 and nothing idle to evict (alpha is pinned)
    message = str(info.value)
    assert "charlie" in message and "~300 MB of cpu memory" in message and "400 MB of the 500 MB" in message
    assert "bravo 300 MB" in message and "alpha 100 MB" in message
    assert manager.refcount("charlie") == 0 and "charlie" not in manager.resident_ids()
    lease.release()
    await manager.load("charlie")  # bravo is idle now: evicted to make room
    assert manager.resident_ids() == ["alpha", "charlie"]


async def test_the_vram_budget_counts_only_cuda_models(make):
    manager = make(ram_budget_mb=450, vram_budget_mb=300)
    await manager.start()
    await manager.load("bravo")  # 400 MB of RAM: under 450
    # Its first load: no size known yet, so it loads, is measured over the budget on its own
    # and is unloaded again; the second is refused before it starts, with the measured size.
    for _ in range(2):
        with pytest.raises(MemoryBudgetExceeded, match="~400 MB of cuda memory"):
            await manager.load("gpu")
        assert manager.resident_ids() == ["alpha", "bravo"]


def test_plan_room_picks_lru_idle_holders_on_the_same_device_only():
    holders = [
        Holder("a", "cpu", 100, True, 30.0),
        Holder("b", "cpu", 200, True, 10.0),
        Holder("c", "cpu", 200, False, 5.0),
        Holder("g", "cuda", 900, True, 1.0),
    ]
    assert plan_room(holders, "cpu", 100, 0) == []  # no budget
    assert plan_room(holders, "cpu", 100, 600) == []
    assert plan_room(holders, "cpu", 200, 600) == ["b"]
    assert plan_room(holders, "cpu", 350, 600) == ["b", "a"]
    with pytest.raises(OverBudget) as info:
        plan_room(holders, "cpu", 500, 600)
    assert (info.value.used, info.value.need, info.value.budget) == (200, 500, 600)


def test_growth_reads_the_device_the_model_runs_on():
    before, after = MemoryReading(100, 1000), MemoryReading(150, 4000)
    assert growth(before, after, "cpu") == 50 and growth(before, after, "cuda") == 3000
    assert growth(after, before, "cpu") == 0  # memory given back meanwhile: never negative
    assert process_rss() > 10 * MB
