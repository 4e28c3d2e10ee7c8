"""A worker's registration in Redis: its record, written at start, refreshed by a heartbeat with a TTL,
re-announced soon after a change (sessions, models), and deleted at once on a graceful shutdown.

Redis being away never stops the worker: it keeps serving, logs the outage once, retries with a
backoff, and registers again when Redis is back (e.g. a restarted Redis with no data).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

from redis.exceptions import RedisError

from appliance import discovery
from appliance.audio import OUTPUT_RATE
from appliance.config import ConfigError, WorkerSettings
from appliance.discovery import UNKNOWN_ENGINE, Capabilities, LiveMetrics, WorkerRecord, flags_for
from appliance.redis_tls import RedisTls
from appliance.tts.adapters import ENGINES

log = logging.getLogger(__name__)

MIN_UPDATE_GAP_S = 0.1  # changes are coalesced into at most one update this often
DEREGISTER_TIMEOUT_S = 1.0


def advertised_address(settings: WorkerSettings, port: int) -> str:
    """What the orchestrator dials: the configured one, else host:port (a wildcard host is replaced by
    this machine's name)."""
    if settings.discovery.advertise_address:
        return settings.discovery.advertise_address
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
        log.warning(
            "listening on all interfaces: advertising %s:%d (set discovery.advertise_address)", host, port
        )
    return f"{host}:{port}"


def describe_worker(worker) -> WorkerRecord:
    """The record of a running :class:`~appliance.tts.worker.TTSWorker` as it is now (unstamped)."""
    s = worker.settings
    snapshot = worker.manager.snapshot()
    resident = [m for m in snapshot if m.state == "resident"]
    flags = flags_for(
        ENGINES[e].capabilities if e in ENGINES else UNKNOWN_ENGINE for e in {m.engine for m in snapshot}
    )
    recent_ttfa, recent_rtf = list(worker.metrics.recent_ttfa_s), list(worker.metrics.recent_rtf)
    return WorkerRecord(
        name=s.name,
        address=worker.advertised,
        capabilities=Capabilities(
            streaming=True,
            zero_shot=flags.zero_shot,
            lora=flags.lora,
            cpu_ok=flags.cpu_ok,
            languages=tuple(s.discovery.languages or sorted({m.language for m in snapshot})),
            emotive_zero_prompt=flags.emotive_zero_prompt,
            max_concurrent_sessions=s.max_sessions,
            sample_rates=(OUTPUT_RATE,),
            gpu=worker.service.gpu,
        ),
        default_model=s.models.default,
        resident_models=tuple(m.model_id for m in resident),
        resident_bytes=tuple(m.resident_bytes for m in resident),
        available_models=tuple(m.model_id for m in snapshot),
        metrics=LiveMetrics(
            active_sessions=len(worker.sessions),
            queue_depth=len(worker.service.streams) + worker.scheduler.queued,
            rtf=round(statistics.median(recent_rtf), 4) if recent_rtf else None,
            ttfa_p50_ms=round(statistics.median(recent_ttfa) * 1000, 2) if recent_ttfa else None,
        ),
        healthy=worker.watchdog.healthy(),
    )


class WorkerRegistration:
    """Keeps one worker's record alive in Redis while :meth:`run` runs."""

    def __init__(self, settings: WorkerSettings, describe: Callable[[], WorkerRecord]) -> None:
        d = settings.discovery
        self.url = settings.redis_url or ""
        self.prefix = d.key_prefix
        self.heartbeat_s = d.heartbeat_s
        self.ttl_s = d.ttl_s
        self._describe = describe
        try:
            password = discovery.resolve_password(
                self.url,
                settings.redis_password.get_secret_value() if settings.redis_password else None,
                d.password_file,
            )
            tls = RedisTls.of(d).connect_kwargs(self.url)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not password:
            log.warning("Redis at %s is used without a password", discovery.redact(self.url))
        self.redis = discovery.connect(self.url, password, tls=tls)
        self.instance = secrets.token_hex(6)
        self.started_at = time.time()
        self.seq = 0
        self.registered = asyncio.Event()  # set after the first successful write
        self.key: str | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._outage_since: float | None = None

    def changed(self) -> None:
        """Something routing cares about changed (sessions, resident models): announce it soon."""
        self._changed.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="registration")

    def _stamp(self) -> WorkerRecord:
        self.seq += 1
        return replace(
            self._describe(),
            instance=self.instance,
            seq=self.seq,
            heartbeat_at=round(time.time(), 3),
            started_at=round(self.started_at, 3),
            ttl_s=self.ttl_s,
        )

    async def _write(self, event: str) -> WorkerRecord:
        record = self._stamp()
        self.key = discovery.worker_key(self.prefix, record.address)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(self.key, discovery.encode(record), px=int(self.ttl_s * 1000))
            pipe.publish(discovery.channel(self.prefix), discovery.announcement(event, record))
            await pipe.execute()
        return record

    async def run(self) -> None:
        event, backoff = "register", 0.25
        while True:
            self._changed.clear()
            try:
                record = await self._write(event)
            except (RedisError, OSError) as exc:
                if self._outage_since is None:
                    self._outage_since = time.monotonic()
                    log.warning(
                        "Redis unreachable at %s (%s): worker keeps serving, retrying registration",
                        discovery.redact(self.url),
                        _brief(exc),
                    )
                event, wait = "register", min(backoff, self.heartbeat_s)
                backoff = min(backoff * 2, self.heartbeat_s)
            else:
                if event == "register" or self._outage_since is not None:
                    after = (
                        f" after an outage of {time.monotonic() - self._outage_since:.1f}s"
                        if self._outage_since is not None
                        else ""
                    )
                    log.info(
                        "registered worker=%s address=%s key=%s ttl=%.0fs%s",
                        record.name,
                        record.address,
                        self.key,
                        self.ttl_s,
                        after,
                    )
                self._outage_since = None
                self.registered.set()
                event, wait, backoff = "heartbeat", self.heartbeat_s, 0.25
            try:
                async with asyncio.timeout(wait):
                    await self._changed.wait()
            except TimeoutError:
                continue
            if event == "heartbeat":  # a change, while registered: announce it (coalescing bursts)
                event = "update"
                await asyncio.sleep(MIN_UPDATE_GAP_S)

    async def stop(self) -> None:
        """Stop the heartbeat and delete the record at once (best effort: a dead Redis lets it expire)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.key is not None:
            try:
                record = replace(self._stamp(), healthy=False)
                async with asyncio.timeout(DEREGISTER_TIMEOUT_S):
                    async with self.redis.pipeline(transaction=False) as pipe:
                        pipe.delete(self.key)
                        pipe.publish(
                            discovery.channel(self.prefix), discovery.announcement("deregister", record)
                        )
                        await pipe.execute()
                log.info("deregistered worker=%s key=%s", record.name, self.key)
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning(
                    "could not deregister (%s): the record expires within %.0fs", _brief(exc), self.ttl_s
                )
        try:
            await self.redis.aclose()
        except (RedisError, OSError):
            pass


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"
