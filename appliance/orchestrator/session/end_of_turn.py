"""When a turn is over: at a short pause in smart mode, the turn model's verdict; else the silence.

* ``silence``: the VAD ends the turn after ``[vad] endpoint_silence_ms`` of silence.
* ``smart``: the VAD's provisional pause is ``[turn] pause_ms``; there the turn model judges the
  audio so far (off the loop). Complete (a probability above ``[turn] complete_above``): the turn
  ends at that pause. Incomplete: it ends only after ``[turn] incomplete_timeout_ms`` of silence,
  unless speech resumes (the next pause is judged again). With ``check_transcript``, a complete
  verdict waits for the speculative transcript started at the same pause: one that ends on an
  unfinished phrase ("a table for") is overruled. The transcript is what the reply needs anyway, so
  this costs no voice-to-voice time, only moves the commit to it; a verdict at or above
  ``[turn] certain_above`` does not wait for it (the commit, and what follows it, come sooner).
  Both start at ``[turn] lookahead_ms`` of silence, before the pause (the listener's look-ahead),
  so that the turn can end as the pause comes.

  Raising the bar for "complete" (0.9) cut fewer people off at mid-sentence pauses in one
  measured run (20 % against 30 %) but made more finished questions wait the long bound, so the
  defaults stay the model's own 0.5 and always waiting for the check (docs/benchmarks.md).

Without a turn model (not installed, or failed to load) smart mode is silence mode.
"""

from __future__ import annotations

import dataclasses
import logging
import re

import numpy as np

from appliance.asr.turn_model import TurnModel, TurnVerdict
from appliance.audio.vad_config import VadConfig
from appliance.config import TurnSettings

log = logging.getLogger(__name__)


class EndOfTurn:
    def __init__(self, settings: TurnSettings, model: TurnModel | None) -> None:
        self.settings = settings
        self.model = model if settings.mode == "smart" else None
        self._unfinished = {w.lower() for w in settings.unfinished_words}

    @property
    def smart(self) -> bool:
        return self.model is not None

    def vad_config(self, vad: VadConfig) -> VadConfig:
        """The VAD's parameters for this mode: in smart mode the pause and the long bound."""
        if not self.smart:
            return vad
        endpoint = max(self.settings.incomplete_timeout_ms, self.settings.pause_ms)
        return vad.model_copy(
            update={"provisional_silence_ms": self.settings.pause_ms, "endpoint_silence_ms": endpoint}
        )

    def soonest_end_ms(self, vad: VadConfig) -> float:
        """The least silence after which a turn may end, from the last voiced frame."""
        if not self.smart:
            return vad.endpoint_silence_ms
        return self.settings.pause_ms + (self.model_ms or 0.0)

    @property
    def checks_transcript(self) -> bool:
        return self.smart and self.settings.check_transcript

    def needs_transcript(self, verdict: TurnVerdict) -> bool:
        """Does this complete verdict wait for the transcript check before the turn ends?"""
        return self.checks_transcript and verdict.probability < self.settings.certain_above

    def sounds_unfinished(self, text: str) -> bool:
        """Does the transcript stop on a word a sentence seldom ends on ("for", "and", "the")?"""
        words = re.findall(r"[a-z']+", text.lower())
        return bool(words) and words[-1] in self._unfinished

    @property
    def model_ms(self) -> float | None:
        return None if self.model is None else self.model.last_ms

    async def judge(self, audio: np.ndarray) -> TurnVerdict:
        assert self.model is not None
        verdict = await self.model.judge(audio)
        verdict = dataclasses.replace(verdict, complete=verdict.probability > self.settings.complete_above)
        log.debug(
            "turn model: %s p=%.2f in %.0f ms",
            "complete" if verdict.complete else "incomplete",
            verdict.probability,
            verdict.ms,
        )
        return verdict
