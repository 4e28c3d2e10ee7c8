"""What a local model is told each turn: a spoken-style system prompt, then as much of the
conversation as fits a token budget, newest turns kept.

The budget is counted with an estimate (characters / ``CHARS_PER_TOKEN``, plus a few tokens of
chat-template framing per message) because the runtime offers no tokenizer call; an estimate that
is short is caught by the runtime (the request overflows the context), and the responder then
trims by the runtime's own count (:meth:`ChatMemory.messages` with a smaller budget).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from appliance.orchestrator.respond.base import Turn

SPOKEN_SYSTEM_PROMPT = (
    "You are a friendly voice assistant. What you write is spoken aloud, so answer in one to three "
    "short sentences of plain conversational English. Never use lists, markdown, headings, code or emoji."
)
CHARS_PER_TOKEN = 3.0  # English prose runs near 4; 3 errs on the side of sending less
FRAME_TOKENS = 6  # role markers and separators a chat template adds per message


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN) + FRAME_TOKENS


class ChatMemory:
    """Builds the chat messages for one request from a session's history.

    ``budget_tokens`` bounds the prompt (system prompt + history + the new words); the reply's
    ``reserve_tokens`` come on top and must fit the context too."""

    def __init__(self, system_prompt: str = SPOKEN_SYSTEM_PROMPT, budget_tokens: int = 1024) -> None:
        self.system_prompt = system_prompt
        self.budget_tokens = budget_tokens

    def messages(
        self, text: str, history: Sequence[Turn], budget_tokens: int | None = None
    ) -> list[dict[str, str]]:
        """System prompt, the newest turns of ``history`` that fit, and ``text``. The new words
        are always sent (cut to the budget if they alone exceed it); a turn is dropped whole."""
        budget = self.budget_tokens if budget_tokens is None else budget_tokens
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        used = sum(estimate_tokens(m["content"]) for m in system)
        newest = {"role": "user", "content": _cut(text, budget - used)}
        used += estimate_tokens(newest["content"])
        kept: list[dict[str, str]] = []
        for turn in reversed(history):
            cost = estimate_tokens(turn.text)
            if used + cost > budget:
                break
            kept.append({"role": turn.role, "content": turn.text})
            used += cost
        kept.reverse()
        while kept and kept[0]["role"] != "user":  # templates want the history to open with the user
            kept.pop(0)
        return [*system, *kept, newest]


def _cut(text: str, budget: int) -> str:
    limit = max(1, int((budget - FRAME_TOKENS) * CHARS_PER_TOKEN))
    return text if len(text) <= limit else text[-limit:]  # the end of a long turn is what was asked
