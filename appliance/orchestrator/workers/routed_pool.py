"""The routed worker pool: workers discovered in Redis (:mod:`.registry`) plus those of the static
list (:mod:`.static_workers`), chosen by the policy in :mod:`.routing`, with LoadModel on demand and
gRPC health probes (of down workers and static ones with no Redis record, and of every known worker
while Redis is unreachable). It counts the sessions routed to each worker in
``appliance_worker_routed_total``, as the static pool does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import replace

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from appliance import discovery
from appliance.config import ConfigError, OrchestratorSettings
from appliance.orchestrator.workers.dialer import PlaintextRefused, WorkerDialer
from appliance.orchestrator.workers.pool import RECONNECT_OPTIONS, RoutingMetrics, TtsUnavailable, WorkerPool
from appliance.orchestrator.workers.registry import WorkerRegistry
from appliance.orchestrator.workers.routing import RouteRequest, route
from appliance.orchestrator.workers.static_pool import StaticPool
from appliance.orchestrator.workers.static_workers import StaticWorkers, describe_failure
from appliance.redis_tls import RedisTls
from appliance.rpc import tts_pb2 as pb
from appliance.tts.client import TTSClient

log = logging.getLogger(__name__)

RESIDENT_START_TIMEOUT_S = 10.0  # StartSession on a worker with the model resident
LOAD_TIMEOUT_S = 120.0  # StartSession that loads the model, and LoadModel
PROBE_TIMEOUT_S = 1.0
INITIAL_SYNC_S = 3.0  # how long start() waits for the first read of Redis
_DEAD = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class RoutedPool:
    def __init__(
        self,
        registry: WorkerRegistry,
        request: RouteRequest | None = None,
        *,
        metrics_registry: CollectorRegistry | None = None,
        health_check_s: float = 2.0,
        static_workers: list[str] | None = None,
        dialer: WorkerDialer | None = None,
    ) -> None:
        self.dialer = dialer or WorkerDialer()
        self.registry = registry
        self.static = StaticWorkers(registry, static_workers or [], self.probe)
        self.request = request or RouteRequest()
        self.health_check_s = health_check_s
        self.metrics = RoutingMetrics(metrics_registry)
        if metrics_registry is not None:
            metrics_registry.register(_RegistryCollector(registry))
        self.clients: dict[str, TTSClient] = {}
        self._health_stubs: dict[str, health_pb2_grpc.HealthStub] = {}
        self._assigned: dict[str, tuple[int, int]] = {}  # address -> (record version, sessions since it)
        self._loading: dict[str, asyncio.Task] = {}  # model id -> its LoadModel
        self._health_task: asyncio.Task | None = None

    @classmethod
    def from_settings(
        cls, s: OrchestratorSettings, metrics_registry: CollectorRegistry | None = None
    ) -> RoutedPool:
        d = s.discovery
        secret = s.redis_password.get_secret_value() if s.redis_password else None
        try:
            password = discovery.resolve_password(s.redis_url or "", secret, d.password_file)
            tls = RedisTls.of(d).connect_kwargs(s.redis_url or "")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not password:
            log.warning("Redis at %s is used without a password", discovery.redact(s.redis_url))
        static = s.listed_workers()
        log.info(
            "workers are discovered in Redis at %s (prefix %r)%s",
            discovery.redact(s.redis_url),
            d.key_prefix,
            f" and listed statically: {', '.join(static)}" if static else "",
        )
        registry = WorkerRegistry(s.redis_url or "", password, d.key_prefix, resync_s=d.resync_s, tls=tls)
        request = RouteRequest(language=d.language, require=frozenset(d.require))
        return cls(
            registry,
            request,
            metrics_registry=metrics_registry,
            health_check_s=d.health_check_s,
            static_workers=static,
            dialer=WorkerDialer(s.tls),
        )

    async def start(self) -> None:
        self.registry.start()
        await asyncio.gather(self.static.seed(), self._wait_for_redis())
        self._health_task = asyncio.create_task(self._health_loop(), name="worker-health")

    async def _wait_for_redis(self) -> None:
        # With static workers there is something to route to: a failed first try is answer enough.
        has_static = bool(self.static.addresses)
        try:
            await self.registry.wait_until(
                lambda: self.registry.connected or (has_static and self.registry.in_outage), INITIAL_SYNC_S
            )
        except TimeoutError:
            pass
        if not self.registry.connected:
            url = discovery.redact(self.registry.url)
            if has_static:
                log.warning(
                    "Redis not reachable yet at %s: routing to the %d static workers until it is",
                    url,
                    len(self.static.addresses),
                )
            else:
                log.warning("Redis not reachable yet at %s: no workers until it is", url)

    # --- the pool interface ----------------------------------------------------------------

    async def start_session(
        self, session_id: str, model_id: str = "", exclude: Iterable[str] = ()
    ) -> TTSClient:
        skip = set(exclude)
        decision = self.decide(model_id, skip)
        if not decision.attempts and self.registry.down_addresses() - skip:
            await self._probe_all(self.registry.down_addresses() - skip)  # a down worker may be back
            decision = self.decide(model_id, skip)
        if decision.load_on is not None:
            self._load_in_background(decision.load_on, model_id)
        errors = []
        for attempt in decision.attempts:
            w = attempt.worker
            if w.address in self.registry.down_addresses():  # marked down by an earlier attempt
                continue
            try:
                client = self._client(w.address)
            except PlaintextRefused as exc:
                errors.append(f"{w.name}@{w.address}: refused ({exc})")
                self.mark_down(w.address, "refused: plaintext gRPC to another host")
                continue
            request = pb.StartSessionRequest(session_id=session_id, model_id=attempt.model_id)
            # Counted before the answer: sessions that start at the same moment spread out.
            self._note_assigned(w.address)
            try:
                await client.stub.StartSession(
                    request, timeout=RESIDENT_START_TIMEOUT_S if attempt.resident else LOAD_TIMEOUT_S
                )
            except grpc.aio.AioRpcError as exc:
                self._note_assigned(w.address, -1)
                errors.append(f"{w.name}@{w.address}: {exc.code().name} {exc.details()}")
                if exc.code() in _DEAD:
                    self.mark_down(w.address, f"StartSession {exc.code().name}")
                continue
            except asyncio.CancelledError:
                self._note_assigned(w.address, -1)
                raise
            self.metrics.routed.labels(w.name, w.address).inc()
            fallback = " (fallback while the model loads elsewhere)" if attempt.model_id != model_id else ""
            log.info(
                "routed session=%s worker=%s address=%s model=%s resident=%s queue=%d sessions=%d%s",
                session_id,
                w.name,
                w.address,
                attempt.model_id or w.default_model or "default",
                attempt.resident,
                w.metrics.queue_depth,
                w.metrics.active_sessions,
                fallback,
            )
            return client
        why = "; ".join(errors) or decision.reason or "no workers"
        if not self.registry.entries:
            why = f"no TTS worker registered in Redis at {discovery.redact(self.registry.url)}"
            if not self.registry.connected:
                why += " (Redis unreachable)"
        raise TtsUnavailable(f"no TTS worker accepted the session ({why})")

    def decide(self, model_id: str = "", exclude: set[str] | frozenset[str] = frozenset()):
        """The routing decision for a session now (no I/O)."""
        entries = self.registry.entries
        extra = {a: n for a, (v, n) in self._assigned.items() if a in entries and entries[a].version == v}
        skip = self.registry.down_addresses() | set(exclude)
        return route(
            self.registry.records(),
            replace(self.request, model_id=model_id),
            exclude=skip,
            extra_sessions=extra,
        )

    def mark_down(self, address: str, reason: str) -> None:
        self.registry.mark_down(address, reason)

    async def close(self) -> None:
        tasks = [t for t in (self._health_task, *self._loading.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.registry.close()
        await asyncio.gather(*(c.close() for c in self.clients.values()), return_exceptions=True)

    # --- helpers ---------------------------------------------------------------------------

    def _client(self, address: str) -> TTSClient:
        client = self.clients.get(address)
        if client is None:
            client = self.clients[address] = self.dialer.dial(address, RECONNECT_OPTIONS)
        return client

    def _note_assigned(self, address: str, delta: int = 1) -> None:
        entry = self.registry.entries.get(address)
        if entry is None:
            return
        version, count = self._assigned.get(address, (entry.version, 0))
        count = count if version == entry.version else 0
        self._assigned[address] = (entry.version, max(0, count + delta))

    def _load_in_background(self, worker, model_id: str) -> None:
        if model_id in self._loading:
            return
        log.info(
            "model %s is resident nowhere: loading it on worker=%s address=%s",
            model_id,
            worker.name,
            worker.address,
        )

        async def load() -> None:
            t0 = time.perf_counter()
            try:
                reply = await self._client(worker.address).load_model(model_id, timeout=LOAD_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                self.metrics.loads.labels(worker.name, model_id, exc.code().name.lower()).inc()
                log.warning(
                    "LoadModel failed worker=%s model=%s: %s %s",
                    worker.name,
                    model_id,
                    exc.code().name,
                    exc.details(),
                )
                return
            finally:
                self._loading.pop(model_id, None)
            self.metrics.loads.labels(worker.name, model_id, "ok").inc()
            entry = self.registry.entries.get(worker.address)
            if entry is not None and model_id not in entry.record.resident_models:
                self.registry.refresh(
                    worker.address, resident_models=(*entry.record.resident_models, model_id)
                )
            log.info(
                "model loaded on demand worker=%s model=%s (%s) in %.0f ms",
                worker.name,
                model_id,
                reply.message,
                (time.perf_counter() - t0) * 1000,
            )

        self._loading[model_id] = asyncio.create_task(load(), name=f"load-{model_id}")

    async def probe(self, address: str) -> pb.GetCapabilitiesResponse:
        """Health check over gRPC: SERVING, then the capabilities (raises on failure)."""
        client = self._client(address)
        stub = self._health_stubs.get(address)
        if stub is None:
            stub = self._health_stubs[address] = health_pb2_grpc.HealthStub(client.channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=PROBE_TIMEOUT_S)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise RuntimeError(f"health {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}")
        return await client.stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=PROBE_TIMEOUT_S)

    async def _check(self, address: str) -> None:
        try:
            caps = await self.probe(address)
        except PlaintextRefused:
            self.mark_down(address, "refused: plaintext gRPC to another host")
            return
        except (grpc.aio.AioRpcError, RuntimeError) as exc:
            self.mark_down(address, f"health check: {describe_failure(exc)}")
            return
        entry = self.registry.entries.get(address)
        if entry is None:
            return
        # A static worker with no Redis record is described by the probe as a whole; one known from
        # Redis gets the probe's live figures while Redis is away (no heartbeats: the freshest news).
        if not self.static.probe_passed(address, caps) and not self.registry.connected:
            metrics = replace(entry.record.metrics, active_sessions=caps.active_sessions)
            self.registry.refresh(address, resident_models=tuple(caps.resident_models), metrics=metrics)
        self.registry.clear_down(address, "health check passed")

    async def _probe_all(self, addresses: Iterable[str]) -> None:
        await asyncio.gather(*(self._check(a) for a in addresses))

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_check_s)
            targets = self.registry.down_addresses() | self.registry.static_only_addresses()
            if not self.registry.connected:
                targets = set(self.registry.entries)
            try:
                await self._probe_all(targets)
            except Exception:  # the loop must outlive any one bad probe
                log.exception("worker health check failed")

    def view(self) -> dict:
        """The registry as the operator sees it (``appliance workers``, ``GET /workers``)."""
        now_wall, now = time.time(), self.registry._clock()
        workers = []
        for address, e in sorted(self.registry.entries.items(), key=lambda kv: (kv[1].record.name, kv[0])):
            r = e.record
            workers.append(
                {
                    **r.summary(),
                    "address": address,
                    "down": e.down,
                    "source": e.source,
                    "heartbeat_age_s": round(max(0.0, now_wall - r.heartbeat_at), 1) if e.in_redis else None,
                    "seen_age_s": round(now - e.seen_at, 1),
                    "routed": self.metrics.routed_to(r.name, address),
                }
            )
        return {
            "redis": {
                "url": discovery.redact(self.registry.url),
                "connected": self.registry.connected,
                "bad_records": self.registry.bad_records,
            },
            "workers": workers,
        }


def make_pool(
    settings: OrchestratorSettings, metrics_registry: CollectorRegistry | None = None
) -> WorkerPool:
    """Redis configured: the routed pool (with the static workers listed); else the static worker list."""
    if settings.redis_url:
        return RoutedPool.from_settings(settings, metrics_registry)
    return StaticPool(settings.workers, metrics_registry, WorkerDialer(settings.tls))


class _RegistryCollector:
    def __init__(self, registry: WorkerRegistry) -> None:
        self.registry = registry

    def collect(self):
        workers = GaugeMetricFamily(
            "appliance_workers_registered", "TTS workers known to routing", labels=["state"]
        )
        down = len(self.registry.down_addresses())
        workers.add_metric(["up"], len(self.registry.entries) - down)
        workers.add_metric(["down"], down)
        yield workers
        yield GaugeMetricFamily(
            "appliance_registry_redis_connected",
            "1 while Redis is reachable",
            value=1 if self.registry.connected else 0,
        )
