"""A model that writes markdown is heard as words: the reply, from an OpenAI-compatible server that
streams markdown and emoji in small pieces, reaches the page and the real Piper worker without the
marks (Piper would read "**four**" as "asterisk asterisk four asterisk asterisk")."""

from __future__ import annotations

import json
import socket

import pytest
from aiohttp import web
from speech import listen, wer

from appliance.transport.ws_client import WsClient

# Split where a cleaner that looked only at whole pieces would go wrong: inside "**", before "#".
PIECES = [
    "## Boil",
    "ing an egg\n",
    "- Put the egg in *",
    "*boiling** water 🥚",
    ".\n",
    "-",
    " Wait `seven` minutes! 😀",
]
SAID = "Boiling an egg. Put the egg in boiling water. Wait seven minutes!"  # as heard


def _chunk(delta: dict, finish: str | None = None) -> bytes:
    body = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n".encode()


async def _markdown_reply(request: web.Request) -> web.StreamResponse:
    await request.json()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(_chunk({"role": "assistant", "content": None}))
    for piece in PIECES:
        await response.write(_chunk({"content": piece}))
    await response.write(_chunk({}, finish="stop") + b"data: [DONE]\n\n")
    return response


@pytest.fixture
async def markdown_llm():
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _markdown_reply)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    await runner.cleanup()


async def test_markdown_and_emoji_are_neither_shown_nor_said(start_orchestrator, piper_worker, markdown_llm):
    orch = await start_orchestrator(
        workers=[piper_worker.address], responder={"kind": "openai", "url": markdown_llm, "model": "m"}
    )
    client = WsClient(f"ws://127.0.0.1:{orch.port}/ws")
    await client.connect(16000)
    try:
        await client.send_json({"type": "text", "text": "How do I boil an egg?"})
        await client.wait_for(lambda: client.rx.of_type("metrics"), 60)
        replies = [e["text"] for e in client.rx.of_type("reply")]
        # one sentence per line of the model's text, none of its marks
        assert replies == ["Boiling an egg", "Put the egg in boiling water.", "Wait seven minutes!"], replies
        heard = listen(client.rx.audio(), 48000, SAID).lower()
        assert "asterisk" not in heard and "hash" not in heard and "face" not in heard, heard
        assert wer(SAID, heard) <= 0.25, heard
        conv = next(iter(orch.conversations.values()))
        assert "*" not in conv.replier.history[-1].text
    finally:
        await client.close()
