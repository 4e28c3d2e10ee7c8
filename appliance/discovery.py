"""Worker discovery through Redis: the worker record both tiers share, its JSON form, the keys and
the channel, and how to connect (password from the config, a file or the URL; never logged).

Keys (``prefix`` defaults to ``appliance:``):

- ``{prefix}worker:{address}`` — a string holding the record as JSON, set with a TTL and refreshed by
  every heartbeat (one key per worker; the address is what the orchestrator dials, so it is unique).
- ``{prefix}workers`` — a pub/sub channel: ``{"event": "register"|"heartbeat"|"update"|"deregister",
  "record": {…}}`` on every write, so the orchestrator does not have to poll.

This module is at the bottom layer: it imports nothing from ``orchestrator`` or ``tts`` (only the
output format from ``audio``, which costs nothing to import).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from appliance.audio import OUTPUT_RATE

SCHEMA_VERSION = 1
DEFAULT_PREFIX = "appliance:"
EVENTS = ("register", "heartbeat", "update", "deregister")
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_MAX_LIST = 256


class BadRecord(ValueError):
    """A record or announcement that does not have the shape of a worker record."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    streaming: bool = True
    zero_shot: bool = False
    lora: bool = False
    cpu_ok: bool = True
    languages: tuple[str, ...] = ()
    emotive_zero_prompt: bool = False
    max_concurrent_sessions: int = 64
    sample_rates: tuple[int, ...] = (OUTPUT_RATE,)
    gpu: bool = False


@dataclass(frozen=True, slots=True)
class EngineCapabilities:
    """What one TTS engine can do: each engine adapter declares its own (``EngineAdapter.capabilities``).
    A worker's routing flags combine those of the engines it serves (``flags_for``)."""

    zero_shot: bool = False  # clones a voice from a reference clip
    lora: bool = False  # takes voice adapters
    cpu_ok: bool = True  # runs in real time on a CPU
    emotive_zero_prompt: bool = False  # expressive without a prompt clip


UNKNOWN_ENGINE = EngineCapabilities(cpu_ok=False)

# The engines this release ships, by the name a worker reports (``GetCapabilities.engines``): the
# adapters declare these very objects, so an orchestrator that knows a worker only by its gRPC
# answer (a static worker) derives the same flags as the worker's own record.
ENGINE_CAPABILITIES: dict[str, EngineCapabilities] = {
    "piper": EngineCapabilities(cpu_ok=True),
    "hibari": EngineCapabilities(cpu_ok=True),  # ~100x real time on one core
    "kokoro": EngineCapabilities(cpu_ok=False),  # 82 M parameters: near real time on a small CPU
    "mock": EngineCapabilities(cpu_ok=True),
    "csm": EngineCapabilities(zero_shot=True, lora=True, cpu_ok=False),  # a 1 B backbone: a GPU's work
    "xtts": EngineCapabilities(zero_shot=True, cpu_ok=False),
}


def flags_for(engines: Iterable[str | EngineCapabilities]) -> EngineCapabilities:
    """The flags of a worker serving ``engines`` (names or declarations): a flag is set when any
    engine has it, except ``cpu_ok``, which needs every one (and at least one engine)."""
    caps = [
        e if isinstance(e, EngineCapabilities) else ENGINE_CAPABILITIES.get(e, UNKNOWN_ENGINE)
        for e in engines
    ]
    return EngineCapabilities(
        zero_shot=any(c.zero_shot for c in caps),
        lora=any(c.lora for c in caps),
        cpu_ok=bool(caps) and all(c.cpu_ok for c in caps),
        emotive_zero_prompt=any(c.emotive_zero_prompt for c in caps),
    )


@dataclass(frozen=True, slots=True)
class LiveMetrics:
    active_sessions: int = 0
    queue_depth: int = 0  # Synthesize streams open plus engine calls waiting
    rtf: float | None = None  # median over recent streams
    ttfa_p50_ms: float | None = None  # median over recent streams


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    name: str
    address: str
    capabilities: Capabilities = field(default_factory=Capabilities)
    default_model: str = ""
    resident_models: tuple[str, ...] = ()
    # The memory each of resident_models took when it loaded, in the same order (bytes).
    resident_bytes: tuple[int, ...] = ()
    available_models: tuple[str, ...] = ()
    metrics: LiveMetrics = field(default_factory=LiveMetrics)
    healthy: bool = True  # false while a synthesis call is stuck (the watchdog's view)
    instance: str = ""  # random per process start
    seq: int = 0  # heartbeat counter within one instance
    heartbeat_at: float = 0.0  # the worker's wall clock (for display only)
    started_at: float = 0.0
    ttl_s: float = 30.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["v"] = SCHEMA_VERSION
        return d

    def summary(self) -> dict:
        """What an operator's view shows of the record (``appliance workers``, ``GET /workers``)."""
        return {
            "name": self.name,
            "address": self.address,
            "default_model": self.default_model,
            "resident_models": list(self.resident_models),
            "available_models": list(self.available_models),
            "languages": list(self.capabilities.languages),
            "active_sessions": self.metrics.active_sessions,
            "max_sessions": self.capabilities.max_concurrent_sessions,
            "queue_depth": self.metrics.queue_depth,
            "ttfa_p50_ms": self.metrics.ttfa_p50_ms,
            "rtf": self.metrics.rtf,
            "healthy": self.healthy,
        }


