"""`appliance workers`: the worker registry for an operator — from a running orchestrator (its routing
view: down marks, sessions routed) or straight from Redis (the records as the workers wrote them)."""

from __future__ import annotations

import json
import time
import urllib.request

from redis.exceptions import RedisError

from appliance import discovery
from appliance.config import ConfigError, OrchestratorSettings
from appliance.redis_tls import RedisTls


def fetch_orchestrator(url: str, timeout: float = 5.0) -> dict:
    base = url.rstrip("/")
    with urllib.request.urlopen(f"{base}/workers", timeout=timeout) as reply:
        return json.loads(reply.read())


async def read_redis(settings: OrchestratorSettings) -> dict:
    """The records in Redis now (bad ones listed by key, not fatal)."""
    url = settings.redis_url or ""
    secret = settings.redis_password.get_secret_value() if settings.redis_password else None
    try:
        password = discovery.resolve_password(url, secret, settings.discovery.password_file)
        tls = RedisTls.of(settings.discovery).connect_kwargs(url)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    prefix = settings.discovery.key_prefix
    client = discovery.connect(url, password, tls=tls)
    try:
        keys = sorted([k async for k in client.scan_iter(match=discovery.key_pattern(prefix), count=500)])
        values = await client.mget(keys) if keys else []
        ttls = [await client.pttl(k) for k in keys]
    except RedisError as exc:
        raise ConnectionError(f"Redis at {discovery.redact(url)}: {exc}") from None
    finally:
        await client.aclose()
    workers, bad = [], []
    now = time.time()
    for key, raw, ttl in zip(keys, values, ttls, strict=True):
        name = key.decode("utf-8", "replace")
        if raw is None:
            continue
        try:
            r = discovery.decode(raw)
        except discovery.BadRecord as exc:
            bad.append({"key": name, "error": str(exc)})
            continue
        workers.append(
            {
                **r.summary(),
                "down": None,
                "source": "redis",
                "heartbeat_age_s": round(max(0.0, now - r.heartbeat_at), 1),
                "expires_in_s": round(ttl / 1000, 1),
            }
        )
    return {
        "redis": {"url": discovery.redact(url), "connected": True, "bad_records": len(bad)},
        "workers": workers,
        "bad": bad,
    }


def format_table(view: dict) -> str:
    redis = view.get("redis")
    head = (
        "static worker list (no Redis)"
        if redis is None
        else (
            f"Redis {redis['url']}: {'connected' if redis['connected'] else 'UNREACHABLE (last-known view)'}"
            + (f", {redis['bad_records']} bad records ignored" if redis.get("bad_records") else "")
        )
    )
    rows = [
        (
            "NAME",
            "ADDRESS",
            "SOURCE",
            "STATE",
            "MODELS (resident)",
            "SESSIONS",
            "QUEUE",
            "TTFA p50",
            "HEARTBEAT",
            "ROUTED",
        )
    ]
    for w in view.get("workers", []):
        state = "down: " + w["down"] if w.get("down") else ("up" if w.get("healthy", True) else "unhealthy")
        sessions = f"{w.get('active_sessions', '-')}/{w.get('max_sessions', '-')}"
        ttfa = f"{w['ttfa_p50_ms']:.0f} ms" if w.get("ttfa_p50_ms") is not None else "-"
        beat = f"{w['heartbeat_age_s']:.1f}s ago" if w.get("heartbeat_age_s") is not None else "-"
        models = ",".join(w.get("resident_models", [])) or "-"
        rows.append(
            (
                w["name"],
                w["address"],
                w.get("source", "-"),
                state,
                models,
                sessions,
                str(w.get("queue_depth", "-")),
                ttfa,
                beat,
                str(w.get("routed", "-")),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [head] + ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    if len(rows) == 1:
        lines.append("(no workers)")
    for b in view.get("bad", []):
        lines.append(f"bad record {b['key']}: {b['error']}")
    return "\n".join(lines)
