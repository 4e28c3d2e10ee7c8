"""Prometheus metrics of a TTS worker, on a registry of its own (several workers may share a process)."""

from __future__ import annotations

from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)


class WorkerMetrics:
    def __init__(self, worker: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"worker": worker}
        r = self.registry
        self.ttfa = Histogram(
            "appliance_tts_ttfa_seconds",
            "First TextChunk received to first audio frame sent",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rtf = Histogram(
            "appliance_tts_rtf",
            "Engine time divided by audio duration, per stream",
            ["model"],
            buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
            registry=r,
        )
        self.control = Histogram(
            "appliance_tts_control_seconds",
            "Control handling time",
            ["command"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.frames = Counter("appliance_tts_frames_total", "Audio frames sent", ["model"], registry=r)
        self.errors = Counter(
            "appliance_tts_errors_total", "RPCs that ended in an error", ["rpc", "code"], registry=r
        )
        self.active_sessions = Gauge("appliance_tts_active_sessions", "Sessions open", registry=r)
        self.active_streams = Gauge("appliance_tts_active_streams", "Synthesize streams open", registry=r)
        self.resident_models = Gauge("appliance_tts_resident_models", "Models loaded in memory", registry=r)
        self.model_refcount = Gauge(
            "appliance_tts_model_refcount", "Sessions using a model", ["model"], registry=r
        )
        self.model_resident_bytes = Gauge(
            "appliance_tts_model_resident_bytes",
            "Memory a model took when it loaded (0 when not resident)",
            ["model"],
            registry=r,
        )
        self.watchdog_ok = Gauge(
            "appliance_tts_watchdog_healthy",
            "1 while no synthesis is stuck (watchdog pings flow)",
            registry=r,
        )
        self.info = Gauge("appliance_tts_worker_info", "Worker identity", list(labels), registry=r)
        self.info.labels(**labels).set(1)
        self._server = None
        self.port: int | None = None
        # The last streams' TTFA and RTF, for the live metrics in the worker's Redis record.
        self.recent_ttfa_s: deque[float] = deque(maxlen=64)
        self.recent_rtf: deque[float] = deque(maxlen=64)

    def serve(self, host: str, port: int) -> int:
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        self.port = server.server_address[1]
        return self.port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
