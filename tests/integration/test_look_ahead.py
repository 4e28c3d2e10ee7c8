"""The turn model's look-ahead, on Piper's speech through the real VAD: the verdict and the
speculative transcript start once a silence has lasted ``[turn] lookahead_ms``, so that the turn
can end as soon as the silence becomes a pause (``pause_ms``) and never before it; a silence that
turns out to be a gap between words leaves no trace. The turn model and the ASR are stand-ins that
answer at once: this is about when they are asked, not what they say."""

from __future__ import annotations

import asyncio

import numpy as np
from voices import pad, piper_speech, with_noise

from appliance.asr.base import AsrEngine, Recognition
from appliance.asr.scheduler import scheduler_for
from appliance.asr.turn_model import TurnVerdict
from appliance.audio.vad import SilenceSoFar
from appliance.config import OrchestratorSettings, load_settings
from appliance.orchestrator.session.end_of_turn import EndOfTurn
from appliance.orchestrator.session.listening import Listener
from appliance.orchestrator.session.states import State, StateMachine

RATE = 16000
CHUNK = RATE // 50  # 20 ms, as a client sends
QUESTION = "What is the weather like in Paris today?"


class SizeEngine(AsrEngine):
    """Says how many samples it was given: which audio a transcript came from."""

    def __init__(self) -> None:
        super().__init__()
        self.ran: list[int] = []

    def load(self) -> None:
        self.loaded = True

    def recognize(self, audio: np.ndarray, *, partial: bool) -> Recognition:
        self.ran.append(audio.size)
        return Recognition(str(audio.size), "en")


class Judge:
    """Calls every pause complete and notes where in the input it was asked."""

    last_ms = 1.0

    def __init__(self) -> None:
        self.asked_at: list[int] = []
        self.silences: list[SilenceSoFar | None] = []  # the silence it was asked in (None: a pause)
        self.listener: Listener | None = None

    async def judge(self, audio: np.ndarray) -> TurnVerdict:
        assert self.listener is not None
        self.asked_at.append(self.listener.detector.position_ms)
        self.silences.append(self.listener.detector.silence_so_far())
        return TurnVerdict(True, 0.9, 1.0)

    def close(self) -> None:
        pass


class Host:
    def __init__(self) -> None:
        self.turns: list[tuple[int, asyncio.Task | None]] = []  # (input position at the end, transcript)

    def speech_started(self) -> None:
        pass

    def speech_ended(self) -> bool:
        return True

    def turn_heard(self, audio, speculative, times) -> None:
        self.turns.append((self.listener.detector.position_ms, speculative))

    def speech_discarded(self) -> None:
        pass


class Recording(Listener):
    """The listener, noting where each turn's speech ended (the VAD's estimate)."""

    ends: list[int]

    def _on_speech_end(self, event) -> None:
        self.ends.append(event.t_ms)
        super()._on_speech_end(event)


async def _listen(
    samples: np.ndarray, engine: SizeEngine | None = None, **turn
) -> tuple[Recording, Judge, Host, SizeEngine]:
    settings = load_settings(OrchestratorSettings, None, turn={"incomplete_timeout_ms": 2000, **turn})
    judge, host, engine = Judge(), Host(), engine or SizeEngine()
    engine.load()
    sm = StateMachine("look-ahead")
    sm.to(State.LISTENING)
    tasks: list[asyncio.Task] = []

    def spawn(coro) -> asyncio.Task:
        tasks.append(asyncio.ensure_future(coro))
        return tasks[-1]

    listener = Recording(
        settings, RATE, engine, sm, host, emit=lambda e: None, spawn=spawn,
        end_of_turn=EndOfTurn(settings.turn, judge),  # type: ignore[arg-type]
    )  # fmt: skip
    listener.ends, judge.listener, host.listener = [], listener, listener
    pcm = samples.astype("<i2").tobytes()
    for i in range(0, len(pcm), 2 * CHUNK):
        listener.hear(pcm[i : i + 2 * CHUNK])
        # Let what this chunk started finish before the next one comes, whatever this machine's speed.
        while pending := [t for t in tasks if not t.done()]:
            await asyncio.wait(pending, timeout=10)
    listener.close()
    return listener, judge, host, engine


