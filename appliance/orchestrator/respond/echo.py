"""The default responder: a deterministic reply built from the transcript; needs nothing else."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from appliance.orchestrator.respond.base import Responder, Turn


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
