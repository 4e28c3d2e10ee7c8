"""The orchestrator's view of the TTS workers, fed by Redis: the announcements on the channel as
they come, plus a full re-read of the worker keys on (re)connect and every ``resync_s`` (pub/sub
drops messages while a connection is down).

The view is also the last-known one: while Redis is unreachable nothing expires and routing goes on
to the workers it knew (the pool probes them over gRPC meanwhile); on reconnect every record gets a
fresh TTL to re-register in (a restarted Redis starts empty). Records that are not worker records
(garbage, wrong types) are ignored with one log line each, never an exception.

A worker marked down (by failover, or a failed probe) stays out of routing until it proves healthy:
a new heartbeat after the mark, or a passing health check (:meth:`clear_down`).

Workers from the orchestrator's static list are entries too (:meth:`add_static`, fed by
:mod:`static_workers`): they never expire. While Redis holds a record for the same address, that
record describes the worker; when it leaves Redis (deregistered, expired) the static entry stays,
described by its gRPC probes (:meth:`describe`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from redis.exceptions import RedisError

from appliance import discovery
from appliance.discovery import BadRecord, WorkerRecord

log = logging.getLogger(__name__)

SWEEP_S = 0.5  # expiry check and pub/sub poll interval
DOWN_GRACE_S = 0.25  # a heartbeat arriving this soon after a down mark may have been sent before it
_BAD_MEMORY = 1024


@dataclass
class Entry:
    record: WorkerRecord
    seen_at: float  # monotonic time of the last new heartbeat (or of the grace given on reconnect)
    version: int  # bumps on every new record
    down: str | None = None  # why it is out of routing
    down_at: float = 0.0
    static: bool = False  # listed in the orchestrator's config: never expires
    in_redis: bool = True  # described by a Redis record (else by gRPC probes: a static-only entry)

    @property
    def source(self) -> str:
        return source_label(static=self.static, in_redis=self.in_redis)


def source_label(*, static: bool, in_redis: bool) -> str:
    """Where an entry came from, as the operator view shows it."""
    if static and in_redis:
        return "static+redis"
    return "static" if static else "redis"


class WorkerRegistry:
    def __init__(
        self,
        url: str,
        password: str | None,
        prefix: str = discovery.DEFAULT_PREFIX,
        *,
        resync_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        tls: dict | None = None,
    ) -> None:
        self.url = url
        self._password = password
        self._tls = tls  # redis-py's ssl_* keywords (rediss://)
        self.prefix = prefix
        self.resync_s = resync_s
        self._clock = clock
        self.entries: dict[str, Entry] = {}
        self.connected = False
        self.connects = 0  # successful (re)connections
        self.bad_records = 0
        self._bad_seen: dict[str, str] = {}  # source -> content already logged as bad
        self._version = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._outage_since: float | None = None

    # --- the view --------------------------------------------------------------------------

    @property
    def in_outage(self) -> bool:
        """Redis could not be reached on the last try (False before the first try ends)."""
        return self._outage_since is not None

    def records(self) -> list[WorkerRecord]:
        return [e.record for e in self.entries.values()]

    def down_addresses(self) -> set[str]:
        return {a for a, e in self.entries.items() if e.down is not None}

    def static_only_addresses(self) -> set[str]:
        """Static entries with no Redis record: only gRPC probes tell how they are."""
        return {a for a, e in self.entries.items() if e.static and not e.in_redis}

    def mark_down(self, address: str, reason: str) -> bool:
        entry = self.entries.get(address)
        if entry is None or entry.down is not None:
            return False
        entry.down, entry.down_at = reason, self._clock()
        log.warning(
            "worker marked down worker=%s address=%s source=%s reason=%s",
            entry.record.name,
            address,
            entry.source,
            reason,
        )
        self._notify()
        return True

    def clear_down(self, address: str, how: str, *, announce: bool = True) -> None:
        entry = self.entries.get(address)
        if entry is not None and entry.down is not None:
            if announce:
                log.info(
                    "worker back in rotation worker=%s address=%s source=%s (%s)",
                    entry.record.name,
                    address,
                    entry.source,
                    how,
                )
            entry.down = None
            self._notify()

    def add_static(self, record: WorkerRecord, down: str | None = None) -> None:
        """An entry for a worker of the static list (``down``: why it is not routable yet)."""
        entry = self.entries.get(record.address)
        if entry is not None:  # Redis knows it already: its record is richer and fresher
            entry.static = True
            self._notify()
            return
        now = self._clock()
        self.entries[record.address] = Entry(
            record,
            now,
            self._next_version(),
            down=down,
            down_at=now if down else 0.0,
            static=True,
            in_redis=False,
        )
        self._notify()

    def describe(self, record: WorkerRecord) -> bool:
        """A static-only entry's record from a gRPC probe; False (ignored) while Redis describes it."""
        entry = self.entries.get(record.address)
        if entry is None or not entry.static or entry.in_redis:
            return False
        entry.record, entry.seen_at, entry.version = record, self._clock(), self._next_version()
        self._notify()
        return True

    def refresh(self, address: str, **changes) -> None:
        """Local knowledge newer than the last record (a finished LoadModel, a gRPC probe)."""
        entry = self.entries.get(address)
        if entry is not None:
            entry.record = replace(entry.record, **changes)
            entry.version = self._next_version()
            self._notify()

    def apply(self, event: str, record: WorkerRecord) -> None:
        address = record.address
        entry = self.entries.get(address)
        if event == "deregister":
            same_instance = entry is not None and (
                not record.instance or record.instance == entry.record.instance
            )
            if same_instance and entry.in_redis:
                self._leave_redis(address, "worker left")
            return
        now = self._clock()
        if entry is None:
            self.entries[address] = Entry(record, now, self._next_version())
            log.info(
                "worker joined worker=%s address=%s models=%s languages=%s",
                record.name,
                address,
                ",".join(record.resident_models) or "-",
                ",".join(record.capabilities.languages),
            )
            self._notify()
            return
        if not entry.in_redis:  # a static worker (re-)registered: its own record takes over from the probes
            log.info("static worker registered in Redis worker=%s address=%s", record.name, address)
            entry.in_redis = True
            entry.record, entry.seen_at, entry.version = record, now, self._next_version()
            if entry.down is not None and now - entry.down_at >= DOWN_GRACE_S:
                self.clear_down(address, "new heartbeat")
            self._notify()
            return
        old = entry.record
        if record.instance == old.instance and record.seq <= old.seq:
            return  # the same heartbeat again (channel and re-read), or an older one
        if record.instance != old.instance:
            log.info("worker restarted worker=%s address=%s", record.name, address)
        entry.record, entry.seen_at, entry.version = record, now, self._next_version()
        if entry.down is not None and now - entry.down_at >= DOWN_GRACE_S:
            self.clear_down(address, "new heartbeat")
        self._notify()

    def apply_raw(self, raw, source: str, *, announcement: bool = False) -> WorkerRecord | None:
        """Decode and apply one value from Redis; a bad one is logged once (per source and content)."""
        try:
            if announcement:
                event, record = discovery.decode_announcement(raw)
            else:
                event, record = "heartbeat", discovery.decode(raw)
                expected = source[len(discovery.worker_key(self.prefix, "")) :]
                if record.address != expected:
                    raise BadRecord(f"address {record.address!r} does not match the key")
        except BadRecord as exc:
            self.bad_records += 1
            text = raw if isinstance(raw, str | bytes) else repr(raw)
            if self._bad_seen.get(source) != text:
                if len(self._bad_seen) >= _BAD_MEMORY:
                    self._bad_seen.clear()
                self._bad_seen[source] = text
                log.warning("ignored a bad worker record source=%s: %s", source, exc)
            return None
        self._bad_seen.pop(source, None)
        self.apply(event, record)
        return record

    def expire(self) -> list[str]:
        """Drop records whose TTL passed without a heartbeat (only while Redis is reachable)."""
        if not self.connected:
            return []
        now = self._clock()
        stale = [a for a, e in self.entries.items() if e.in_redis and now - e.seen_at > e.record.ttl_s]
        gone = []
        for address in stale:
            why = f" (no heartbeat for {now - self.entries[address].seen_at:.0f}s)"
            if self._leave_redis(address, "worker expired", why, level=logging.WARNING):
                gone.append(address)
        return gone

    def _leave_redis(self, address: str, event: str, why: str = "", *, level: int = logging.INFO) -> bool:
        """The Redis record is gone: drop the entry (True), or keep a static one, probed from now on."""
        entry = self.entries[address]
        if entry.static:
            entry.in_redis = False
            why += ": kept as a static worker"
        else:
            del self.entries[address]
        log.log(level, "%s worker=%s address=%s%s", event, entry.record.name, address, why)
        self._notify()
        return not entry.static

    async def wait_until(self, predicate: Callable[[], object], timeout: float):
        """Wait until ``predicate()`` is truthy (checked on every change); for tests and benchmarks."""
        async with asyncio.timeout(timeout):
            while not (result := predicate()):
                changed = self._changed
                await changed.wait()
            return result

    def _next_version(self) -> int:
        self._version += 1
        return self._version

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # --- Redis -----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="worker-registry")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run(self) -> None:
        backoff = 0.25
        while True:
            client = discovery.connect(self.url, self._password, tls=self._tls)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(discovery.channel(self.prefix))
                await self._resync(client)
                self._set_connected(True)
                backoff = 0.25
                next_resync = self._clock() + self.resync_s
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=SWEEP_S)
                    if message is not None and message.get("type") == "message":
                        self.apply_raw(message["data"], discovery.channel(self.prefix), announcement=True)
                    self.expire()
                    if self._clock() >= next_resync:
                        await self._resync(client)
                        next_resync = self._clock() + self.resync_s
            except (RedisError, OSError) as exc:
                self._set_connected(False, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                await _quietly(pubsub.aclose())
                await _quietly(client.aclose())

    async def _resync(self, client) -> None:
        keys = [k async for k in client.scan_iter(match=discovery.key_pattern(self.prefix), count=500)]
        for i in range(0, len(keys), 500):
            batch = keys[i : i + 500]
            for key, raw in zip(batch, await client.mget(batch), strict=True):
                if raw is not None:
                    self.apply_raw(raw, key.decode("utf-8", "replace"))

    def _set_connected(self, up: bool, exc: BaseException | None = None) -> None:
        if up and not self.connected:
            now = self._clock()
            for (
                entry
            ) in self.entries.values():  # a fresh TTL to re-register in (Redis may have restarted empty)
                entry.seen_at = max(entry.seen_at, now)
            self.connects += 1
            outage = f" after {now - self._outage_since:.1f}s" if self._outage_since is not None else ""
            log.info(
                "Redis connected at %s%s: %d workers registered",
                discovery.redact(self.url),
                outage,
                len(self.entries),
            )
            self._outage_since = None
        elif not up and (self.connected or self._outage_since is None):
            self._outage_since = self._clock()
            log.warning(
                "Redis unreachable at %s (%s: %s): routing goes on to the %d workers last known, retrying",
                discovery.redact(self.url),
                type(exc).__name__,
                str(exc)[:200],
                len(self.entries),
            )
        self.connected = up
        self._notify()


async def _quietly(awaitable) -> None:
    try:
        await awaitable
    except (RedisError, OSError):
        pass