# --- keys -------------------------------------------------------------------------------------


def worker_key(prefix: str, address: str) -> str:
    return f"{prefix}worker:{address}"


def key_pattern(prefix: str) -> str:
    return f"{prefix}worker:*"


def channel(prefix: str) -> str:
    return f"{prefix}workers"


# --- encoding ---------------------------------------------------------------------------------


def encode(record: WorkerRecord) -> str:
    return json.dumps(record.to_dict(), separators=(",", ":"))


def announcement(event: str, record: WorkerRecord) -> str:
    assert event in EVENTS
    return json.dumps({"event": event, "record": record.to_dict()}, separators=(",", ":"))


def decode(raw: bytes | str) -> WorkerRecord:
    """A record from its JSON form; :class:`BadRecord` names what is wrong. Unknown keys are ignored
    (a newer worker may add some)."""
    return record_from_dict(_load(raw))


def decode_announcement(raw: bytes | str) -> tuple[str, WorkerRecord]:
    obj = _load(raw)
    event = obj.get("event")
    if event not in EVENTS:
        raise BadRecord(f"event: must be one of {', '.join(EVENTS)} (got {event!r})")
    return event, record_from_dict(_get(obj, "record", dict))


def record_from_dict(obj: dict) -> WorkerRecord:
    if not isinstance(obj, dict):
        raise BadRecord(f"a record must be a JSON object (got {type(obj).__name__})")
    version = _get(obj, "v", int, SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise BadRecord(f"v: schema version {version} is not {SCHEMA_VERSION}")
    name = _get(obj, "name", str)
    if not _NAME.match(name):
        raise BadRecord(f"name: {name[:80]!r} is not 1-64 characters of A-Z a-z 0-9 _ . @ -")
    address = _get(obj, "address", str)
    check_address(address)
    caps = _get(obj, "capabilities", dict, {})
    live = _get(obj, "metrics", dict, {})
    try:
        return WorkerRecord(
            name=name,
            address=address,
            capabilities=Capabilities(
                streaming=_get(caps, "streaming", bool, True),
                zero_shot=_get(caps, "zero_shot", bool, False),
                lora=_get(caps, "lora", bool, False),
                cpu_ok=_get(caps, "cpu_ok", bool, True),
                languages=_strings(caps, "languages"),
                emotive_zero_prompt=_get(caps, "emotive_zero_prompt", bool, False),
                max_concurrent_sessions=_count(caps, "max_concurrent_sessions", 64),
                sample_rates=tuple(_get_list(caps, "sample_rates", int, [OUTPUT_RATE])),
                gpu=_get(caps, "gpu", bool, False),
            ),
            default_model=_get(obj, "default_model", str, ""),
            resident_models=_strings(obj, "resident_models"),
            resident_bytes=_resident_bytes(obj),
            available_models=_strings(obj, "available_models"),
            metrics=LiveMetrics(
                active_sessions=_count(live, "active_sessions", 0),
                queue_depth=_count(live, "queue_depth", 0),
                rtf=_number(live, "rtf"),
                ttfa_p50_ms=_number(live, "ttfa_p50_ms"),
            ),
            healthy=_get(obj, "healthy", bool, True),
            instance=_get(obj, "instance", str, ""),
            seq=_count(obj, "seq", 0),
            heartbeat_at=_number(obj, "heartbeat_at") or 0.0,
            started_at=_number(obj, "started_at") or 0.0,
            ttl_s=_number(obj, "ttl_s") or 30.0,
        )
    except BadRecord as exc:
        raise BadRecord(f"worker {name} at {address}: {exc}") from None


def split_host_port(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (a port 1-65535, no whitespace) → (host, port); ValueError "'…' is not HOST:PORT".
    The one check for every worker address: records, settings and command lines."""
    host, sep, port = address.rpartition(":")
    if (
        not sep
        or not host
        or not port.isdigit()
        or not 0 < int(port) < 65536
        or any(c.isspace() for c in address)
    ):
        raise ValueError(f"{address[:80]!r} is not HOST:PORT")
    return host, int(port)


def host_port_arg(value: str) -> str:
    """An argparse type: a worker address, checked like every other."""
    import argparse

    try:
        split_host_port(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def check_address(address: str) -> str:
    try:
        split_host_port(address)
    except ValueError as exc:
        raise BadRecord(f"address: {exc}") from None
    return address


def _load(raw: bytes | str) -> dict:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRecord("not UTF-8 text") from None
    if not isinstance(raw, str):
        raise BadRecord(f"not text (a Redis {type(raw).__name__})")
    try:
        obj = json.loads(raw)
    except ValueError:
        raise BadRecord(f"not JSON: {raw[:60]!r}") from None
    if not isinstance(obj, dict):
        raise BadRecord(f"a record must be a JSON object (got {type(obj).__name__})")
    return obj


_MISSING = object()


def _get(obj: dict, key: str, kind: type, default=_MISSING):
    value = obj.get(key, _MISSING)
    if value is _MISSING or (value is None and default is not _MISSING):
        if default is _MISSING:
            raise BadRecord(f"{key}: missing")
        return default
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        raise BadRecord(f"{key}: must be {kind.__name__} (got {type(value).__name__})")
    return value


def _get_list(obj: dict, key: str, kind: type, default: list) -> list:
    items = _get(obj, key, list, default)
    if len(items) > _MAX_LIST:
        raise BadRecord(f"{key}: more than {_MAX_LIST} items")
    for item in items:
        if not isinstance(item, kind) or (kind is int and isinstance(item, bool)):
            raise BadRecord(f"{key}: items must be {kind.__name__} (got {type(item).__name__})")
    return items


def _strings(obj: dict, key: str) -> tuple[str, ...]:
    return tuple(_get_list(obj, key, str, []))


def _resident_bytes(obj: dict) -> tuple[int, ...]:
    sizes = tuple(_get_list(obj, "resident_bytes", int, []))
    if sizes and len(sizes) != len(_strings(obj, "resident_models")):
        raise BadRecord("resident_bytes: must have one entry per resident model")
    if any(n < 0 for n in sizes):
        raise BadRecord("resident_bytes: must be ≥ 0")
    return sizes


def _count(obj: dict, key: str, default: int) -> int:
    value = _get(obj, key, int, default)
    if value < 0:
        raise BadRecord(f"{key}: must be ≥ 0 (got {value})")
    return value


def _number(obj: dict, key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise BadRecord(f"{key}: must be a finite number ≥ 0 (got {value!r})")
    return float(value)


# --- connecting -------------------------------------------------------------------------------


def redact(url: str | None) -> str:
    """The URL with its password (and user) replaced, for logs."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        if parts.password is None and parts.username is None:
            return url
        host = parts.hostname or ""
        netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:
        return "<redis url>"


def resolve_password(url: str, password: str | None = None, password_file: Path | None = None) -> str | None:
    """The password to use: the setting (or APPLIANCE_REDIS_PASSWORD), else the file's first line,
    else the one in the URL (``redis://:PASSWORD@host:6379/0``), else none."""
    if password:
        return password
    if password_file is not None:
        try:
            text = Path(password_file).read_text().strip()
        except OSError as exc:
            raise ValueError(f"redis password file {password_file}: {exc.strerror or exc}") from None
        if text:
            return text.splitlines()[0].strip()
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def connect(url: str, password: str | None, *, timeout_s: float = 2.0, tls: dict | None = None):
    """A ``redis.asyncio.Redis`` for ``url`` (imported here so nothing else pays for it); ``tls``:
    the keywords of :meth:`appliance.redis_tls.RedisTls.connect_kwargs`."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"redis url {redact(url)!r}: scheme must be redis://, rediss:// or unix://")
    # No hidden retries: the callers own the retry loop, and must see an outage to resync after it.
    kwargs: dict = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 0),
        **(tls or {}),
    }
    if password:
        kwargs["password"] = password
        parts = urlsplit(url)
        if parts.password is not None:  # the URL's password would win over the keyword in redis-py
            netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
            if parts.username:
                netloc = f"{parts.username}@{netloc}"
            url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return aioredis.Redis.from_url(url, **kwargs)
