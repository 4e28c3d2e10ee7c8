"""How much memory each model takes, and which idle models make room under a budget.

A model's size is measured when it loads: the growth of the process's resident set (RSS) on the
CPU, the growth of the GPU's used memory on CUDA (NVML, where ``pynvml`` and a GPU are there).
Loads run one at a time by default (``max_parallel_loads = 1``), which keeps the two readings
about one model. Before a model's first load its size is not known; its files' size stands in
(an ONNX model's weights are most of what it takes).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

MB = 2**20


@dataclass(frozen=True)
class MemoryReading:
    ram: int  # bytes resident in this process
    vram: int  # bytes used on the GPU (0 where there is none or it cannot be read)


def process_rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def gpu_used() -> int:
    """Bytes used on GPU 0 through NVML; 0 where pynvml or a GPU is not there."""
    try:
        import pynvml
    except ImportError:
        return 0
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    except Exception:  # noqa: BLE001 -- no driver or no GPU: nothing to measure
        return 0


def read_memory() -> MemoryReading:
    return MemoryReading(process_rss(), gpu_used())


MemoryProbe = Callable[[], MemoryReading]


def growth(before: MemoryReading, after: MemoryReading, device: str) -> int:
    """What a load took on ``device``: RSS growth on the CPU, device-memory growth on CUDA."""
    if device == "cuda":
        return max(0, after.vram - before.vram)
    return max(0, after.ram - before.ram)


@dataclass(frozen=True)
class Holder:
    """A resident (or loading) model as the budget sees it."""

    model_id: str
    device: str
    size: int
    evictable: bool  # idle, unpinned and resident
    last_used: float


class OverBudget(Exception):
    def __init__(self, device: str, need: int, used: int, budget: int, holders: list[str]) -> None:
        super().__init__(device)
        self.device, self.need, self.used, self.budget, self.holders = device, need, used, budget, holders


def plan_room(holders: list[Holder], device: str, need: int, budget: int) -> list[str]:
    """The least-recently-used idle models on ``device`` to unload so ``need`` more bytes fit in
    ``budget`` (0: no budget). Raises :class:`OverBudget` when even all of them would not do."""
    if budget <= 0:
        return []
    on_device = [h for h in holders if h.device == device]
    used = sum(h.size for h in on_device)
    victims: list[str] = []
    for h in sorted((h for h in on_device if h.evictable), key=lambda h: h.last_used):
        if used + need <= budget:
            break
        victims.append(h.model_id)
        used -= h.size
    if used + need > budget:
        kept = [f"{h.model_id} {h.size / MB:.0f} MB" for h in on_device if h.model_id not in victims]
        raise OverBudget(device, need, used, budget, kept)
    return victims
