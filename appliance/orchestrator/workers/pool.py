"""What the rest of the orchestrator needs from a set of TTS workers.

``start_session`` picks a worker (never one in ``exclude``) and opens the session there;
``mark_down`` takes a worker out of rotation after a failure seen mid-stream (connection lost,
deadline passed), so failover picks another; a worker marked down is tried again (last) and is
back in rotation once it accepts a session. Two pools implement it: :class:`.StaticPool` (the
static list) and :class:`.RoutedPool` (Redis discovery plus the static list).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter

from appliance.orchestrator.workers.dialer import WorkerDialer
from appliance.tts.client import TTSClient

# A worker that died may be back on the same address within a second or two (systemd's
# Restart=on-failure): its channel reconnects at most 1 s apart, not after gRPC's default backoff
# that grows towards two minutes (RPCs on a channel in backoff fail at once).
RECONNECT_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000))


class TtsUnavailable(Exception):
    """No TTS worker accepted the session."""


class WorkerPool(Protocol):
    dialer: WorkerDialer  # how its workers are dialled (TLS or plaintext), for others that dial them too

    async def start(self) -> None: ...

    async def start_session(
        self, session_id: str, model_id: str = "", exclude: Iterable[str] = ()
    ) -> TTSClient:
        """The client of the worker that accepted the session; raises :class:`TtsUnavailable`."""
        ...

    def mark_down(self, address: str, reason: str) -> None: ...

    def view(self) -> dict:
        """The workers as the operator sees them (``appliance workers``, ``GET /workers``)."""
        ...

    async def close(self) -> None: ...


class RoutingMetrics:
    """What every pool counts (``appliance_worker_routed_total``, ``…_model_loads_total``)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.routed = Counter(
            "appliance_worker_routed_total",
            "Sessions routed to each TTS worker",
            ["worker", "address"],
            registry=registry,
        )
        self.loads = Counter(
            "appliance_worker_model_loads_total",
            "LoadModel requests made by routing (model not resident anywhere)",
            ["worker", "model", "outcome"],
            registry=registry,
        )

    def routed_to(self, *labels: str) -> int:
        """Sessions routed to the worker with these labels (name, address) so far."""
        for metric in self.routed.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total") and tuple(sample.labels.values()) == labels:
                    return int(sample.value)
        return 0
