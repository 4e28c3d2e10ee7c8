"""The responder: turns the user's transcribed words into the assistant's reply text.

A responder streams its reply as text pieces (tokens or fragments) through an async generator,
so speech can start on the first sentence while the rest is still being written; the caller does
the sentence splitting. Two kinds exist:

- ``echo`` (the default): a deterministic reply built from the transcript; needs nothing else.
- ``openai``: any OpenAI-compatible ``/chat/completions`` endpoint that streams (llama.cpp's
  server, Ollama, vLLM, …), see :mod:`appliance.orchestrator.openai_responder`.

Barge-in cancels the task that consumes ``respond()``. Consume it inside
``contextlib.aclosing(...)`` so the generator (and any HTTP stream under it) is closed at once
even when the cancel lands while the consumer is busy elsewhere, not only while it waits for the
next piece.
"""

from __future__ import annotations

import asyncio
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

RESPONDER_KINDS = ("echo", "openai")


@dataclass
class Turn:
    """One earlier turn of the conversation."""

    role: Literal["user", "assistant"]
    text: str


class ResponderError(Exception):
    """A reply could not be produced. ``code`` is stable and goes to the client as is:
    ``responder_unavailable``, ``responder_timeout`` or ``responder_bad_response``.
    The message is for people; it never holds a secret."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Responder(ABC):
    name: str = "responder"

    @abstractmethod
    def respond(self, text: str, history: list[Turn]) -> AsyncIterator[str]:
        """Stream the reply to ``text`` (the user's newest words) given the earlier ``history``
        (oldest first, without ``text`` itself). Implementations are async generators; they raise
        :class:`ResponderError` on failure."""

    async def close(self) -> None:
        """Release connections; the responder is not used afterwards."""

    async def __aenter__(self) -> Responder:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class EchoResponder(Responder):
    """Repeats the transcript back: ``what time is it`` → ``You said: what time is it.``"""

    name = "echo"
    NOTHING_HEARD = "Sorry, I didn't catch that."

    @staticmethod
    def reply_for(text: str) -> str:
        words = " ".join(text.split())
        if not words.strip(".,;:!?-… "):
            return EchoResponder.NOTHING_HEARD
        if not re.search(r"[.!?…]$", words):
            words += "."
        return f"You said: {words}"

    async def respond(self, text: str, history: list[Turn]) -> AsyncIterator[str]:
        reply = self.reply_for(text)
        # A few pieces rather than one, like a real model streams: "You said:", " what", " time", …
        for piece in re.findall(r"\s*\S+", reply):
            yield piece
            await asyncio.sleep(0)


def create_responder(kind: str, **settings: Any) -> Responder:
    """Build a responder by kind. Settings that are ``None`` are left at their defaults, and
    ``url`` is accepted for ``base_url``, so the orchestrator's ``[responder]`` section can be
    passed as it is. ``echo`` takes no settings and ignores any given."""
    kind = kind.strip().lower()
    if kind == "echo":
        return EchoResponder()
    if kind == "openai":
        from appliance.orchestrator.openai_responder import OpenAIResponder

        given = {k: v for k, v in settings.items() if v is not None}
        if "url" in given:
            given.setdefault("base_url", given.pop("url"))
        missing = [k for k in ("base_url", "model") if not given.get(k)]
        if missing:
            needs = " and ".join(missing)
            raise ValueError(f"responder 'openai' needs {needs} (e.g. base_url='http://127.0.0.1:8081/v1')")
        try:
            return OpenAIResponder(**given)
        except TypeError as exc:
            raise ValueError(f"bad settings for responder 'openai': {exc}") from None
    raise ValueError(f"unknown responder kind {kind!r}; valid kinds: {', '.join(RESPONDER_KINDS)}")
