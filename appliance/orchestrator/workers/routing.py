"""The worker selection policy: a pure function of the worker records and what a session needs.

1. Filter: not excluded or down, healthy, not full, serves the model (or any, for the default),
   speaks the language, produces the sample rate, has every required capability.
2. Prefer workers with the requested model resident (the default model counts as resident).
3. Lowest queue depth (streams open plus engine calls waiting), then fewest active sessions (a
   session is a whole conversation, mostly idle between replies, so this spreads them).
4. Best TTFA p50 (unknown counts as worst), then the name and the address, so the choice is stable.

When no candidate has the model resident, the best candidate is asked to load it in the background
(:attr:`Route.load_on`) and the session is served meanwhile by the best worker that can start it
right away with a resident model (its default voice), the loader last: :attr:`Route.attempts` says
which model to ask each worker for, in order.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace

from appliance.audio.format import OUTPUT_RATE
from appliance.discovery import WorkerRecord

_INF = float("inf")


@dataclass(frozen=True, slots=True)
class RouteRequest:
    model_id: str = ""  # empty: the worker's default model
    language: str = ""  # empty: any; "en" matches "en-US" and the reverse
    sample_rate: int = OUTPUT_RATE
    require: frozenset[str] = frozenset({"streaming"})


@dataclass(frozen=True, slots=True)
class Attempt:
    worker: WorkerRecord
    model_id: str  # what to send in StartSession ("" for the worker's default)
    resident: bool  # the model asked for is resident there (no load on StartSession)


@dataclass(frozen=True, slots=True)
class Route:
    attempts: tuple[Attempt, ...]  # best first; the caller tries them in order
    load_on: WorkerRecord | None = None  # ask this worker to LoadModel(request.model_id), in the background
    reason: str = ""  # why there is no candidate (when attempts is empty)

    @property
    def choice(self) -> Attempt | None:
        return self.attempts[0] if self.attempts else None


def language_matches(wanted: str, offered: Iterable[str]) -> bool:
    if not wanted:
        return True
    w = wanted.lower().replace("_", "-")
    for lang in offered:
        o = lang.lower().replace("_", "-")
        if o == w or o.startswith(w + "-") or w.startswith(o + "-"):
            return True
    return False


def is_resident(worker: WorkerRecord, model_id: str) -> bool:
    return (model_id or worker.default_model) in worker.resident_models or (
        not model_id and not worker.default_model  # a worker that does not say: trust its default
    )


def _rejection(worker: WorkerRecord, req: RouteRequest, extra: int) -> str | None:
    caps = worker.capabilities
    if not worker.healthy:
        return "unhealthy"
    if worker.metrics.active_sessions + extra >= caps.max_concurrent_sessions:
        return "full"
    if req.model_id and req.model_id not in worker.available_models:
        return "model"
    if not language_matches(req.language, caps.languages):
        return "language"
    if req.sample_rate not in caps.sample_rates:
        return "sample rate"
    for flag in req.require:
        if not getattr(caps, flag, False):
            return "capability"
    return None


def route(
    workers: Collection[WorkerRecord],
    req: RouteRequest,
    *,
    exclude: Collection[str] = (),
    extra_sessions: Mapping[str, int] | None = None,
) -> Route:
    """Rank ``workers`` for ``req``. ``exclude`` holds addresses never to pick (down, or failed this
    session); ``extra_sessions`` holds sessions assigned since a worker's record was written."""
    extra_sessions = extra_sessions or {}
    scored: list[tuple[tuple, WorkerRecord, bool]] = []
    rejected: dict[str, int] = {}
    for w in workers:
        if w.address in exclude:
            rejected["excluded"] = rejected.get("excluded", 0) + 1
            continue
        extra = extra_sessions.get(w.address, 0)
        why = _rejection(w, req, extra)
        if why is not None:
            rejected[why] = rejected.get(why, 0) + 1
            continue
        m = w.metrics
        resident = is_resident(w, req.model_id)
        ttfa = m.ttfa_p50_ms if m.ttfa_p50_ms is not None else _INF
        key = (not resident, m.queue_depth, m.active_sessions + extra, ttfa, w.name, w.address)
        scored.append((key, w, resident))
    if not scored:
        why = ", ".join(f"{n} {k}" for k, n in sorted(rejected.items())) or "no workers"
        return Route((), reason=f"no worker fits (rejected: {why})")
    scored.sort(key=lambda item: item[0])
    attempts = [Attempt(w, req.model_id, resident) for _, w, resident in scored]
    if not req.model_id or attempts[0].resident:
        return Route(tuple(attempts))
    # Nobody has the model resident: load it on the best candidate; serve meanwhile from the best
    # worker with its default model resident, then (if every such start fails) from the loader itself.
    load_on = attempts[0].worker
    any_voice = route(workers, replace(req, model_id=""), exclude=exclude, extra_sessions=extra_sessions)
    fallbacks = [a for a in any_voice.attempts if a.worker.default_model in a.worker.resident_models]
    fallbacks.sort(key=lambda a: a.worker is load_on)  # the loader is busy loading: serve from another first
    return Route(tuple(fallbacks + attempts), load_on=load_on)
