"""Per-turn timings and the `metrics` event (fields defined by the WebSocket protocol, docs/protocol.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TurnTimes:
    speech_end_arrival: float | None = None  # when the audio at the end of the user's speech arrived
    endpoint_at: float | None = None  # when the VAD declared the turn over
    asr_ms: float | None = None
    transcribed_at: float | None = None
    responder_started: float | None = None
    first_text_at: float | None = None  # the responder's first piece
    first_frame_at: float | None = None  # the worker's first frame
    first_sent_at: float | None = None  # the first reply frame sent to the client

    @staticmethod
    def _ms(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round((b - a) * 1000, 1)

    def message(self) -> dict:
        return {
            "type": "metrics",
            "endpoint_ms": self._ms(self.speech_end_arrival, self.endpoint_at),
            "asr_ms": None if self.asr_ms is None else round(self.asr_ms, 1),
            "responder_ms": self._ms(self.responder_started, self.first_text_at),
            "tts_first_frame_ms": self._ms(self.first_text_at, self.first_frame_at),
            "voice_to_voice_ms": self._ms(self.speech_end_arrival, self.first_sent_at),
        }
