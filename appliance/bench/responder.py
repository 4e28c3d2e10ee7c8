"""`appliance bench responder`: the embedded LLM as a session sees it, against the raw runtime.

For each prompt, the same chat messages go (a) through the embedded responder and the session's
sentence rule, timing the first token and the first complete sentence, and (b) straight to the
runtime (``xllamacpp.Server.handle_chat_completions`` on a thread, one timestamp per streamed
chunk), timing its first token and the time it took to produce as many tokens as (a) needed for
its first sentence; llama.cpp's own timings (prompt and generation speed) come with both. Greedy
sampling makes (a) and (b) write the same tokens. Then cancel latency: a reply is closed after a
few tokens, as a barge-in does, and the time until the runtime's thread returns is measured,
with the chunks it produced after the stop (dropped, never delivered). JSON out; p50/p95.
"""

from __future__ import annotations

import asyncio
import os
import platform
import threading
import time
from contextlib import aclosing

from appliance.bench.stats import summary as _stats
from appliance.config import ResponderSettings
from appliance.orchestrator.respond import create_responder
from appliance.orchestrator.respond.embedded import engine_for
from appliance.orchestrator.respond.llama import default_threads
from appliance.sentences import split_sentences

PROMPTS = [
    "What is the capital of France?",
    "How do I boil an egg?",
    "Tell me a fun fact about octopuses.",
    "What should I cook for dinner tonight?",
    "Why is the sky blue?",
    "How far away is the moon?",
    "Can you recommend a good book?",
    "What is the best way to learn to swim?",
    "How many legs does a spider have?",
    "What is the weather usually like in London?",
    "Give me a tip for sleeping better.",
    "What is a good name for a cat?",
    "How do plants make food?",
    "What does a bee do all day?",
    "Why do leaves change colour in autumn?",
    "How do I make a cup of tea?",
    "What is the tallest mountain?",
    "Tell me something about the ocean.",
    "How can I stay calm before an exam?",
    "What is your favourite season?",
    "How do airplanes stay in the air?",
    "What is a healthy breakfast?",
]
CANCEL_PROMPT = "Tell me a long story about a dragon who lived in a lighthouse."


async def _through_responder(responder, prompt: str) -> dict:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    first_token = first_sentence = None
    tokens = tokens_at_sentence = 0
    pending = ""
    async with aclosing(responder.respond(prompt, [])) as pieces:
        async for piece in pieces:
            tokens += 1
            if first_token is None:
                first_token = loop.time() - t0
            done, pending = split_sentences(pending + piece)
            if done and first_sentence is None:
                first_sentence, tokens_at_sentence = loop.time() - t0, tokens
    total = loop.time() - t0
    if first_sentence is None:  # one sentence, ended by the end of the reply
        first_sentence, tokens_at_sentence = total, tokens
    timings = responder.last_timings
    return {
        "first_token_ms": first_token * 1000,
        "first_sentence_ms": first_sentence * 1000,
        "tokens_at_first_sentence": tokens_at_sentence,
        "tokens": tokens,
        "total_ms": total * 1000,
        "runtime_tokens_per_s": timings.get("predicted_per_second"),
        "text": responder.produced,
    }


def _raw(server, request: dict) -> list[float]:
    """Seconds from the call to each streamed chunk with text, straight from the runtime."""
    stamps: list[float] = []
    timings: dict = {}
    t0 = time.perf_counter()

    def on_chunk(chunk) -> bool:
        choices = chunk.get("choices") or [] if isinstance(chunk, dict) else []
        if choices and (choices[0].get("delta") or {}).get("content"):
            stamps.append(time.perf_counter() - t0)
        if isinstance(chunk, dict) and chunk.get("timings"):
            timings.update(chunk["timings"])
        return False

    server.handle_chat_completions({**request, "stream": True}, on_chunk)
    return stamps, timings


async def _cancel_trial(responder, after_tokens: int) -> dict:
    got = 0
    async with aclosing(responder.respond(CANCEL_PROMPT, [])) as pieces:
        async for _ in pieces:
            got += 1
            if got >= after_tokens:
                produced_at_stop = responder.produced
                break
    t_stop = time.perf_counter()
    gen = responder.last
    await asyncio.to_thread(gen.done.wait, 30)
    return {
        "runtime_stop_ms": (time.perf_counter() - t_stop) * 1000,
        "chunks_after_stop": gen.chunks_after_stop,
        "tokens_delivered_after_stop": len(responder.produced) - len(produced_at_stop),
    }


