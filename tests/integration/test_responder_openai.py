"""The OpenAI-compatible responder against a real streaming HTTP server on loopback.

The server below speaks the same wire format as llama.cpp's server, Ollama and vLLM: a POST to
/v1/chat/completions with stream=true is answered with Server-Sent Events, a role-only delta
first, then content deltas a few milliseconds apart, a finish_reason, and `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from contextlib import aclosing

import pytest
from aiohttp import web

from appliance.orchestrator.respond import ResponderError, Turn, create_responder
from appliance.orchestrator.respond.openai import OpenAIResponder

SECRET = "sk-test-0123456789abcdef-secret"
TOKENS = ["The", " time", " is", " half", " past", " four", "."]
BOUNDED = 5.0  # seconds; a bound on waits that should end long before it, never a measurement


def chunk(delta: dict, finish_reason: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "test-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


class FakeLLM:
    """A scripted OpenAI-compatible server; `behaviour` picks how the next requests are answered."""

    def __init__(self) -> None:
        self.behaviour = "stream"
        self.requests: list[dict] = []  # {"headers": …, "body": …} per request received
        self.proceed = asyncio.Event()  # "stream_gated" waits for it after the first content token
        self.sent_all = False
        self.disconnected = asyncio.Event()
        self.disconnect_seen_as: str | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        # handler_cancellation: a client hanging up cancels the handler, as it would a real server's work.
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append({"headers": dict(request.headers), "body": await request.json()})
        if self.behaviour == "error500":
            # Some servers and proxies echo the request back; the responder must not pass the key on.
            detail = f"model failed to load (request auth: {request.headers.get('Authorization')})"
            return web.json_response({"error": {"message": detail, "code": 500}}, status=500)
        if self.behaviour == "not_streaming":  # a server that ignores stream=true
            message = {"role": "assistant", "content": "The time is half past four."}
            return web.json_response({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await response.write(b": keep-alive\n\n")
            await response.write(chunk({"role": "assistant", "content": None}))
            if self.behaviour == "garbage":
                await response.write(b'data: {"choices": [{"delta": {"content": "Hel\n\n')
            elif self.behaviour == "error_event":  # vLLM and llama.cpp report mid-stream failures so
                await response.write(chunk({"content": TOKENS[0]}))
                await response.write(b'data: {"error": {"message": "KV cache exhausted", "code": 500}}\n\n')
            elif self.behaviour == "silent":  # accepts, then never says a word
                await asyncio.sleep(BOUNDED * 2)
            elif self.behaviour == "trickle":  # words keep coming, but never end
                while True:
                    await response.write(chunk({"content": " la"}))
                    await asyncio.sleep(0.05)
            elif self.behaviour == "hang_after_first":
                await response.write(chunk({"content": TOKENS[0]}))
                await asyncio.sleep(BOUNDED * 2)
            else:
                await self._stream_tokens(response, gated=self.behaviour == "stream_gated")
            return response
        except (asyncio.CancelledError, ConnectionResetError) as exc:
            self.disconnect_seen_as = type(exc).__name__
            self.disconnected.set()
            raise

    async def _stream_tokens(self, response: web.StreamResponse, gated: bool) -> None:
        for i, token in enumerate(TOKENS):
            await response.write(chunk({"content": token}))
            if i == 0 and gated:
                await asyncio.wait_for(self.proceed.wait(), BOUNDED)
            await asyncio.sleep(0.005)
        await response.write(chunk({"content": ""}))  # empty deltas happen; they are skipped
        await response.write(chunk({}, finish_reason="stop"))
        await response.write(b"data: [DONE]\n\n")
        self.sent_all = True


@pytest.fixture
async def llm():
    server = FakeLLM()
    await server.start()
    yield server
    await server.stop()


async def reply_of(
    responder: OpenAIResponder, text: str = "what time is it", history: list[Turn] | None = None
) -> str:
    async with aclosing(responder.respond(text, history or [])) as pieces:
        return "".join([piece async for piece in pieces])


async def expect_error(responder: OpenAIResponder, code: str) -> ResponderError:
    with pytest.raises(ResponderError) as err:
        await asyncio.wait_for(reply_of(responder), BOUNDED)
    assert err.value.code == code, err.value
    assert SECRET not in str(err.value) and SECRET not in repr(err.value)
    return err.value


async def test_pieces_arrive_while_the_server_is_still_writing(llm):
    llm.behaviour = "stream_gated"
    pieces: list[str] = []
    async with (
        OpenAIResponder(llm.base_url, "test-model") as responder,
        aclosing(responder.respond("what time is it", [])) as stream,
    ):
        async for piece in stream:
            if not pieces:
                assert not llm.sent_all, "the first piece should come before the server has finished"
                llm.proceed.set()
            pieces.append(piece)
    assert pieces == TOKENS
    assert "".join(pieces) == "The time is half past four."
    assert llm.sent_all


async def test_request_carries_model_history_system_prompt_and_stream(llm):
    history = [
        Turn("user", "hello"),
        Turn("assistant", "Hi there."),
        Turn("user", "I'm Sam"),
        Turn("assistant", "Hi Sam."),
    ]
    responder = OpenAIResponder(
        llm.base_url + "/",
        "test-model",
        system_prompt="Be brief.",
        max_history_turns=3,
        temperature=0.2,
        max_tokens=64,
    )
    async with responder:
        assert await reply_of(responder, "what time is it", history) == "The time is half past four."
    body = llm.requests[0]["body"]
    assert body["model"] == "test-model"
    assert body["stream"] is True
    assert (body["temperature"], body["max_tokens"]) == (0.2, 64)
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "content": "Hi there."},
        {"role": "user", "content": "I'm Sam"},
        {"role": "assistant", "content": "Hi Sam."},
        {"role": "user", "content": "what time is it"},
    ]


async def test_authorization_is_sent_only_with_a_key(llm, caplog):
    caplog.set_level(logging.DEBUG)
    async with OpenAIResponder(llm.base_url, "test-model") as anonymous:
        await reply_of(anonymous)
    async with create_responder("openai", url=llm.base_url, model="test-model", api_key=SECRET) as keyed:
        await reply_of(keyed)
    assert "Authorization" not in llm.requests[0]["headers"]
    assert llm.requests[1]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in caplog.text


async def test_http_500_is_unavailable_with_the_status_and_no_key(llm):
    llm.behaviour = "error500"
    async with OpenAIResponder(llm.base_url, "test-model", api_key=SECRET) as responder:
        err = await expect_error(responder, "responder_unavailable")
    assert "500" in err.message and "model failed to load" in err.message
    assert llm.base_url in err.message


async def test_nothing_listening_is_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with OpenAIResponder(f"http://127.0.0.1:{port}/v1", "test-model", api_key=SECRET) as responder:
        err = await expect_error(responder, "responder_unavailable")
    assert f"http://127.0.0.1:{port}/v1" in err.message and "unreachable" in err.message


async def test_no_first_token_is_a_timeout_and_the_connection_is_dropped(llm):
    llm.behaviour = "silent"
    responder = OpenAIResponder(llm.base_url, "test-model", api_key=SECRET, first_token_timeout_s=0.3)
    async with responder:
        err = await expect_error(responder, "responder_timeout")
    assert "0.3 s" in err.message
    await asyncio.wait_for(llm.disconnected.wait(), BOUNDED)


async def test_a_reply_that_never_ends_is_a_timeout(llm):
    llm.behaviour = "trickle"
    responder = OpenAIResponder(
        llm.base_url,
        "test-model",
        api_key=SECRET,
        timeout_s=1.0,
        first_token_timeout_s=1.0,
    )
    async with responder:
        err = await expect_error(responder, "responder_timeout")
    assert "longer than 1 s" in err.message
    await asyncio.wait_for(llm.disconnected.wait(), BOUNDED)


async def test_malformed_json_is_a_bad_response(llm):
    llm.behaviour = "garbage"
    async with OpenAIResponder(llm.base_url, "test-model", api_key=SECRET) as responder:
        err = await expect_error(responder, "responder_bad_response")
    assert "malformed JSON" in err.message


async def test_a_server_that_does_not_stream_is_a_bad_response(llm):
    llm.behaviour = "not_streaming"
    async with OpenAIResponder(llm.base_url, "test-model") as responder:
        err = await expect_error(responder, "responder_bad_response")
    assert "no stream events" in err.message


async def test_an_error_event_mid_stream_is_unavailable(llm):
    llm.behaviour = "error_event"
    async with OpenAIResponder(llm.base_url, "test-model") as responder:
        err = await expect_error(responder, "responder_unavailable")
    assert "KV cache exhausted" in err.message


async def test_cancelling_while_waiting_for_a_piece_closes_the_connection(llm):
    llm.behaviour = "hang_after_first"
    got_first = asyncio.Event()

    async def consume(responder: OpenAIResponder) -> None:
        async for _ in responder.respond("tell me a long story", []):
            got_first.set()

    patient = OpenAIResponder(llm.base_url, "test-model", timeout_s=60, first_token_timeout_s=60)
    async with patient as responder:
        task = asyncio.create_task(consume(responder))
        await asyncio.wait_for(got_first.wait(), BOUNDED)
        task.cancel()  # barge-in
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(llm.disconnected.wait(), BOUNDED)
    assert llm.disconnect_seen_as in ("CancelledError", "ConnectionResetError")


async def test_cancelling_while_the_consumer_is_busy_closes_the_connection(llm):
    """The cancel lands in the consumer's own await (say, while it speaks a sentence), not in the
    responder; aclosing() closes the stream all the same."""
    llm.behaviour = "hang_after_first"
    busy = asyncio.Event()

    async def consume(responder: OpenAIResponder) -> None:
        async with aclosing(responder.respond("tell me a long story", [])) as pieces:
            async for _ in pieces:
                busy.set()
                await asyncio.Event().wait()  # speaking, until barge-in

    patient = OpenAIResponder(llm.base_url, "test-model", timeout_s=60, first_token_timeout_s=60)
    async with patient as responder:
        task = asyncio.create_task(consume(responder))
        await asyncio.wait_for(busy.wait(), BOUNDED)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(llm.disconnected.wait(), BOUNDED)


async def test_the_responder_is_reusable_after_an_error(llm):
    async with OpenAIResponder(llm.base_url, "test-model", first_token_timeout_s=0.3) as responder:
        llm.behaviour = "silent"
        await expect_error(responder, "responder_timeout")
        llm.behaviour = "stream"
        assert await reply_of(responder) == "The time is half past four."
