"""The voices the routed TTS workers offer (their ListModels), merged across workers and cached
briefly, so a `describe` or `GET /v1/audio/voices` does not ask every worker each time."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import grpc

from appliance.orchestrator.workers import WorkerPool
from appliance.orchestrator.workers.dialer import PlaintextRefused
from appliance.rpc import tts_pb2 as pb
from appliance.tts.client import TTSClient

log = logging.getLogger(__name__)

LIST_TIMEOUT_S = 2.0
CACHE_S = 5.0
DEFAULT_VOICE = "default"  # the name that asks for each worker's default model

# Who made each engine's voices, for clients that show it (Home Assistant's voice picker).
ATTRIBUTION = {
    "piper": ("Rhasspy Piper", "https://github.com/rhasspy/piper"),
    "mock": ("appliance test engine", "https://github.com/rhasspy/wyoming"),
}


@dataclass(frozen=True)
class Voice:
    name: str  # the worker's model id
    engine: str
    language: str  # as the worker gives it, e.g. "en-US"
    native_rate: int
    resident: bool
    is_default: bool

    @property
    def attribution(self) -> tuple[str, str]:
        return ATTRIBUTION.get(self.engine, (self.engine, ""))


class VoiceCatalog:
    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self._clients: dict[str, TTSClient] = {}
        self._cached: list[Voice] = []
        self._cached_at = -CACHE_S
        self._lock = asyncio.Lock()

    async def voices(self) -> list[Voice]:
        async with self._lock:
            if time.monotonic() - self._cached_at >= CACHE_S:
                self._cached = await self._list()
                self._cached_at = time.monotonic()
            return self._cached

    async def resolve(self, name: str | None) -> str | None:
        """The model id to ask the workers for ("" for their default), or None for an unknown voice."""
        if not name or name == DEFAULT_VOICE:
            return ""
        voices = await self.voices()
        return name if any(v.name == name for v in voices) else None

    async def _list(self) -> list[Voice]:
        addresses = [w["address"] for w in self.pool.view()["workers"] if not w.get("down")]
        replies = await asyncio.gather(*(self._models(a) for a in addresses))
        merged: dict[str, Voice] = {}
        for models in replies:
            for m in models:
                seen = merged.get(m.model_id)
                resident = m.state == pb.RESIDENT or (seen is not None and seen.resident)
                merged[m.model_id] = Voice(
                    m.model_id,
                    m.engine,
                    m.language,
                    m.native_sample_rate,
                    resident,
                    m.is_default or (seen is not None and seen.is_default),
                )
        return sorted(merged.values(), key=lambda v: (not v.is_default, v.name))

    async def _models(self, address: str) -> list[pb.ModelInfo]:
        client = self._clients.get(address)
        if client is None:
            try:
                client = self._clients[address] = self.pool.dialer.dial(address)
            except PlaintextRefused as exc:  # not yet marked down by the pool: offers nothing
                log.info("ListModels skipped worker=%s: %s", address, exc)
                return []
        try:
            reply = await client.stub.ListModels(pb.ListModelsRequest(), timeout=LIST_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            log.info("ListModels failed worker=%s: %s", address, exc.code().name)
            return []
        return [m for m in reply.models if m.state != pb.FAILED]

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._clients.values()), return_exceptions=True)
        self._clients.clear()
