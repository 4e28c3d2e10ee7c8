"""Prometheus metrics of the orchestrator (served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from appliance.orchestrator.session.turn import TurnTimes

_MS_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class OrchestratorMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.sessions = Gauge("appliance_sessions_active", "Conversations open", ["transport"], registry=r)
        self.sessions_total = Counter(
            "appliance_sessions_total", "Conversations started", ["transport"], registry=r
        )
        self.turns = Counter("appliance_turns_total", "User turns answered", registry=r)
        self.barge_ins = Counter("appliance_barge_ins_total", "Replies paused by user speech", registry=r)
        self.false_barge_ins = Counter(
            "appliance_false_barge_ins_total",
            "Paused replies resumed because no turn was confirmed",
            registry=r,
        )
        self.errors = Counter("appliance_errors_total", "Errors sent to clients", ["code"], registry=r)
        self.access_refused = Counter(
            "appliance_access_refused_total",
            "Requests and sessions refused by access control, by reason "
            "(access_required, access_denied, origin_refused, rate_limited)",
            ["code"],
            registry=r,
        )
        self.stage = Histogram(
            "appliance_turn_stage_seconds",
            "Per-turn latency by stage (endpoint, asr, responder, tts_first_frame, voice_to_voice)",
            ["stage"],
            buckets=_MS_BUCKETS,
            registry=r,
        )
        self.failovers = Counter(
            "appliance_tts_failovers_total",
            "Replies moved off a TTS worker mid-stream: cause lost (stream failed) or stalled (deadline passed)",
            ["worker", "cause"],
            registry=r,
        )
        self.failover_gap = Histogram(
            "appliance_tts_failover_gap_seconds",
            "Failover gap: last frame from the failed worker to the first frame from the next",
            buckets=_MS_BUCKETS,
            registry=r,
        )
        self.worker_wait = Histogram(
            "appliance_tts_worker_wait_seconds",
            "Waits for a TTS worker when none was available ([playback] tts_retry_s), by outcome: "
            "recovered, gave_up or cancelled",
            ["outcome"],
            buckets=(0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        )

    def observe_turn(self, times: TurnTimes) -> None:
        self.turns.inc()
        for stage, ms in times.stages_ms().items():
            if ms is not None:
                self.stage.labels(stage).observe(ms / 1000)
