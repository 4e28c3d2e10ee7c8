"""The static worker list from the config (no Redis: the embedded default): the first worker that
accepts the session wins; workers marked down are tried last, not never (they may be back)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from appliance.orchestrator.workers.dialer import PlaintextRefused, WorkerDialer
from appliance.orchestrator.workers.pool import RECONNECT_OPTIONS, RoutingMetrics, TtsUnavailable
from appliance.tts.client import TTSClient

log = logging.getLogger(__name__)

# A StartSession unanswered this long (a model may be loading) asks the worker's health service,
# which answers within this long unless the process is hung: then the next worker is tried.
HUNG_CHECK_S = 1.0


class StaticPool:
    def __init__(
        self,
        addresses: list[str],
        metrics_registry: CollectorRegistry | None = None,
        dialer: WorkerDialer | None = None,
    ) -> None:
        self.dialer = dialer or WorkerDialer()
        self.clients: list[TTSClient] = []
        self.refused: dict[str, str] = {}  # address -> why it is never dialled
        for address in addresses:
            try:
                self.clients.append(self.dialer.dial(address, RECONNECT_OPTIONS))
            except PlaintextRefused as exc:
                log.error("worker refused worker=%s: %s", address, exc)
                self.refused[address] = str(exc)
        self.down: set[str] = set()
        self.metrics = RoutingMetrics(metrics_registry)

    async def start(self) -> None:
        pass

    async def start_session(
        self, session_id: str, model_id: str = "", exclude: Iterable[str] = ()
    ) -> TTSClient:
        skip = set(exclude)
        candidates = [c for c in self.clients if c.address not in skip]
        candidates.sort(key=lambda c: c.address in self.down)
        errors = [f"{a}: refused ({why})" for a, why in self.refused.items()]
        for client in candidates:
            try:
                await self._start_on(client, session_id, model_id)
            except grpc.aio.AioRpcError as exc:
                errors.append(f"{client.address}: {exc.code().name} {exc.details()}")
                if exc.code() == grpc.StatusCode.NOT_FOUND:  # unknown model: same answer everywhere
                    break
                continue
            except TimeoutError:
                errors.append(f"{client.address}: hung (no answer to StartSession or a health check)")
                self.mark_down(client.address, "hung")
                continue
            self.down.discard(client.address)
            self.metrics.routed.labels(client.address, client.address).inc()
            return client
        raise TtsUnavailable(
            "no TTS worker accepted the session (" + "; ".join(errors or ["no workers available"]) + ")"
        )

    async def _start_on(self, client: TTSClient, session_id: str, model_id: str) -> None:
        """StartSession on ``client``; TimeoutError if it hangs (a stopped or wedged process)."""
        call = asyncio.ensure_future(client.start_session(session_id, model_id))
        try:
            done, _ = await asyncio.wait({call}, timeout=HUNG_CHECK_S)
            if not done:
                health = health_pb2_grpc.HealthStub(client.channel)
                try:
                    await health.Check(health_pb2.HealthCheckRequest(), timeout=HUNG_CHECK_S)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                        raise
                    raise TimeoutError from None
            await call
        finally:
            call.cancel()

    def mark_down(self, address: str, reason: str) -> None:
        if address not in self.down:
            log.warning("worker marked down worker=%s reason=%s", address, reason)
        self.down.add(address)

    def view(self) -> dict:
        return {
            "redis": None,
            "workers": [
                {
                    "name": c.address,
                    "address": c.address,
                    "source": "static",
                    "down": "marked down" if c.address in self.down else None,
                    "routed": self.metrics.routed_to(c.address, c.address),
                }
                for c in self.clients
            ]
            + [
                {"name": a, "address": a, "source": "static", "down": f"refused: {why}", "routed": 0}
                for a, why in self.refused.items()
            ],
        }

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
