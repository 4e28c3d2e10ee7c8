"""Static workers alongside Redis discovery, with a fake clock and a fake probe: how static entries and
Redis records merge in the registry, the source label, the record a GetCapabilities answer makes, and
the seeding (reachable, unreachable, then joining)."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
from fake_registry import registry_on_fake_clock

from appliance.config import OrchestratorSettings, load_settings
from appliance.discovery import Capabilities, LiveMetrics, WorkerRecord
from appliance.orchestrator.workers.registry import source_label
from appliance.orchestrator.workers.routing import RouteRequest, route
from appliance.orchestrator.workers.static_workers import NOT_REACHED, StaticWorkers, record_from_capabilities
from appliance.rpc import tts_pb2 as pb

ADDRESS = "127.0.0.1:7001"
REDIS_RECORD = WorkerRecord(
    name="piper",
    address=ADDRESS,
    capabilities=Capabilities(languages=("en-US",), max_concurrent_sessions=8),
    default_model="piper-en_US-joe-medium",
    resident_models=("piper-en_US-joe-medium",),
    available_models=("mock-sine", "piper-en_US-joe-medium"),
    metrics=LiveMetrics(active_sessions=2, queue_depth=1, ttfa_p50_ms=31.5),
    instance="abc",
    seq=3,
    ttl_s=30.0,
)
CAPS = pb.GetCapabilitiesResponse(
    worker_name="static-mock",
    engines=["mock"],
    resident_models=["mock-sine"],
    available_models=["mock-sine"],
    output_sample_rates=[48000],
    frame_duration_ms=20,
    streaming=True,
    gpu=False,
    max_sessions=4,
    active_sessions=1,
    languages=["en-US"],
    default_model="mock-sine",
)


_registry = registry_on_fake_clock


def _static(address: str = ADDRESS, name: str = "static") -> WorkerRecord:
    return WorkerRecord(name=name, address=address)


@pytest.mark.parametrize(
    "static, in_redis, label",
    [
        (True, False, "static"),
        (False, True, "redis"),
        (True, True, "static+redis"),
    ],
)
def test_source_label(static, in_redis, label):
    assert source_label(static=static, in_redis=in_redis) == label


def test_static_entry_never_expires_and_yields_to_a_redis_record_while_there_is_one():
    reg, clock = _registry()
    reg.add_static(_static())
    reg._set_connected(True)
    clock.t += 1000  # far past any TTL
    assert reg.expire() == [] and reg.entries[ADDRESS].source == "static"

    reg.apply("register", REDIS_RECORD)  # the same address registers in Redis: its record is the one used
    assert reg.entries[ADDRESS].source == "static+redis" and reg.records() == [REDIS_RECORD]
    assert reg.static_only_addresses() == set()

    clock.t += 31  # its Redis record expires: the static entry stays, with the last record known
    assert reg.expire() == []
    assert reg.entries[ADDRESS].source == "static" and reg.static_only_addresses() == {ADDRESS}
    assert [r.name for r in reg.records()] == ["piper"]

    reg.apply("register", replace(REDIS_RECORD, seq=1, instance="restarted"))  # back in Redis
    assert reg.entries[ADDRESS].source == "static+redis" and reg.records()[0].instance == "restarted"
    reg.apply("deregister", replace(REDIS_RECORD, instance="restarted"))  # a graceful stop: still listed
    assert reg.entries[ADDRESS].source == "static"


def test_a_redis_only_worker_still_leaves_and_expires():
    reg, clock = _registry()
    reg.add_static(_static())
    other = replace(REDIS_RECORD, address="127.0.0.1:7002")
    reg.apply("register", other)
    reg._set_connected(True)
    clock.t += 31
    assert reg.expire() == ["127.0.0.1:7002"]
    assert set(reg.entries) == {ADDRESS}


def test_listing_an_address_redis_already_has_keeps_the_redis_record():
    reg, _clock = _registry()
    reg.apply("register", REDIS_RECORD)
    reg.add_static(_static())
    entry = reg.entries[ADDRESS]
    assert entry.source == "static+redis" and entry.record == REDIS_RECORD
    assert not reg.describe(_static())  # a probe does not overwrite the worker's own record
    assert reg.records() == [REDIS_RECORD]


def test_describe_replaces_a_static_only_record_and_bumps_its_version():
    reg, _clock = _registry()
    reg.add_static(_static())
    version = reg.entries[ADDRESS].version
    probed = record_from_capabilities(ADDRESS, CAPS)
    assert reg.describe(probed)
    assert reg.records() == [probed] and reg.entries[ADDRESS].version > version
    assert not reg.describe(_static("127.0.0.1:9"))  # not listed: not invented


def test_down_marks_apply_to_static_entries_and_a_heartbeat_after_the_mark_clears_them():
    reg, clock = _registry()
    reg.add_static(_static(), down=NOT_REACHED)
    assert reg.down_addresses() == {ADDRESS}
    clock.t += 1
    reg.apply("register", REDIS_RECORD)  # heard from after the mark: healthy
    assert reg.down_addresses() == set()
    assert reg.mark_down(ADDRESS, "stream died")
    reg.clear_down(ADDRESS, "health check passed")
    assert reg.down_addresses() == set()


def test_record_from_capabilities_is_routable_by_model_language_and_capacity():
    record = record_from_capabilities("10.0.0.5:7001", CAPS)
    assert (record.name, record.address, record.default_model) == (
        "static-mock",
        "10.0.0.5:7001",
        "mock-sine",
    )
    assert record.resident_models == ("mock-sine",) and record.available_models == ("mock-sine",)
    caps = record.capabilities
    assert (caps.languages, caps.max_concurrent_sessions, caps.sample_rates) == (("en-US",), 4, (48000,))
    assert caps.streaming and caps.cpu_ok and not caps.gpu
    assert record.metrics.active_sessions == 1

    assert route([record], RouteRequest(model_id="mock-sine", language="en")).choice.worker == record
    assert not route([record], RouteRequest(language="de")).attempts
    assert not route([record], RouteRequest(model_id="piper-en_US-joe-medium")).attempts
    full = record_from_capabilities(
        "10.0.0.5:7001",
        pb.GetCapabilitiesResponse(
            worker_name="x", max_sessions=1, active_sessions=1, output_sample_rates=[48000], streaming=True
        ),
    )
    assert route([full], RouteRequest()).reason.endswith("(rejected: 1 full)")


def test_a_bare_capabilities_answer_gets_usable_defaults():
    record = record_from_capabilities("10.0.0.5:7001", pb.GetCapabilitiesResponse())
    assert record.name == "10.0.0.5:7001"  # no name given: the address
    assert record.capabilities.sample_rates == (48000,) and record.capabilities.max_concurrent_sessions == 64
    assert not record.capabilities.streaming and not record.capabilities.cpu_ok  # unknown: not claimed


async def test_seed_keeps_an_unreachable_worker_down_until_a_probe_passes(caplog):
    reg, _clock = _registry()
    reachable, unreachable = "127.0.0.1:7101", "127.0.0.1:7102"

    async def probe(address: str) -> pb.GetCapabilitiesResponse:
        if address == unreachable:
            raise RuntimeError("health NOT_SERVING")
        return CAPS

    static = StaticWorkers(reg, [reachable, unreachable, reachable], probe)
    with caplog.at_level(logging.INFO, logger="appliance.orchestrator"):
        await static.seed()
        assert set(reg.entries) == {reachable, unreachable}  # duplicates listed once
        assert reg.down_addresses() == {unreachable} and reg.entries[unreachable].down == NOT_REACHED
        assert reg.entries[reachable].record.name == "static-mock"
        assert {e.source for e in reg.entries.values()} == {"static"}

        assert static.probe_passed(unreachable, CAPS)  # it came up
        assert reg.down_addresses() == set() and reg.entries[unreachable].record.name == "static-mock"
        assert static.probe_passed(unreachable, CAPS)  # and stays up: no second "joined"
    lines = [r.getMessage() for r in caplog.records]
    assert sum("static worker joined" in x and unreachable in x for x in lines) == 1
    assert sum("static worker joined" in x and reachable in x for x in lines) == 1
    assert sum("not reachable" in x and unreachable in x for x in lines) == 1
    assert not any("back in rotation" in x for x in lines)  # joining is one line, not two


def test_only_a_worker_list_the_operator_gave_is_used_alongside_redis():
    assert load_settings(OrchestratorSettings, None, redis_url="redis://127.0.0.1:1/0").listed_workers() == []
    given = load_settings(
        OrchestratorSettings, None, redis_url="redis://127.0.0.1:1/0", workers=["10.0.0.5:7001"]
    )
    assert given.listed_workers() == ["10.0.0.5:7001"]