async def test_the_verdict_is_asked_before_the_pause_and_the_turn_ends_at_the_pause():
    clip = with_noise(pad(piper_speech(QUESTION, RATE), RATE, 0.5, 2.0))
    listener, judge, host, _ = await _listen(clip, pause_ms=120, lookahead_ms=60)
    ((end,),) = [listener.ends]
    ((at, _),) = host.turns
    last = judge.silences[-1]
    # Asked on the final silence once it had lasted 60 ms (the chunk that crossed it), before the pause ...
    assert last is not None and 60 <= last.ms < 120 and last.voiced_end_ms <= end, judge.silences
    assert sum(a > end for a in judge.asked_at) <= 1, (end, judge.asked_at)
    # ... and the turn ended when the silence became the 120 ms pause (within the frame that did).
    assert 120 <= at - last.voiced_end_ms <= 140, (last, at)


async def test_without_look_ahead_the_verdict_is_asked_at_the_pause():
    clip = with_noise(pad(piper_speech(QUESTION, RATE), RATE, 0.5, 2.0))
    listener, judge, host, _ = await _listen(clip, pause_ms=120, lookahead_ms=0)
    ((end,),) = [listener.ends]
    assert all(s is None for s in judge.silences), judge.silences  # only ever at a pause
    assert judge.asked_at[-1] >= end and host.turns[0][0] == judge.asked_at[-1], (end, judge.asked_at)


async def test_gaps_between_words_leave_one_turn_and_its_transcript_whole():
    """Piper leaves 60 ms silences between some words: each starts a look-ahead whose verdict says
    "complete", yet the speech goes on before the pause; each is dropped with its speculative pass,
    and the turn's transcript is of the whole sentence."""
    text = "I would like to book a table for four people tonight."
    clip = with_noise(pad(piper_speech(text, RATE), RATE, 0.5, 2.0))
    listener, judge, host, engine = await _listen(clip, pause_ms=120, lookahead_ms=60)
    ((end,),) = [listener.ends]
    inner = [s for s in judge.silences if s is not None and s.voiced_end_ms < end - 200]
    assert inner, judge.silences  # asked at gaps inside the sentence
    ((_, speculative),) = host.turns
    assert speculative is not None
    whole = int((await speculative).text)  # samples the turn's transcript was made from
    assert whole == max(engine.ran) and len(engine.ran) > 2, engine.ran


async def test_an_engine_too_slow_for_the_gaps_gets_no_look_ahead():
    """A pass longer than an onset and a pause could be wasted on a gap and hold up the pause's own:
    the look-ahead is left out, and the pause does it all."""
    engine = SizeEngine()
    scheduler_for(engine).pass_ms = 400.0  # as measured on a slow machine
    clip = with_noise(pad(piper_speech(QUESTION, RATE), RATE, 0.5, 2.0))
    _, judge, host, _ = await _listen(clip, engine, pause_ms=120, lookahead_ms=60)
    assert judge.silences and all(s is None for s in judge.silences), judge.silences
    assert len(host.turns) == 1


class UnfinishedEngine(SizeEngine):
    def recognize(self, audio: np.ndarray, *, partial: bool) -> Recognition:
        self.ran.append(audio.size)
        return Recognition("I would like to book a table for", "en")


async def test_the_transcript_check_gets_its_pass_even_from_an_engine_too_slow_to_speculate():
    """Optional passes are refused to a slow engine, but the one at a pause is what the check (and
    the reply) needs: without it a "complete" verdict would end the turn on "a table for"."""
    engine = UnfinishedEngine()
    scheduler_for(engine).pass_ms = 5000.0
    clip = with_noise(pad(piper_speech(QUESTION, RATE), RATE, 0.5, 3.0))
    listener, judge, host, _ = await _listen(clip, engine, pause_ms=120, lookahead_ms=0)
    ((end,),) = [listener.ends]
    ((at, _),) = host.turns
    assert engine.ran and judge.asked_at, engine.ran
    assert at - end > 1500, (end, at)  # held to the 2 s bound, not ended at the 120 ms pause
