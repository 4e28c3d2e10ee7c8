"""The embedded responder: a local GGUF model through llama.cpp in this process (:mod:`.llama`).

One :class:`~appliance.orchestrator.respond.llama.LlamaEngine` (the loaded model) is shared; each
session gets its own :class:`EmbeddedResponder`, which turns the session's history into a prompt
(:mod:`.memory`) and streams the reply. Time limits are kept around each single wait, never across
a ``yield`` (as in the OpenAI responder): the first words within ``first_token_timeout_s``, the
whole reply within ``timeout_s``; a stalled generation ends as ``responder_timeout`` and is stopped.
A prompt that overflows the context is sent again with the history trimmed to what the runtime
says fits, then with no history at all — never a crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing

from appliance.orchestrator.respond.base import Responder, ResponderError, Turn
from appliance.orchestrator.respond.llama import Chunk, ContextOverflow, Generation, LlamaEngine
from appliance.orchestrator.respond.memory import SPOKEN_SYSTEM_PROMPT, ChatMemory

log = logging.getLogger(__name__)


class EmbeddedResponder(Responder):
    name = "embedded"

    def __init__(
        self,
        engine: LlamaEngine,
        *,
        system_prompt: str | None = None,
        history_tokens: int | None = None,
        max_tokens: int = 120,
        temperature: float = 0.3,
        timeout_s: float = 20.0,
        first_token_timeout_s: float = 8.0,
    ) -> None:
        self.engine = engine
        context = engine.settings.context_tokens
        budget = history_tokens if history_tokens else context - max_tokens
        self.memory = ChatMemory(
            SPOKEN_SYSTEM_PROMPT if system_prompt is None else system_prompt,
            min(budget, context - max_tokens),
        )
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.timeout_s = timeout_s
        self.first_token_timeout_s = first_token_timeout_s
        self.last: Generation | None = None  # the latest generation's counters (tests, the bench)
        self.last_timings: dict = {}
        self.produced = ""  # the latest reply as far as it was written
        self.overflows = 0  # prompts the runtime found too long (then sent again, trimmed)

    def request(self, messages: list[dict[str, str]]) -> dict:
        return {"messages": messages, "max_tokens": self.max_tokens, "temperature": self.temperature}

    async def respond(self, text: str, history: list[Turn]) -> AsyncIterator[str]:
        self.produced = ""
        budget = self.memory.budget_tokens
        for attempt in range(3):
            messages = self.memory.messages(text, history, budget if attempt < 2 else 0)
            try:
                async with aclosing(self._stream(messages)) as pieces:
                    async for piece in pieces:
                        self.produced += piece
                        yield piece
                return
            except ContextOverflow as exc:
                self.overflows += 1
                fits = self.engine.settings.context_tokens - self.max_tokens
                if attempt == 0 and exc.prompt_tokens > 0:  # scale the estimate by the runtime's own count
                    budget = int(min(budget, fits) * fits / exc.prompt_tokens * 0.9)
                else:
                    budget = min(budget, fits) // 2 if attempt == 0 else 0
                log.info("prompt overflowed the context (%s); trimming the history to %d tokens", exc, budget)
        raise ResponderError("responder_bad_response", "the question alone does not fit the model's context")

    async def _stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        got_token = False
        gen = self.last = Generation()

        def time_left() -> float:
            limit = self.timeout_s if got_token else min(self.timeout_s, self.first_token_timeout_s)
            return started + limit - loop.time()

        async with aclosing(self.engine.generate(self.request(messages), gen)) as chunks:
            while True:
                try:
                    async with asyncio.timeout(time_left()):
                        chunk: Chunk | None = await anext(chunks, None)
                except TimeoutError:
                    gen.stop.set()
                    if got_token:
                        message = f"the local model's reply took longer than {self.timeout_s:g} s"
                    else:
                        limit = min(self.timeout_s, self.first_token_timeout_s)
                        message = f"the local model sent no reply within {limit:g} s"
                    raise ResponderError("responder_timeout", message) from None
                if chunk is None:
                    return
                if chunk.timings:
                    self.last_timings = chunk.timings
                if chunk.text:
                    got_token = True
                    yield chunk.text
                if chunk.finish_reason == "length":
                    log.info("reply cut at max_tokens=%d", self.max_tokens)


def engine_for(settings) -> LlamaEngine:
    """The (not yet loaded) engine for an orchestrator's ``[responder]`` section; raises
    :class:`~appliance.orchestrator.respond.llm_files.LlmNotInstalled` naming the fetch command."""
    from appliance.orchestrator.respond.llama import EngineSettings
    from appliance.orchestrator.respond.llm_files import DEFAULT_LLM, fetch_command, locate_llm

    model = DEFAULT_LLM if settings.model in ("", "local") else settings.model
    path = locate_llm(model, settings.models_dir)
    hint = (
        fetch_command(model, settings.models_dir) if not model.endswith(".gguf") else f"a good copy of {path}"
    )
    return LlamaEngine(
        EngineSettings(
            model_path=path,
            context_tokens=settings.context_tokens,
            parallel=settings.parallel,
            max_waiting=settings.max_waiting,
            n_gpu_layers=settings.n_gpu_layers,
            threads=settings.threads,
            fetch_hint=hint,
        )
    )
