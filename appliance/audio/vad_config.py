"""The VAD's parameters (:mod:`.vad` documents what each one does). The orchestrator's ``[vad]``
section is this model: a module of its own, pydantic only, so that loading the configuration does
not load the signal processing (numpy, soxr, webrtcvad)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class VadConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    aggressiveness: int = Field(2, ge=0, le=3, description="webrtcvad mode")
    frame_ms: Literal[10, 20, 30] = 20
    onset_ms: int = Field(60, ge=20, description="voiced time needed to declare a speech start")
    endpoint_silence_ms: int = Field(300, ge=100, description="silence after speech that ends the turn")
    provisional_silence_ms: int = Field(120, ge=20, description="silence at which ProvisionalEnd is emitted")
    min_speech_ms: int = Field(250, ge=0, description="shorter bursts are discarded, not turns")
    max_utterance_s: float = Field(30.0, ge=1, description="longer speech is cut into turns of this length")
    noise_percentile: float = Field(20.0, ge=0, le=100)
    noise_window_s: float = Field(3.0, gt=0)
    gate_margin_db: float = Field(9.0, ge=0)
    speaking_factor: float = Field(2.0, ge=1)
    barged_in_factor: float = Field(1.2, ge=1)
    pre_roll_ms: int = Field(200, ge=0)
    unvoiced_ms: int = Field(
        200, ge=0, description="reach of energy-only frames around voiced speech (unvoiced consonants)"
    )

    @model_validator(mode="after")
    def _check_order(self) -> VadConfig:
        if self.provisional_silence_ms > self.endpoint_silence_ms:
            raise ValueError("provisional_silence_ms must not exceed endpoint_silence_ms")
        if self.max_utterance_s * 1000 < self.min_speech_ms:
            raise ValueError("max_utterance_s must be at least min_speech_ms")
        return self
