"""One model's bookkeeping in the model manager, and a session's lease on it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

from appliance.tts.adapters.base import EngineAdapter
from appliance.tts.catalog import ModelSpec
from appliance.tts.model_status import ModelState, ModelStatus, NotResident

if TYPE_CHECKING:
    from appliance.tts.model_manager import ModelManager


@dataclass(eq=False)
class ModelEntry:
    spec: ModelSpec
    pinned: bool
    adapter: EngineAdapter | None = None
    refcount: int = 0
    loaded_at: float = 0.0
    last_used: float = 0.0
    load_ms: float = 0.0
    error: str | None = None
    loading: asyncio.Task[float] | None = None
    resident_bytes: int = 0  # measured at load; 0 while not resident
    device: str = ""  # where the adapter runs (or ran, before an unload)
    size_hint: int = 0  # the last measured size, kept across unloads for the next budget check

    @property
    def model_id(self) -> str:
        return self.spec.model_id

    def status(self, now: float, default_model: str) -> ModelStatus:
        if self.adapter is not None:
            state = ModelState.RESIDENT
        elif self.loading is not None:
            state = ModelState.LOADING
        elif self.error is not None:
            state = ModelState.FAILED
        else:
            state = ModelState.AVAILABLE
        idle = now - self.last_used if state is ModelState.RESIDENT and self.refcount == 0 else 0.0
        spec = self.spec
        return ModelStatus(
            model_id=spec.model_id,
            engine=spec.engine,
            language=spec.language,
            sample_rate=spec.sample_rate,
            state=state,
            refcount=self.refcount,
            idle_s=idle,
            load_ms=self.load_ms,
            pinned=self.pinned,
            is_default=spec.model_id == default_model,
            error=self.error,
            resident_bytes=self.resident_bytes,
            device=self.device if state is ModelState.RESIDENT else "",
        )


class ModelLease:
    """One session's hold on a model. ``adapter`` is looked up on each access, so a reload
    swaps it under a running session."""

    def __init__(self, manager: ModelManager, entry: ModelEntry) -> None:
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
