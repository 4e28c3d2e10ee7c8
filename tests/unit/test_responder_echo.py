"""The echo responder and the responder factory (no network)."""

from __future__ import annotations

import pytest

from appliance.orchestrator.respond import EchoResponder, Responder, Turn, create_responder
from appliance.orchestrator.respond.openai import DEFAULT_SYSTEM_PROMPT, OpenAIResponder


async def collect(responder: Responder, text: str, history: list[Turn] | None = None) -> list[str]:
    return [piece async for piece in responder.respond(text, history or [])]


async def test_echo_repeats_the_transcript_in_pieces():
    pieces = await collect(EchoResponder(), "what time is it")
    assert "".join(pieces) == "You said: what time is it."
    assert len(pieces) > 1 and all(pieces)


async def test_echo_is_deterministic_and_ignores_history():
    history = [Turn("user", "hello"), Turn("assistant", "You said: hello.")]
    first = await collect(EchoResponder(), "  turn   on the\tlights ")
    second = await collect(EchoResponder(), "turn on the lights", history)
    assert first == second
    assert "".join(first) == "You said: turn on the lights."


async def test_echo_keeps_the_speakers_own_end_punctuation():
    assert "".join(await collect(EchoResponder(), "is it raining?")) == "You said: is it raining?"


@pytest.mark.parametrize("heard", ["", "   ", "\n", "...", " - "])
async def test_echo_says_it_did_not_catch_an_empty_transcript(heard):
    reply = "".join(await collect(EchoResponder(), heard))
    assert reply == EchoResponder.NOTHING_HEARD
    assert "catch" in reply


async def test_create_responder_echo_is_the_default_kind_and_ignores_settings():
    responder = create_responder("echo", url=None, model="local", timeout_s=20.0)
    async with responder:
        assert isinstance(responder, EchoResponder) and responder.name == "echo"
    assert isinstance(create_responder(" Echo "), EchoResponder)


def test_create_responder_unknown_kind_names_the_valid_ones():
    with pytest.raises(ValueError) as err:
        create_responder("gpt")
    assert "'gpt'" in str(err.value) and "echo" in str(err.value) and "openai" in str(err.value)


def test_create_responder_openai_needs_a_url():
    with pytest.raises(ValueError, match="base_url"):
        create_responder("openai", model="local")
    with pytest.raises(ValueError, match="http"):
        create_responder("openai", base_url="127.0.0.1:8081/v1", model="local")


def test_create_responder_openai_rejects_unknown_settings():
    with pytest.raises(ValueError, match="bad settings"):
        create_responder("openai", base_url="http://127.0.0.1:8081/v1", model="m", colour="blue")


def test_create_responder_openai_takes_the_config_section_as_is():
    """The orchestrator's [responder] section says `url` and leaves unset values None."""
    responder = create_responder(
        "openai",
        url="http://127.0.0.1:8081/v1/",
        model="local",
        api_key=None,
        system_prompt=None,
        timeout_s=20.0,
        first_token_timeout_s=8.0,
    )
    assert isinstance(responder, OpenAIResponder)
    assert responder.url == "http://127.0.0.1:8081/v1/chat/completions"
    assert responder.system_prompt == DEFAULT_SYSTEM_PROMPT
    assert (responder.timeout_s, responder.first_token_timeout_s) == (20.0, 8.0)


def test_openai_messages_trim_history_to_the_newest_turns():
    responder = OpenAIResponder("http://127.0.0.1:1/v1", "m", system_prompt="Be brief.", max_history_turns=2)
    history = [Turn("user", "one"), Turn("assistant", "two"), Turn("user", "three"), Turn("assistant", "4")]
    assert responder.messages("five", history) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "three"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "five"},
    ]
    responder.max_history_turns = 0
    assert [m["content"] for m in responder.messages("five", history)] == ["Be brief.", "five"]


def test_openai_url_shown_in_messages_hides_credentials():
    responder = OpenAIResponder("https://user:hunter2@llm.example/v1", "m")
    assert "hunter2" not in responder.display_url
    assert responder.display_url == "https://llm.example/v1/chat/completions"
