"""The turn-taking sets of `appliance bench conversation`: mid-sentence pauses (is the turn cut
off?), backchannels over a reply (does it go on?), and the clips they use.

A mid-sentence pause is made from one Piper rendering of the whole sentence, cut at a word's end
(Whisper's word timestamps, moved to the quietest 10 ms nearby) with 700 ms of silence put in, so
the prosody before the pause is that of a sentence going on."""

from __future__ import annotations

import numpy as np

from appliance.transport.ws_client import WsClient

RATE = 16000
PAUSE_S = 0.7
PAUSED = [
    ("I would like to book a table for four people tonight.", "for"),
    ("What is the weather like in Paris today?", "like"),
    ("Can you set an alarm for seven in the morning?", "for"),
    ("Please add milk and eggs to the shopping list.", "and"),
    ("Send a message to my brother saying I am late.", "to"),
    ("How long does it take to drive to the airport?", "take"),
    ("What is the capital city of Australia?", "of"),
    ("Play the new album by my favourite band.", "by"),
    ("Turn the volume down a little bit please.", "down"),
    ("Remind me to water the plants this evening.", "water"),
]
BACKCHANNELS = [
    "Yeah.",
    "Okay.",
    "Mm-hmm.",
    "Right.",
    "Uh-huh.",
    "Yes.",
    "I see.",
    "Sure.",
    "Got it.",
    "Alright.",
]


def word_end_s(whisper, samples: np.ndarray, word: str) -> float | None:
    """Where the last ``word`` ends in 16 kHz int16 speech (s), by Whisper's word timestamps."""
    audio = samples.astype(np.float32) / 32768
    segments, _ = whisper.transcribe(audio, language="en", word_timestamps=True, beam_size=1)
    ends = [w.end for s in segments for w in s.words if w.word.strip().lower().strip(",.?!") == word]
    return ends[-1] if ends else None


def with_pause(samples: np.ndarray, at_s: float, pause_s: float = PAUSE_S) -> tuple[np.ndarray, float]:
    """``samples`` with ``pause_s`` of silence at the quietest 10 ms within 100 ms before / 30 ms
    after ``at_s``; and where the cut is (s)."""
    end = int(at_s * RATE)
    before, after = int(0.1 * RATE), int(0.03 * RATE)
    envelope = np.convolve(np.abs(samples.astype(np.float32)), np.ones(RATE // 100), "same")
    lo = max(0, end - before)
    cut = lo + int(np.argmin(envelope[lo : end + after]))
    return np.concatenate([samples[:cut], np.zeros(int(pause_s * RATE), np.int16), samples[cut:]]), cut / RATE


async def cut_off_trial(url: str, samples: np.ndarray, speech_end_s: float) -> dict:
    """One sentence with a mid-sentence pause: was the turn split (the VAD ended it more than once),
    or did a reply start before the person finished?"""
    c = WsClient(url)
    await c.connect(RATE)
    try:
        padded = np.concatenate([np.zeros(RATE // 2, np.int16), samples, np.zeros(2 * RATE, np.int16)])
        t0 = await c.stream(padded, RATE)
        try:
            await c.wait_for(lambda: c.rx.of_type("metrics") or c.rx.of_type("error"), 30)
        except TimeoutError:
            pass  # judged on what came
        end_at = t0 + 0.5 + speech_end_s
        ends = [e for e in c.rx.of_type("vad") if e["event"] == "speech_end"]
        early = bool(c.rx.frames) and bool(c.rx.frames[0][0] < end_at)
        return {"split": len(ends) > 1, "early_reply": early, "cut_off": len(ends) > 1 or early}
    finally:
        await c.close()


async def backchannel_trial(url: str, samples: np.ndarray, reply: str) -> dict:
    """A backchannel over a playing reply: did the reply go on (back to SPEAKING, no new turn)?"""
    c = WsClient(url)
    await c.connect(RATE)
    try:
        await c.send_json({"type": "say", "text": reply})
        await c.wait_for(lambda: len(c.rx.frames) > 50, 30)
        await c.stream(np.concatenate([samples, np.zeros(RATE * 3 // 2, np.int16)]), RATE)

        def decided() -> bool:
            states = [e["state"] for e in c.rx.of_type("state")]
            tail = states[states.index("BARGED_IN") + 1 :] if "BARGED_IN" in states else []
            finals = [t for t in c.rx.of_type("transcript") if t["final"]]
            return bool(tail) or bool(finals) or not c.rx.of_type("barge_in")

        try:
            await c.wait_for(decided, 15)
        except TimeoutError:
            pass  # judged on what came
        states = [e["state"] for e in c.rx.of_type("state")]
        heard = "BARGED_IN" in states
        resumed = heard and states[states.index("BARGED_IN") + 1 :][:1] == ["SPEAKING"]
        stopped = any(t["final"] for t in c.rx.of_type("transcript"))
        return {"heard": heard, "continued": (resumed or not heard) and not stopped}
    finally:
        await c.close()
