"""Per-turn timings and the `metrics` event (fields defined by the WebSocket protocol, docs/protocol.md)."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.transport.protocol import TurnMetrics


@dataclass
class TurnTimes:
    speech_end_arrival: float | None = None  # when the audio at the end of the user's speech arrived
    endpoint_at: float | None = None  # when the VAD declared the turn over
    asr_ms: float | None = None
    asr_queue_ms: float | None = None  # how long the final transcription waited for the engine
    turn_model_ms: float | None = None  # the turn model's time at the pause that ended the turn
    transcribed_at: float | None = None
    responder_started: float | None = None
    first_text_at: float | None = None  # the responder's first piece
    first_frame_at: float | None = None  # the worker's first frame
    first_sent_at: float | None = None  # the first reply frame sent to the client

    @staticmethod
    def _ms(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round((b - a) * 1000, 1)

    def stages_ms(self) -> dict[str, float | None]:
        """Each stage's latency in ms (None: not measured in this turn), by stage name."""
        return {
            "endpoint": self._ms(self.speech_end_arrival, self.endpoint_at),
            "asr": None if self.asr_ms is None else round(self.asr_ms, 1),
            "responder": self._ms(self.responder_started, self.first_text_at),
            "tts_first_frame": self._ms(self.first_text_at, self.first_frame_at),
            "voice_to_voice": self._ms(self.speech_end_arrival, self.first_sent_at),
        }

    def extra_ms(self) -> dict[str, float | None]:
        """Timings beyond the stages (additive fields of the `metrics` event)."""

        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 1)

        return {"asr_queue_ms": r(self.asr_queue_ms), "turn_model_ms": r(self.turn_model_ms)}

    def event(self) -> TurnMetrics:
        return TurnMetrics(
            **{f"{stage}_ms": ms for stage, ms in self.stages_ms().items()}, extra=self.extra_ms()
        )
