"""What the model manager reports: the errors it raises (each mapped to a gRPC status by the
worker) and the state of each model in its snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from appliance.tts.catalog import ModelError


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


class MemoryBudgetExceeded(ModelError):
    """Loading would take a device past its budget, and the models filling it are in use."""

    def __init__(
        self, model_id: str, device: str, need: int, used: int, budget: int, holders: list[str]
    ) -> None:
        super().__init__(
            model_id,
            f"cannot load model {model_id!r}: it needs ~{_mb(need)} MB of {device} memory, "
            f"{_mb(used)} MB of the {_mb(budget)} MB budget is held by models in use, pinned or "
            f"loading ({', '.join(holders) or 'none'})",
        )
        self.device, self.need, self.used, self.budget, self.holders = device, need, used, budget, holders


def _mb(n: int) -> str:
    return f"{n / 2**20:.0f}"


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
    resident_bytes: int = 0  # memory the model took when it loaded (0 when not resident)
    device: str = ""  # where it runs: "cpu" or "cuda" ("" when not resident)