async def run_bench(
    prompts: int = 20,
    model: str = "local",
    threads: int = 0,
    n_gpu_layers: int = 0,
    max_tokens: int = 60,
    cancel_trials: int = 20,
    context_tokens: int = 2048,
) -> dict:
    settings = ResponderSettings(
        kind="embedded",
        model=model,
        threads=threads,
        n_gpu_layers=n_gpu_layers,
        max_tokens=max_tokens,
        temperature=0.0,
        context_tokens=context_tokens,
        parallel=1,
        max_waiting=0,
        timeout_s=600,
        first_token_timeout_s=600,
    )
    engine = engine_for(settings)
    t0 = time.perf_counter()
    await engine.load_async()
    load_s = time.perf_counter() - t0
    responder = create_responder(**settings.model_dump(), engine=engine)
    rows = []
    try:
        questions = (PROMPTS * (prompts // len(PROMPTS) + 1))[:prompts]
        await _through_responder(responder, "Hello.")  # warm-up (first-call allocations), not counted
        prime = responder.request(responder.memory.messages("Hi.", []))
        prime["max_tokens"] = 1
        for prompt in questions:
            # Each side starts from the same cache: the system prompt only (llama.cpp reuses a
            # prompt's common prefix, so without this the second side would find the whole prompt).
            await asyncio.to_thread(_raw, engine._server, prime)
            ours = await _through_responder(responder, prompt)
            request = responder.request(responder.memory.messages(prompt, []))
            await asyncio.to_thread(_raw, engine._server, prime)
            stamps, timings = await asyncio.to_thread(_raw, engine._server, request)
            k = min(ours["tokens_at_first_sentence"], len(stamps)) or 1
            raw_first = stamps[0] * 1000 if stamps else None
            raw_k = stamps[k - 1] * 1000 if stamps else None
            rows.append(
                {
                    **ours,
                    "prompt": prompt,
                    "raw_first_token_ms": raw_first,
                    "raw_ms_to_same_tokens": raw_k,
                    "raw_tokens": len(stamps),
                    "raw_runtime_tokens_per_s": timings.get("predicted_per_second"),
                    "raw_prompt_ms": timings.get("prompt_ms"),
                    "ratio_first_sentence_to_raw": (ours["first_sentence_ms"] / raw_k) if raw_k else None,
                }
            )
        cancels = [await _cancel_trial(responder, 5) for _ in range(cancel_trials)]
    finally:
        engine.close()

    def col(key):
        return [r[key] for r in rows if r.get(key) is not None]

    gen_rates = [
        r["tokens"] / ((r["total_ms"] - r["first_token_ms"]) / 1000)
        for r in rows
        if r["tokens"] > 1 and r["total_ms"] > r["first_token_ms"]
    ]
    result = {
        "bench": "responder",
        "model": engine.name,
        "settings": {
            "threads": threads or default_threads(),
            "n_gpu_layers": n_gpu_layers,
            "max_tokens": max_tokens,
            "context_tokens": context_tokens,
            "temperature": 0.0,
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_1m": os.getloadavg()[0]},
        "load_s": round(load_s, 2),
        "prompts": len(rows),
        "responder": {
            "first_token_ms": _stats(col("first_token_ms")),
            "first_sentence_ms": _stats(col("first_sentence_ms")),
            "tokens_per_s": _stats(gen_rates),
            "runtime_tokens_per_s": _stats(col("runtime_tokens_per_s")),
        },
        "raw_runtime": {
            "first_token_ms": _stats(col("raw_first_token_ms")),
            "ms_to_first_sentence_tokens": _stats(col("raw_ms_to_same_tokens")),
            "runtime_tokens_per_s": _stats(col("raw_runtime_tokens_per_s")),
            "prompt_ms": _stats(col("raw_prompt_ms")),
        },
        "first_sentence_over_raw": _stats(col("ratio_first_sentence_to_raw")),
        # The session gets no token after the stop (its stream is closed at once); the runtime's
        # thread returns at its next token, the one under way dropped.
        "cancel": {
            "trials": len(cancels),
            "tokens_delivered_after_stop": sum(c["tokens_delivered_after_stop"] for c in cancels),
            "runtime_stop_ms": _stats([c["runtime_stop_ms"] for c in cancels]),
            "runtime_chunks_after_stop_max": max((c["chunks_after_stop"] for c in cancels), default=None),
        },
        "samples": [{"prompt": r["prompt"], "reply": r["text"]} for r in rows[:6]],
        "threads_alive": threading.active_count(),
    }
    ratio, stop = result["first_sentence_over_raw"], result["cancel"]["runtime_stop_ms"]
    result["targets"] = {
        "first_sentence_within_1.2x_raw_p50": ratio.get("p50") is not None and ratio["p50"] <= 1.2,
        "no_token_after_cancel": result["cancel"]["tokens_delivered_after_stop"] == 0,
        "runtime_stopped_within_100ms_p95": stop.get("p95") is not None and stop["p95"] <= 100,
    }
    return result
