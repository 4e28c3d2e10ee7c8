"""The selection policy on tables of worker records (pure function, no I/O)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from appliance.discovery import Capabilities, LiveMetrics, WorkerRecord
from appliance.orchestrator.workers.routing import RouteRequest, language_matches, route

PIPER = "piper-en_US-joe-medium"
MOCK = "mock-sine"
KOKO = "kokoro-de"


def w(
    name,
    *,
    resident=(PIPER,),
    available=(PIPER, MOCK),
    langs=("en-US",),
    queue=0,
    sessions=0,
    ttfa=None,
    max_sessions=64,
    rates=(48000,),
    healthy=True,
    default=None,
    **caps,
) -> WorkerRecord:
    return WorkerRecord(
        name=name,
        address=f"{name}.lan:7001",
        capabilities=Capabilities(
            languages=tuple(langs), max_concurrent_sessions=max_sessions, sample_rates=tuple(rates), **caps
        ),
        default_model=default if default is not None else (resident[0] if resident else PIPER),
        resident_models=tuple(resident),
        available_models=tuple(available),
        metrics=LiveMetrics(active_sessions=sessions, queue_depth=queue, ttfa_p50_ms=ttfa),
        healthy=healthy,
    )


def names(r) -> list[str]:
    return [a.worker.name for a in r.attempts]


# (description, workers, request, expected order of names)
TABLE = [
    (
        "lowest queue depth wins",
        [w("a", queue=3), w("b", queue=1), w("c", queue=2)],
        RouteRequest(),
        ["b", "c", "a"],
    ),
    ("then fewest sessions", [w("a", sessions=5), w("b", sessions=2)], RouteRequest(), ["b", "a"]),
    (
        "then best TTFA p50 (unknown last)",
        [w("a", ttfa=None), w("b", ttfa=40.0), w("c", ttfa=25.0)],
        RouteRequest(),
        ["c", "b", "a"],
    ),
    ("the name breaks exact ties", [w("b"), w("a")], RouteRequest(), ["a", "b"]),
    (
        "resident beats lower load",
        [w("a", resident=(MOCK,), queue=0), w("b", resident=(PIPER,), queue=5)],
        RouteRequest(PIPER),
        ["b", "a"],
    ),
    (
        "language filter (en matches en-US)",
        [w("de", langs=("de-DE",)), w("en", langs=("en-US",), queue=9)],
        RouteRequest(language="en"),
        ["en"],
    ),
    (
        "language filter the other way",
        [w("de", langs=("de",)), w("en", langs=("en-US",))],
        RouteRequest(language="de-AT"),
        ["de"],
    ),
    (
        "model must be available",
        [w("a", available=(PIPER,)), w("b", available=(PIPER, KOKO), resident=(KOKO,))],
        RouteRequest(KOKO),
        ["b"],
    ),
    ("sample rate", [w("a", rates=(24000,)), w("b")], RouteRequest(), ["b"]),
    (
        "required capability",
        [w("a"), w("b", zero_shot=True, queue=4)],
        RouteRequest(require=frozenset({"streaming", "zero_shot"})),
        ["b"],
    ),
    (
        "unhealthy and full workers are skipped",
        [w("a", healthy=False), w("b", sessions=2, max_sessions=2), w("c", queue=7)],
        RouteRequest(),
        ["c"],
    ),
]


@pytest.mark.parametrize("workers, request_, expected", [t[1:] for t in TABLE], ids=[t[0] for t in TABLE])
def test_policy_table(workers, request_, expected):
    r = route(workers, request_)
    assert names(r) == expected
    assert r.load_on is None


def test_exclude_and_extra_sessions():
    workers = [w("a"), w("b", sessions=1)]
    assert names(route(workers, RouteRequest(), exclude={"a.lan:7001"})) == ["b"]
    # sessions routed since a's record was written count against it
    assert names(route(workers, RouteRequest(), extra_sessions={"a.lan:7001": 2})) == ["b", "a"]
    # ... also towards the capacity limit
    full = [w("a", sessions=1, max_sessions=2)]
    assert route(full, RouteRequest(), extra_sessions={"a.lan:7001": 1}).attempts == ()


def test_model_resident_nowhere_loads_on_the_best_and_serves_from_a_fallback():
    workers = [
        w("busy", resident=(PIPER,), available=(PIPER, KOKO), queue=4),
        w("idle", resident=(PIPER,), available=(PIPER, KOKO), queue=0),
        w("nokoko", resident=(PIPER,), available=(PIPER,)),
    ]
    r = route(workers, RouteRequest(KOKO))
    assert r.load_on is not None and r.load_on.name == "idle"
    # first the fallbacks with their default voice (resident; the loader last), then the workers that
    # could load it on StartSession
    assert [(a.worker.name, a.model_id, a.resident) for a in r.attempts] == [
        ("nokoko", "", True),
        ("busy", "", True),
        ("idle", "", True),
        ("idle", KOKO, False),
        ("busy", KOKO, False),
    ]


def test_default_model_request_counts_as_resident():
    r = route([w("a", resident=(MOCK,), default=MOCK)], RouteRequest(""))
    assert r.choice.resident and r.choice.model_id == "" and r.load_on is None


def test_no_candidate_says_why():
    r = route([w("a", langs=("de",)), w("b", healthy=False)], RouteRequest(language="fr"))
    assert r.attempts == () and r.choice is None
    assert "language" in r.reason and "unhealthy" in r.reason
    assert "no workers" in route([], RouteRequest()).reason


def test_same_inputs_same_choice():
    workers = [w(n, queue=i % 3, ttfa=30.0 + i % 5) for i, n in enumerate("abcdefghij")]
    first = names(route(workers, RouteRequest()))
    assert all(names(route(list(reversed(workers)), RouteRequest())) == first for _ in range(3))


@pytest.mark.parametrize(
    "wanted, offered, ok",
    [
        ("", ["de"], True),
        ("en", ["en-US"], True),
        ("en-us", ["en-US"], True),
        ("en_US", ["en"], True),
        ("en", ["eng"], False),
        ("de", ["en-US", "fr"], False),
        ("en", [], False),
    ],
)
def test_language_matching(wanted, offered, ok):
    assert language_matches(wanted, offered) is ok


def test_records_are_not_modified():
    a = w("a")
    before = replace(a)
    route([a], RouteRequest(KOKO))
    assert a == before
