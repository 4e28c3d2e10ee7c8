"""Turn-taking parts: the ASR scheduler's priorities, the backchannel rule, the turn model's
features and the [turn] settings."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from appliance.asr.base import AsrEngine, Recognition
from appliance.asr.scheduler import AsrScheduler, Priority
from appliance.asr.turn_model import features, locate_turn_model
from appliance.audio.log_mel import log_mel
from appliance.config import DEFAULT_BACKCHANNELS, OrchestratorSettings, TurnSettings
from appliance.orchestrator.session.barge_in import is_backchannel
from appliance.orchestrator.session.end_of_turn import EndOfTurn


class SleepingEngine(AsrEngine):
    """An engine whose every pass takes ``pass_s`` and says how long its audio was, in samples."""

    def __init__(self, pass_s: float) -> None:
        super().__init__()
        self.pass_s = pass_s
        self.ran: list[int] = []

    def load(self) -> None:
        self.loaded = True

    def recognize(self, audio: np.ndarray, *, partial: bool) -> Recognition:
        time.sleep(self.pass_s)
        self.ran.append(audio.size)
        return Recognition(str(audio.size), "en")


def audio(n: int) -> np.ndarray:
    return np.zeros(1600 * n, dtype=np.float32)


async def test_the_final_pass_goes_before_waiting_optional_ones_and_a_dropped_one_never_runs():
    engine = SleepingEngine(0.05)
    s = AsrScheduler(engine)
    first = asyncio.ensure_future(s.transcribe(audio(1), Priority.PARTIAL))
    await asyncio.sleep(0.01)  # running now
    partial = asyncio.ensure_future(s.transcribe(audio(2), Priority.PARTIAL))
    dropped = asyncio.ensure_future(s.transcribe(audio(3), Priority.SPECULATIVE))
    final = asyncio.ensure_future(s.transcribe(audio(4), Priority.FINAL))
    await asyncio.sleep(0)
    dropped.cancel()
    results = await asyncio.gather(first, partial, final)
    assert engine.ran == [1600, 6400, 3200]  # the final overtook the partial; the dropped pass never ran
    assert results[2].queue_ms > 0 and results[0].queue_ms < results[2].queue_ms
    assert s.pass_ms is not None and s.pass_ms >= 40


async def test_optional_passes_start_only_when_idle_and_within_the_budget():
    s = AsrScheduler(SleepingEngine(0.03))
    assert s.worth_starting(Priority.SPECULATIVE, 100)  # not measured yet: a speculative pass may
    assert not s.worth_starting(Priority.PARTIAL, 100)  # ... a partial may not
    await s.transcribe(audio(1))
    assert s.worth_starting(Priority.PARTIAL, 1000)
    assert not s.worth_starting(Priority.PARTIAL, 5)  # one pass would outlast the budget
    running = asyncio.ensure_future(s.transcribe(audio(1)))
    await asyncio.sleep(0)
    assert not s.idle and not s.worth_starting(Priority.SPECULATIVE, 10_000)
    await running
    assert s.skipped[Priority.PARTIAL] == 2 and s.skipped[Priority.SPECULATIVE] == 1


@pytest.mark.parametrize(
    "text", ["Mm-hmm.", "Mhm.", "Yeah.", "Okay, right.", "yeah yeah", "Uh-huh.", "I see."]
)
def test_listener_words_are_backchannels(text):
    assert is_backchannel(text, DEFAULT_BACKCHANNELS)


@pytest.mark.parametrize("text", ["Wait, stop.", "No, I meant Tuesday.", "Yes, please.", "Stop", ""])
def test_anything_else_is_not(text):
    assert not is_backchannel(text, DEFAULT_BACKCHANNELS)


def test_the_word_list_is_configurable():
    assert is_backchannel("Roger that.", ["roger that"]) and not is_backchannel("Yeah.", ["roger that"])


def test_features_are_the_last_eight_seconds_padded_in_front():
    rng = np.random.default_rng(0)
    speech = (rng.standard_normal(3 * 16000) * 0.1).astype(np.float32)
    f = features(speech)
    assert f.shape == (1, 80, 800) and f.dtype == np.float32
    padded = np.concatenate([np.zeros(5 * 16000, np.float32), speech])
    assert np.array_equal(f[0], log_mel(padded))  # the shared spectrum of the silent lead changes nothing
    long = np.concatenate(
        [rng.standard_normal(16000).astype(np.float32), speech, np.zeros(6 * 16000, np.float32)]
    )
    assert np.array_equal(features(long)[0], log_mel(long[-8 * 16000 :]))


def test_smart_mode_is_the_default_and_falls_back_to_silence_without_a_model(tmp_path):
    settings = OrchestratorSettings()
    assert settings.turn.mode == "smart" and settings.turn.backchannels
    assert locate_turn_model(tmp_path / "absent.onnx") is None
    fallback = EndOfTurn(settings.turn, None)
    assert not fallback.smart and fallback.vad_config(settings.vad) == settings.vad


def test_smart_mode_asks_at_the_short_pause_and_waits_the_long_bound():
    class Model:
        last_ms = 40.0

    turn = TurnSettings(pause_ms=100, incomplete_timeout_ms=1400)
    eot = EndOfTurn(turn, Model())  # type: ignore[arg-type]
    vad = eot.vad_config(OrchestratorSettings().vad)
    assert (vad.provisional_silence_ms, vad.endpoint_silence_ms) == (100, 1400)
    assert eot.soonest_end_ms(vad) == 140.0
    assert not EndOfTurn(TurnSettings(mode="silence"), Model()).smart  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text, unfinished",
    [
        ("I would like to book a table for", True),
        ("Please add milk and", True),
        ("What is the capital city of...", True),
        ("Play the new album by", True),
        ("What is the weather like in Paris today?", False),
        ("Turn the volume down.", False),
        ("", False),
    ],
)
def test_a_transcript_ending_on_a_function_word_is_a_phrase_going_on(text, unfinished):
    end = EndOfTurn(TurnSettings(), None)
    assert end.sounds_unfinished(text) is unfinished
    assert EndOfTurn(TurnSettings(unfinished_words=[]), None).sounds_unfinished(text) is False


def test_the_transcript_check_belongs_to_smart_mode(tmp_path):
    assert EndOfTurn(TurnSettings(mode="silence"), object()).checks_transcript is False
    assert EndOfTurn(TurnSettings(check_transcript=False), object()).checks_transcript is False
    assert EndOfTurn(TurnSettings(), object()).checks_transcript is True


@pytest.mark.parametrize(
    "p, complete, waits_for_transcript",
    [(0.5, False, True), (0.9, False, True), (0.93, True, True), (0.97, True, False), (0.99, True, False)],
)
async def test_the_bar_for_complete_and_for_not_waiting_on_the_transcript_are_settings(
    p, complete, waits_for_transcript
):
    from appliance.asr.turn_model import TurnVerdict

    class Model:
        last_ms = 10.0

        async def judge(self, audio):
            return TurnVerdict(p > 0.5, p, 10.0)

    eot = EndOfTurn(TurnSettings(complete_above=0.9, certain_above=0.97), Model())  # type: ignore[arg-type]
    verdict = await eot.judge(np.zeros(1600, np.float32))
    assert verdict.complete is complete and verdict.probability == p
    assert eot.needs_transcript(verdict) is waits_for_transcript
    always = EndOfTurn(TurnSettings(certain_above=1.0), Model())  # type: ignore[arg-type]
    assert always.needs_transcript(verdict)
    assert not EndOfTurn(TurnSettings(check_transcript=False), Model()).needs_transcript(verdict)  # type: ignore[arg-type]
    default = EndOfTurn(TurnSettings(), Model())  # type: ignore[arg-type]
    assert (await default.judge(np.zeros(1600, np.float32))).complete is (p > 0.5)
    assert default.needs_transcript(verdict)
