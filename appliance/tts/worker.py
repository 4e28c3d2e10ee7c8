"""Assembles and runs one TTS worker: model manager, gRPC server (TTSService + health),
metrics endpoint, systemd watchdog, idle-model eviction and idle-session reaping."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from appliance.config import ConfigError, WorkerSettings
from appliance.process import serve_until_signalled
from appliance.rpc import tts_pb2_grpc
from appliance.rpc.tls import TlsFileError, is_loopback_host, server_credentials
from appliance.runtime_metrics import add_runtime_gauges
from appliance.systemd import Notifier, Watchdog, watchdog_interval
from appliance.tts.adapters import SynthesisTracker, create_adapter
from appliance.tts.adapters.piper import cuda_available
from appliance.tts.catalog import BUILTIN_MODELS, Catalog, local_specs
from appliance.tts.malformed import MalformedRequests
from appliance.tts.metrics import WorkerMetrics
from appliance.tts.model_manager import ModelManager
from appliance.tts.scheduler import DeadlineScheduler
from appliance.tts.service import TTSService
from appliance.tts.sessions import SessionRegistry

log = logging.getLogger(__name__)

SERVICE_NAME = "appliance.tts.v1.TTSService"
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
SESSION_IDLE_S = 300.0
HOUSEKEEPING_S = 5.0
# Engine threads run Python between their native calls (phonemes, loudness, resampling); at the
# default 5 ms switch interval a control ack can wait that long for the GIL on every wake-up.
GIL_SWITCH_S = 0.001


class TTSWorker:
    def __init__(self, settings: WorkerSettings, catalog: Catalog | None = None) -> None:
        self.settings = settings
        m = settings.models
        enabled = {m.default, *m.preload, *m.serve}
        specs = (*BUILTIN_MODELS, *local_specs(m.local))
        self.catalog = catalog or Catalog(specs, models_dir=m.models_dir, enabled=enabled)
        self.tracker = SynthesisTracker()
        self.metrics = WorkerMetrics(settings.name)
        self.notifier = Notifier()
        self.scheduler = DeadlineScheduler(threads=settings.synthesis_threads or max(1, os.cpu_count() or 1))
        m = settings.models
        self.manager = ModelManager(
            self.catalog,
            default_model=m.default,
            resident_cap=m.resident_cap,
            ttl_s=m.ttl_s,
            min_residency_s=m.min_residency_s,
            max_parallel_loads=m.max_parallel_loads,
            warmup=m.warmup,
            device=m.device,
            ram_budget_mb=m.ram_budget_mb,
            vram_budget_mb=m.vram_budget_mb,
            adapter_factory=lambda spec: create_adapter(
                spec,
                m.devices.get(spec.model_id, m.device),
                m.models_dir,
                m.onnx_threads,
                contended=self._engine_contended,
            ),
        )
        self.sessions = SessionRegistry(settings.max_sessions)
        self.service = TTSService(
            settings,
            self.manager,
            self.sessions,
            scheduler=self.scheduler,
            tracker=self.tracker,
            metrics=self.metrics,
            gpu=m.device == "cuda" or (m.device == "auto" and cuda_available()),
        )
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port: int | None = None
        self.watchdog = Watchdog(
            self.notifier,
            interval=watchdog_interval(default=HOUSEKEEPING_S),
            stuck_limit_s=settings.watchdog.stuck_synthesis_s,
            oldest_synthesis_age=self.tracker.oldest_age,
            status=self.status_line,
            on_health=lambda ok: self.metrics.watchdog_ok.set(1 if ok else 0),
        )
        self._tasks: list[asyncio.Task] = []
        self._stopped = asyncio.Event()
        self.registration = None  # a WorkerRegistration while registered in Redis
        self._advertised: str | None = None

    def _engine_contended(self) -> bool:
        # Called from inside an engine call, which counts itself.
        return self.tracker.in_flight > 1 or self.scheduler.queued > 0

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    @property
    def advertised(self) -> str:
        """The address in this worker's Redis record (what the orchestrator dials)."""
        from appliance.tts.registration import advertised_address

        if self._advertised is None and self.port:
            self._advertised = advertised_address(self.settings, self.port)
        return self._advertised or self.address

    def status_line(self) -> str:
        resident = ",".join(self.manager.resident_ids()) or "none"
        return f"models: {resident}; sessions: {len(self.sessions)}; streams: {len(self.service.streams)}"

    def _listen(self, server: grpc.aio.Server) -> int:
        s, tls = self.settings, self.settings.tls
        where = f"{s.host}:{s.port}"
        if tls.enabled:
            try:
                credentials = server_credentials(tls.cert, tls.key, tls.client_ca)
            except TlsFileError as exc:
                raise ConfigError(f"[tls]: {exc}") from None
            mutual = " (mutual: clients need a certificate from [tls] client_ca)" if tls.client_ca else ""
            log.info("gRPC over TLS on %s%s", where, mutual)
            return server.add_secure_port(where, credentials)
        if not is_loopback_host(s.host):
            log.warning(
                "plaintext gRPC on %s: anyone who can reach it can make this worker speak; "
                "set [tls] cert and key (appliance certs issue)",
                where,
            )
        return server.add_insecure_port(where)

    async def start(self) -> None:
        s = self.settings
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_S))
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if s.redis_url:
            from appliance.tts.registration import WorkerRegistration, describe_worker

            self.registration = WorkerRegistration(
                s, lambda: describe_worker(self)
            )  # checks the password now
        self.server = grpc.aio.server(
            interceptors=[MalformedRequests()],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        tts_pb2_grpc.add_TTSServiceServicer_to_server(self.service, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self._listen(self.server)
        if self.port == 0:
            raise OSError(f"cannot listen on {s.host}:{s.port}")
        await self.server.start()
        add_runtime_gauges(self.metrics.registry, asyncio.get_running_loop())
        if s.metrics_port is not None:
            try:
                self.metrics.serve(s.metrics_host, s.metrics_port)
            except OSError as exc:  # most often a second worker started from the same file
                await self.server.stop(None)
                raise ConfigError(
                    f"metrics_port {s.metrics_port} on {s.metrics_host}: {exc.strerror or exc}. Each worker "
                    "needs its own metrics_port: --metrics-port N, APPLIANCE_METRICS_PORT, or metrics_port "
                    "in its TOML (0: any free port)"
                ) from None
        log.info(
            "worker %s listening on %s (metrics port %s); loading %s",
            s.name,
            self.address,
            self.metrics.port,
            s.models.default,
        )
        self._tasks.append(asyncio.create_task(self.watchdog.run(), name="watchdog"))
        await self.manager.start(preload=s.models.preload)
        self.metrics.resident_models.set(len(self.manager.resident_ids()))
        self._tasks.append(asyncio.create_task(self.manager.run_evictor(HOUSEKEEPING_S), name="evictor"))
        self._tasks.append(asyncio.create_task(self._reap_sessions(), name="session-reaper"))
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        if self.registration is not None:
            self.service.on_change = self.registration.changed
            self.registration.start()
        self.notifier.ready(self.status_line())
        log.info("worker %s ready: %s", s.name, self.status_line())

    async def _set_health(self, status) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def _reap_sessions(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            for sid in await self.service.end_idle_sessions(SESSION_IDLE_S):
                log.info("ended idle session session=%s", sid)

    async def stop(self, grace: float | None = None) -> None:
        """Graceful: health NOT_SERVING, refuse new sessions, let open streams finish, then stop."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.settings.shutdown_grace_s if grace is None else grace
        log.info("worker %s stopping (grace %.1fs)", self.settings.name, grace)
        self.notifier.stopping()
        self.service.draining = True
        if self.registration is not None:  # first, so no new session is routed here
            await self.registration.stop()
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.server is not None:
            await self.server.stop(grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for session in self.sessions.all():
            await self.sessions.end(session.session_id, reason="worker shutdown")
        await self.manager.close()
        self.metrics.close()
        self.scheduler.shutdown()
        log.info("worker %s stopped", self.settings.name)

    async def serve_forever(self) -> None:
        """Run until SIGTERM/SIGINT, then stop gracefully."""
        await serve_until_signalled(self.start, self.stop)
