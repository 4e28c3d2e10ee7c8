"""A responder backed by any OpenAI-compatible streaming ``/chat/completions`` endpoint.

Works with llama.cpp's ``llama-server``, Ollama, vLLM and the OpenAI API itself: the request asks
for ``stream: true`` and the reply arrives as Server-Sent Events, one ``data: {json}`` per token
or few, ended by ``data: [DONE]``. Each ``choices[0].delta.content`` is yielded as it arrives.

Time limits are kept with asyncio around each single wait (never across a ``yield``, so a limit
can never fire into the consumer's code): the first words must come within
``first_token_timeout_s`` of the request, the whole reply within ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx

from appliance.orchestrator.respond.base import Responder, ResponderError, Turn

log = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant. Your words are spoken aloud, so answer in one to three "
    "short sentences of plain conversational text, with no lists, markdown, code or emoji."
)
EXCERPT_CHARS = 200


class OpenAIResponder(Responder):
    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        timeout_s: float = 10.0,
        first_token_timeout_s: float = 5.0,
        max_history_turns: int = 8,
        temperature: float = 0.7,
        max_tokens: int = 200,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        # What messages and logs show: the URL without any user:password part.
        self.display_url = str(httpx.URL(self.url).copy_with(username=None, password=None))
        self.model = model
        self.system_prompt = system_prompt
        self.timeout_s = timeout_s
        self.first_token_timeout_s = first_token_timeout_s
        self.max_history_turns = max_history_turns
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._api_key = api_key or None
        self._client: httpx.AsyncClient | None = None

    def messages(self, text: str, history: list[Turn]) -> list[dict[str, str]]:
        """The chat messages for one request: system prompt, recent history, the new words."""
        recent = history[-self.max_history_turns :] if self.max_history_turns > 0 else []
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        turns = [{"role": t.role, "content": t.text} for t in recent]
        return [*system, *turns, {"role": "user", "content": text}]

    def request_body(self, text: str, history: list[Turn]) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": self.messages(text, history),
            "stream": True,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    async def respond(self, text: str, history: list[Turn]) -> AsyncIterator[str]:
        client = self._http()
        body = self.request_body(text, history)
        request = client.build_request("POST", self.url, json=body, headers=self._headers())
        loop = asyncio.get_running_loop()
        started = loop.time()
        got_token = False

        def time_left() -> float:
            limit = self.timeout_s if got_token else min(self.timeout_s, self.first_token_timeout_s)
            return started + limit - loop.time()

        log.debug("POST %s model=%s history=%d turns", self.display_url, self.model, len(history))
        try:
            async with asyncio.timeout(time_left()):
                response = await client.send(request, stream=True)
            try:
                if response.status_code >= 400:
                    raise await self._status_error(response)
                async with aclosing(_sse_data(response.aiter_lines())) as events:
                    seen_event = False
                    while True:
                        async with asyncio.timeout(time_left()):
                            data = await anext(events, None)
                        if data is None and not seen_event:
                            message = f"LLM endpoint {self.display_url} sent no stream events"
                            raise self._error("responder_bad_response", message)
                        if data is None or data.strip() == "[DONE]":
                            return
                        seen_event = True
                        content, finish_reason = self._parse_chunk(data)
                        if content:
                            got_token = True
                            yield content
                        if finish_reason:
                            if finish_reason == "length":
                                log.info("reply cut at max_tokens=%d", self.max_tokens)
                            return
            finally:
                await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            if got_token:
                message = f"the reply from {self.display_url} took longer than {self.timeout_s:g} s"
            else:
                limit = min(self.timeout_s, self.first_token_timeout_s)
                message = f"LLM endpoint {self.display_url} sent no reply within {limit:g} s"
            raise self._error("responder_timeout", message) from None
        except httpx.ConnectError as exc:
            message = f"LLM endpoint {self.display_url} is unreachable: {_describe(exc)}"
            raise self._error("responder_unavailable", message) from None
        except httpx.HTTPError as exc:
            message = f"request to LLM endpoint {self.display_url} failed: {_describe(exc)}"
            raise self._error("responder_unavailable", message) from None

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s))
        return self._client

    def _parse_chunk(self, data: str) -> tuple[str, str | None]:
        """(text, finish_reason) of one streamed chunk; ("", None) for chunks without a choice."""
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            message = f"LLM endpoint sent malformed JSON: {_excerpt(data)!r}"
            raise self._error("responder_bad_response", message) from None
        if isinstance(chunk, dict) and "error" in chunk:
            message = f"LLM endpoint {self.display_url} failed mid-reply: {_excerpt(_error_text(chunk))}"
            raise self._error("responder_unavailable", message)
        try:
            choices = chunk["choices"]
            if not choices:  # e.g. a closing usage-only chunk
                return "", None
            choice = choices[0]
            content = (choice.get("delta") or {}).get("content") or ""
            finish_reason = choice.get("finish_reason")
            if not isinstance(content, str):
                raise TypeError("content is not text")
        except (KeyError, IndexError, TypeError, AttributeError):
            message = f"LLM endpoint sent an unexpected chunk: {_excerpt(data)!r}"
            raise self._error("responder_bad_response", message) from None
        return content, finish_reason

    async def _status_error(self, response: httpx.Response) -> ResponderError:
        try:
            async with asyncio.timeout(1.0):
                raw = await response.aread()
            detail = raw.decode("utf-8", "replace")
            try:
                detail = _error_text(json.loads(detail))
            except ValueError:
                pass
        except (TimeoutError, httpx.HTTPError):
            detail = ""
        detail = _excerpt(detail) or "(no body)"
        message = f"LLM endpoint {self.display_url} returned HTTP {response.status_code}: {detail}"
        return self._error("responder_unavailable", message)

    def _error(self, code: str, message: str) -> ResponderError:
        if self._api_key:  # a proxy or server may echo the request back; never pass the key on
            message = message.replace(self._api_key, "***")
        return ResponderError(code, message)


async def _sse_data(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The value of each ``data:`` line of a Server-Sent Events stream. Chat-completion servers put
    one JSON object on one line per event, so each line stands alone (this also copes with servers
    that leave out the blank line between events). Comments (``: keep-alive``) and the ``event:``,
    ``id:`` and ``retry:`` fields carry nothing needed here."""
    async for line in lines:
        if line.startswith("data:"):
            value = line[5:]
            yield value.removeprefix(" ")


def _error_text(payload: Any) -> str:
    """The message of an OpenAI-style error object ({"error": {"message": …}}), else the payload."""
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(error, dict) and "message" in error:
        return str(error["message"])
    return error if isinstance(error, str) else json.dumps(error)


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
