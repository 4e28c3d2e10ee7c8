"""A worker registry on a fake clock (nothing connects: Redis is never started), for unit tests."""

from __future__ import annotations

from appliance.orchestrator.workers.registry import WorkerRegistry


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def registry_on_fake_clock() -> tuple[WorkerRegistry, Clock]:
    clock = Clock()
    return WorkerRegistry("redis://127.0.0.1:1/0", None, clock=clock), clock
