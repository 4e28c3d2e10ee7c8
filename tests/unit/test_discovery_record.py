"""The worker record's JSON form, its validation, URL redaction and password precedence; the
registry's view logic (apply, expiry, down marks) with a fake clock."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest
from fake_registry import registry_on_fake_clock

from appliance import discovery
from appliance.discovery import (
    ENGINE_CAPABILITIES,
    BadRecord,
    Capabilities,
    EngineCapabilities,
    LiveMetrics,
    WorkerRecord,
    flags_for,
    split_host_port,
)

GOOD = WorkerRecord(
    name="piper",
    address="127.0.0.1:7001",
    capabilities=Capabilities(languages=("en-US",), max_concurrent_sessions=8),
    default_model="piper-en_US-joe-medium",
    resident_models=("piper-en_US-joe-medium",),
    available_models=("mock-sine", "piper-en_US-joe-medium"),
    metrics=LiveMetrics(active_sessions=2, queue_depth=1, rtf=0.05, ttfa_p50_ms=31.5),
    instance="abc",
    seq=3,
    heartbeat_at=1700000000.5,
    ttl_s=30.0,
)


def test_round_trip_and_announcement():
    assert discovery.decode(discovery.encode(GOOD)) == GOOD
    assert discovery.decode(discovery.encode(GOOD).encode()) == GOOD
    event, record = discovery.decode_announcement(discovery.announcement("update", GOOD))
    assert (event, record) == ("update", GOOD)
    assert json.loads(discovery.encode(GOOD))["v"] == discovery.SCHEMA_VERSION


def test_unknown_keys_are_ignored_and_optional_ones_default():
    minimal = discovery.decode('{"name": "w", "address": "h:1", "future_field": [1, 2]}')
    assert (
        minimal.capabilities.streaming
        and minimal.metrics.ttfa_p50_ms is None
        and minimal.resident_models == ()
    )


def _with(**changes) -> str:
    d = GOOD.to_dict()
    for path, value in changes.items():
        target = d
        *parents, leaf = path.split("__")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return json.dumps(d)


@pytest.mark.parametrize(
    "raw, says",
    [
        ("not json {", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        ("[1, 2]", "JSON object"),
        ('"a string"', "JSON object"),
        ('{"address": "h:1"}', "name: missing"),
        (_with(name=5), "name: must be str"),
        (_with(name="bad name!"), "name:"),
        (_with(address="no-port"), "address:"),
        (_with(address="h:99999"), "address:"),
        (_with(v=2), "schema version"),
        (_with(capabilities__streaming="yes"), "streaming: must be bool"),
        (_with(capabilities__languages="en"), "languages: must be list"),
        (_with(capabilities__languages=["en", 3]), "languages: items must be str"),
        (_with(capabilities__max_concurrent_sessions=True), "max_concurrent_sessions: must be int"),
        (_with(metrics__queue_depth=-1), "queue_depth: must be ≥ 0"),
        (_with(metrics__ttfa_p50_ms="fast"), "ttfa_p50_ms: must be a finite number"),
        (_with(resident_models={"a": 1}), "resident_models: must be list"),
        (_with(capabilities=[]), "capabilities: must be dict"),
    ],
)
def test_bad_records_are_named(raw, says):
    with pytest.raises(BadRecord, match=says):
        discovery.decode(raw)


def test_bad_announcements():
    with pytest.raises(BadRecord, match="event"):
        discovery.decode_announcement('{"event": "explode", "record": {}}')
    with pytest.raises(BadRecord, match="record: missing"):
        discovery.decode_announcement('{"event": "update"}')


def test_redact_hides_passwords():
    assert discovery.redact("redis://:s3cret@10.0.0.5:6379/0") == "redis://***@10.0.0.5:6379/0"
    assert discovery.redact("redis://user:s3cret@host/1") == "redis://***@host/1"
    assert discovery.redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert "s3cret" not in discovery.redact("rediss://:s3cret@h:1")


def test_password_precedence(tmp_path):
    url = "redis://:fromurl@h:6379/0"
    f = tmp_path / "pw"
    f.write_text("fromfile\nignored\n")
    assert discovery.resolve_password(url, "fromsetting", f) == "fromsetting"
    assert discovery.resolve_password(url, None, f) == "fromfile"
    assert discovery.resolve_password(url, None, None) == "fromurl"
    assert discovery.resolve_password("redis://h:6379", None, None) is None
    with pytest.raises(ValueError, match="password file"):
        discovery.resolve_password(url, None, tmp_path / "missing")


def test_connect_rejects_other_schemes():
    with pytest.raises(ValueError, match="scheme"):
        discovery.connect("http://:pw@h:1", None)


# --- the registry's view, with a fake clock ------------------------------------------------


_registry = registry_on_fake_clock


def _beat(seq: int, instance: str = "abc", **changes) -> WorkerRecord:
    return replace(GOOD, seq=seq, instance=instance, **changes)


def test_registry_applies_expires_only_while_connected_and_gives_grace_on_reconnect():
    reg, clock = _registry()
    reg.apply("register", _beat(1))
    assert [r.address for r in reg.records()] == ["127.0.0.1:7001"]
    clock.t += 100  # far past the TTL, but Redis is not connected: the last-known view stays
    assert reg.expire() == [] and len(reg.records()) == 1
    reg._set_connected(True)  # reconnect: a fresh TTL to re-register in
    clock.t += 29
    assert reg.expire() == []
    clock.t += 2
    assert reg.expire() == ["127.0.0.1:7001"] and reg.records() == []


def test_registry_ignores_stale_heartbeats_and_handles_restarts_and_deregister():
    reg, _clock = _registry()
    reg.apply("register", _beat(5))
    reg.apply("heartbeat", _beat(4, metrics=LiveMetrics(active_sessions=9)))  # older: ignored
    assert reg.records()[0].metrics.active_sessions == 2
    reg.apply("register", _beat(1, instance="new"))  # a restarted worker starts again at 1
    assert reg.records()[0].instance == "new"
    reg.apply("deregister", _beat(2, instance="old"))  # not this instance's: ignored
    assert len(reg.records()) == 1
    reg.apply("deregister", _beat(2, instance="new"))
    assert reg.records() == []


def test_down_mark_holds_until_a_new_heartbeat():
    reg, clock = _registry()
    reg.apply("register", _beat(1))
    assert reg.mark_down("127.0.0.1:7001", "stream died")
    assert reg.down_addresses() == {"127.0.0.1:7001"}
    reg.apply("heartbeat", _beat(1))  # the same heartbeat again proves nothing
    clock.t += 0.1
    reg.apply("heartbeat", _beat(2))  # may have been sent before the failure
    assert reg.down_addresses() == {"127.0.0.1:7001"}
    clock.t += 1
    reg.apply("heartbeat", _beat(3))
    assert reg.down_addresses() == set()
    assert not reg.mark_down("10.9.9.9:1", "unknown")  # unknown workers are not invented


def test_bad_values_are_logged_once_and_never_raise(caplog):
    reg, _ = _registry()
    key = "appliance:worker:127.0.0.1:7001"
    with caplog.at_level(logging.WARNING, logger="appliance.orchestrator.workers.registry"):
        for _ in range(3):
            assert reg.apply_raw(b"garbage", key) is None
        assert reg.apply_raw(_with(address="127.0.0.1:7002"), key) is None  # key and address disagree
        assert reg.apply_raw(b'{"event": 1}', "appliance:workers", announcement=True) is None
    lines = [r for r in caplog.records if "bad worker record" in r.getMessage()]
    assert len(lines) == 3 and reg.bad_records == 5
    assert reg.apply_raw(discovery.encode(GOOD), key) == GOOD


def test_engine_flags_combine_as_the_worker_record_does():
    assert flags_for([]) == EngineCapabilities(cpu_ok=False)  # no engine: nothing runs on a CPU either
    assert flags_for(["piper", "mock"]) == EngineCapabilities(cpu_ok=True)
    assert flags_for(["piper", "some-future-engine"]).cpu_ok is False  # unknown engines promise nothing
    gpu_cloner = EngineCapabilities(zero_shot=True, cpu_ok=False, emotive_zero_prompt=True)
    assert flags_for(["piper", gpu_cloner]) == EngineCapabilities(
        zero_shot=True, cpu_ok=False, emotive_zero_prompt=True
    )


def test_every_shipped_adapter_declares_the_capabilities_discovery_publishes():
    from appliance.tts.adapters import ENGINES

    assert set(ENGINES) == set(ENGINE_CAPABILITIES)
    for name, cls in ENGINES.items():
        assert cls.capabilities is ENGINE_CAPABILITIES[name]


@pytest.mark.parametrize("address", ["nohost", ":7001", "h:", "h:0", "h:65536", "h:12ab", "h :1", ""])
def test_split_host_port_refuses_what_is_not_host_port(address):
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        split_host_port(address)


def test_split_host_port():
    assert split_host_port("127.0.0.1:7001") == ("127.0.0.1", 7001)
    assert split_host_port("[::1]:65535") == ("[::1]", 65535)
