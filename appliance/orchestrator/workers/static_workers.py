"""The orchestrator's static ``workers`` list alongside Redis discovery.

Every listed address is a registry entry for good (no TTL): described by a gRPC probe (health, then
``GetCapabilities``) at start and by the pool's health probes afterwards, for as long as Redis holds
no record of the same address (a worker's own record is richer: languages, TTFA, queue). A worker
not reachable at start is kept as a down entry and joins once a probe passes. So routing works from
the static list at once when Redis is unreachable at boot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import grpc

from appliance.discovery import Capabilities, LiveMetrics, WorkerRecord, flags_for
from appliance.orchestrator.workers.registry import WorkerRegistry
from appliance.rpc import tts_pb2 as pb

log = logging.getLogger(__name__)

NOT_REACHED = "not reachable since start"
_DEFAULT_CAPS = Capabilities()

Probe = Callable[[str], Awaitable[pb.GetCapabilitiesResponse]]


def record_from_capabilities(address: str, caps: pb.GetCapabilitiesResponse) -> WorkerRecord:
    """The routing record of a worker as its ``GetCapabilities`` answer describes it."""
    flags = flags_for(caps.engines)  # as the worker's own record does
    return WorkerRecord(
        name=caps.worker_name or address,
        address=address,
        capabilities=Capabilities(
            streaming=caps.streaming,
            zero_shot=flags.zero_shot,
            lora=flags.lora,
            cpu_ok=flags.cpu_ok,
            languages=tuple(caps.languages),
            emotive_zero_prompt=flags.emotive_zero_prompt,
            max_concurrent_sessions=max(caps.max_sessions, 0) or _DEFAULT_CAPS.max_concurrent_sessions,
            sample_rates=tuple(caps.output_sample_rates) or _DEFAULT_CAPS.sample_rates,
            gpu=caps.gpu,
        ),
        default_model=caps.default_model,
        resident_models=tuple(caps.resident_models),
        available_models=tuple(caps.available_models),
        metrics=LiveMetrics(active_sessions=max(0, caps.active_sessions)),
    )


def unreached_record(address: str) -> WorkerRecord:
    """A stand-in for a static worker never reached yet (down, so never routed to)."""
    return WorkerRecord(name=address, address=address)


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code().name
    return str(exc) or type(exc).__name__


class StaticWorkers:
    """Seeds the registry with the static list and turns passing probes into fresh records."""

    def __init__(self, registry: WorkerRegistry, addresses: list[str], probe: Probe) -> None:
        self.registry = registry
        self.addresses = list(dict.fromkeys(addresses))
        self._probe = probe
        self._unreached: set[str] = set()  # listed, never answered a probe yet

    async def seed(self) -> None:
        await asyncio.gather(*(self._seed_one(a) for a in self.addresses))

    async def _seed_one(self, address: str) -> None:
        try:
            caps = await self._probe(address)
        except (grpc.aio.AioRpcError, RuntimeError) as exc:
            self._unreached.add(address)
            self.registry.add_static(unreached_record(address), down=NOT_REACHED)
            log.warning(
                "static worker not reachable address=%s (%s): kept as down, joins once a probe passes",
                address,
                describe_failure(exc),
            )
            return
        record = record_from_capabilities(address, caps)
        self.registry.add_static(record)
        self._log_joined(record)

    def probe_passed(self, address: str, caps: pb.GetCapabilitiesResponse) -> bool:
        """A passing health probe of ``address``: True if it was a static-only entry, now described by it."""
        record = record_from_capabilities(address, caps)
        if not self.registry.describe(record):
            self._unreached.discard(address)  # answered, and Redis describes it (or it is not listed)
            return False
        if address in self._unreached:
            self._unreached.discard(address)
            self.registry.clear_down(address, "first probe passed", announce=False)
            self._log_joined(record)
        return True

    def _log_joined(self, record: WorkerRecord) -> None:
        entry = self.registry.entries.get(record.address)
        log.info(
            "static worker joined worker=%s address=%s source=%s models=%s languages=%s",
            record.name,
            record.address,
            entry.source if entry else "static",
            ",".join(record.resident_models) or "-",
            ",".join(record.capabilities.languages) or "-",
        )
