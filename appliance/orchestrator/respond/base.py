"""The responder interface: turns the user's transcribed words into the assistant's reply text.

A responder streams its reply as text pieces (tokens or fragments) through an async generator,
so speech can start on the first sentence while the rest is still being written; the caller does
the sentence splitting. Two kinds exist:

- ``echo`` (the default): a deterministic reply built from the transcript; needs nothing else.
- ``openai``: any OpenAI-compatible ``/chat/completions`` endpoint that streams (llama.cpp's
  server, Ollama, vLLM, …), see :mod:`appliance.orchestrator.respond.openai`.

Barge-in cancels the task that consumes ``respond()``. Consume it inside
``contextlib.aclosing(...)`` so the generator (and any HTTP stream under it) is closed at once
even when the cancel lands while the consumer is busy elsewhere, not only while it waits for the
next piece.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Self


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

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
