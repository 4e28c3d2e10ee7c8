"""SpeechDetector: onset/endpoint rules, the adaptive noise gate and its state-aware bar.

Speech is real (espeak-ng, synthesised once per session into tmp): webrtcvad does not take
synthetic tones for speech. Signals are built at 16 kHz with known speech boundaries (from the
clean signal's energy envelope) and fed as PCM16 in random 10–100 ms chunks.
"""

from __future__ import annotations

import shutil
import subprocess
import wave

import numpy as np
import pytest

from appliance.audio import float_to_pcm16, pcm16_to_float, resample
from appliance.audio.noise_gate import NoiseFloor, frame_energy_db
from appliance.audio.vad import (
    ProvisionalEnd,
    SpeechDetector,
    SpeechDiscarded,
    SpeechEnd,
    SpeechResumed,
    SpeechStart,
    VadConfig,
)

RATE = 16_000
NOISE_DB = -60.0  # steady white background noise (0–8 kHz) under every test signal
SPEECH_DB = -26.0  # active speech level of a normal talker (ITU-T P.56 nominal)
TOL_MS = 60

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


# --- signal helpers ----------------------------------------------------------------------------


def energy_db(x: np.ndarray, rate: int = RATE, ms: int = 10, hop_ms: int | None = None) -> np.ndarray:
    n, hop = rate * ms // 1000, rate * (hop_ms or ms) // 1000
    if x.size < n:
        return np.zeros(0)
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::hop]
    return 10 * np.log10(np.mean(np.square(frames, dtype=np.float64), axis=1) + 1e-20)


def active_level_db(x: np.ndarray) -> float:
    """Power level of the 20 ms frames within 30 dB of the loudest (a simple active speech level)."""
    e = energy_db(x, ms=20)
    active = e[e > e.max() - 30]
    return float(10 * np.log10(np.mean(10 ** (active / 10))))


def at_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    return (x * 10 ** ((dbfs - active_level_db(x)) / 20)).astype(np.float32)


def trim(x: np.ndarray, below_peak_db: float = 45.0) -> np.ndarray:
    """Cut leading/trailing near-silence (10 ms frames more than below_peak_db under the loudest)."""
    e = energy_db(x)
    idx = np.flatnonzero(e > e.max() - below_peak_db)
    n = RATE // 100
    return x[idx[0] * n : (idx[-1] + 1) * n]


def bounds_ms(clean: np.ndarray, threshold_db: float) -> tuple[int, int]:
    """First and last 10 ms of the clean signal whose energy reaches threshold_db."""
    idx = np.flatnonzero(energy_db(clean) >= threshold_db)
    return int(idx[0] * 10), int((idx[-1] + 1) * 10)


def noise(n: int, dbfs: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 10 ** (dbfs / 20)).astype(np.float32)


def silence(ms: int) -> np.ndarray:
    return np.zeros(RATE * ms // 1000, dtype=np.float32)


def scene(*parts: np.ndarray, noise_db: float = NOISE_DB, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate parts; returns (clean, clean + steady noise)."""
    clean = np.concatenate(parts).astype(np.float32)
    return clean, clean + noise(clean.size, noise_db, seed)


def feed(det: SpeechDetector, x: np.ndarray, rate: int = RATE, seed: int = 1) -> list:
    """Stream x (float, at rate) as PCM16 in random 10–100 ms chunks; returns all events."""
    rng = np.random.default_rng(seed)
    pcm = float_to_pcm16(x).tobytes()
    events, i = [], 0
    while i < len(pcm):
        n = 2 * int(rate * int(rng.integers(10, 101)) / 1000)
        events += det.process(pcm[i : i + n])
        i += n
    check_order(events)
    return events


def check_order(events) -> None:
    """Event times never go back, and every SpeechStart is closed before the next one."""
    times = [e.t_ms for e in events]
    assert times == sorted(times), events
    open_ = False
    for e in events:
        if isinstance(e, SpeechStart):
            assert not open_, events
            open_ = True
        elif isinstance(e, (SpeechEnd, SpeechDiscarded)):
            assert open_, events
            open_ = False
        else:
            assert open_, events


def kinds(events) -> list[str]:
    return [type(e).__name__ for e in events]


def run(x: np.ndarray, mode: str = "listening", rate: int = RATE, config: VadConfig | None = None, seed=1):
    det = SpeechDetector(config or VadConfig(), rate)
    det.set_mode(mode)
    return feed(det, x, rate, seed), det


# --- speech fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def espeak(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng")
    cache: dict[str, np.ndarray] = {}
    folder = tmp_path_factory.mktemp("espeak")

    def say(text: str) -> np.ndarray:
        """Trimmed speech at 16 kHz, at SPEECH_DB active level."""
        if text not in cache:
            path = folder / f"{len(cache)}.wav"
            subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
            with wave.open(str(path)) as w:
                rate, raw = w.getframerate(), w.readframes(w.getnframes())
            cache[text] = at_level(trim(resample(pcm16_to_float(raw), rate, RATE)), SPEECH_DB)
        return cache[text].copy()

    return say


@pytest.fixture(scope="session")
def sentence(espeak):
    return espeak("Open the window now.")  # ≈1 s, starts and ends voiced


# --- no speech ---------------------------------------------------------------------------------


@pytest.mark.parametrize("noise_db", [None, -70.0, -45.0])
def test_silence_and_steady_noise_give_no_events(noise_db):
    x = silence(4000) if noise_db is None else noise(4 * RATE, noise_db)
    events, det = run(x)
    assert events == []
    assert not det.in_speech
    assert det.position_ms == 4000
    if noise_db is not None:  # the floor settles on the noise (20th percentile: a little under its mean)
        assert noise_db - 2 <= det.noise_floor_db <= noise_db + 0.5


# --- one utterance -----------------------------------------------------------------------------


@needs_espeak
def test_one_utterance_onset_and_end_times(sentence):
    clean, x = scene(silence(1000), sentence, silence(1000))
    t0, t1 = bounds_ms(clean, NOISE_DB + 10)
    events, det = run(x)
    assert kinds(events) == ["SpeechStart", "ProvisionalEnd", "SpeechEnd"]
    start, prov, end = events
    assert abs(start.t_ms - t0) <= TOL_MS
    assert abs(end.t_ms - t1) <= TOL_MS
    assert prov.t_ms == end.t_ms  # nothing happened in the pause
    assert end.speech_ms == end.t_ms - start.t_ms == end.t_ms - end.start_ms
    assert not det.in_speech
    # speech did not raise its own bar
    assert NOISE_DB - 2 <= det.noise_floor_db <= NOISE_DB + 0.5


@needs_espeak
@pytest.mark.parametrize("frame_ms", [10, 30])
def test_other_frame_sizes(sentence, frame_ms):
    clean, x = scene(silence(800), sentence, silence(800))
    t0, t1 = bounds_ms(clean, NOISE_DB + 10)
    events, _ = run(x, config=VadConfig(frame_ms=frame_ms))
    starts = [e for e in events if isinstance(e, SpeechStart)]
    ends = [e for e in events if isinstance(e, SpeechEnd)]
    assert len(starts) == len(ends) == 1
    assert abs(starts[0].t_ms - t0) <= TOL_MS and abs(ends[0].t_ms - t1) <= TOL_MS
    assert starts[0].t_ms % frame_ms == 0


@needs_espeak
def test_pre_roll_is_in_the_utterance_audio(sentence):
    _clean, x = scene(silence(1000), sentence, silence(700))
    pcm = float_to_pcm16(x)
    det = SpeechDetector(VadConfig(), RATE)
    seen_during = []
    events = []
    for i in range(0, pcm.size, 800):  # 50 ms pieces
        new = det.process(pcm[i : i + 800].tobytes())
        for e in new:  # events report the instant in the audio, decided later (onset: 60 ms of voice)
            assert det.position_ms >= e.t_ms + (60 if isinstance(e, SpeechStart) else 0)
        events += new
        if det.in_speech:
            seen_during.append(det.utterance_audio().size)
        else:
            assert det.utterance_audio().size == 0
    (end,) = [e for e in events if isinstance(e, SpeechEnd)]
    assert end.audio.dtype == np.float32
    assert end.audio.size == (end.speech_ms + 200) * RATE // 1000
    # at 16 kHz the detector passes samples through: the audio is exactly that stretch of input
    first = (end.start_ms - 200) * RATE // 1000
    np.testing.assert_array_equal(end.audio, pcm16_to_float(pcm[first : end.t_ms * RATE // 1000]))
    assert seen_during == sorted(seen_during) and seen_during[0] > 0  # utterance_audio grows


@needs_espeak
def test_pre_roll_never_reaches_back_into_the_previous_utterance(sentence):
    # Two utterances 150 ms apart, the first ended at 100 ms of silence: the second's 200 ms
    # pre-roll would hold the first's last words, which a turn joining both would hear twice.
    _, x = scene(silence(800), sentence, silence(150), sentence, silence(700))
    events, _ = run(x, config=VadConfig(endpoint_silence_ms=100, provisional_silence_ms=60))
    first, second = [e for e in events if isinstance(e, SpeechEnd)]
    assert second.audio.size <= (second.t_ms - first.t_ms) * RATE // 1000
    assert second.audio.size >= second.speech_ms * RATE // 1000


@needs_espeak
def test_pre_roll_is_clipped_at_the_stream_start(sentence):
    _, x = scene(silence(100), sentence, silence(600))
    events, _ = run(x)
    (start,) = [e for e in events if isinstance(e, SpeechStart)]
    (end,) = [e for e in events if isinstance(e, SpeechEnd)]
    assert start.t_ms < 200
    assert end.audio.size == end.t_ms * RATE // 1000  # from sample 0


# --- bursts and pauses -------------------------------------------------------------------------


@needs_espeak
@pytest.mark.parametrize("kind", ["vowel", "noise"])
def test_100ms_burst_is_discarded_not_a_turn(espeak, kind):
    if kind == "vowel":  # the most speech-like click there is: 100 ms cut from a vowel
        s = espeak("Aaah.")
        e = energy_db(s, ms=100, hop_ms=10)
        i = int(np.argmax(e)) * RATE // 100
        burst = s[i : i + RATE // 10]
    else:  # a knock: 100 ms of loud noise
        burst = noise(RATE // 10, -20.0, seed=7)
    _, x = scene(silence(1000), burst, silence(1000))
    events, det = run(x)
    assert kinds(events) == ["SpeechStart", "SpeechDiscarded"]  # no ProvisionalEnd for a click either
    start, discarded = events
    assert abs(start.t_ms - 1000) <= TOL_MS
    assert discarded.speech_ms < 250 and discarded.speech_ms == discarded.t_ms - start.t_ms
    assert not det.in_speech


@needs_espeak
@pytest.mark.parametrize("gap_ms", [150, 270])
def test_a_pause_shorter_than_the_endpoint_is_one_utterance(espeak, gap_ms):
    # 270 ms: the next word's run starts inside the 300 ms pause but is confirmed only after it
    hello, world = espeak("Hello."), espeak("World.")
    clean, x = scene(silence(1000), hello, silence(gap_ms), world, silence(800))
    gap_start = 1000 + hello.size * 1000 // RATE
    events, _ = run(x)
    # the pause passes provisional_silence_ms: a ProvisionalEnd, then SpeechResumed, one SpeechEnd
    assert kinds(events) == ["SpeechStart", "ProvisionalEnd", "SpeechResumed", "ProvisionalEnd", "SpeechEnd"]
    start, prov, resumed, _prov2, end = events
    t0, t1 = bounds_ms(clean, NOISE_DB + 10)
    assert abs(start.t_ms - t0) <= TOL_MS and abs(end.t_ms - t1) <= TOL_MS
    assert abs(prov.t_ms - gap_start) <= TOL_MS
    assert abs(resumed.t_ms - (gap_start + gap_ms)) <= TOL_MS
    assert end.speech_ms == end.t_ms - start.t_ms
    assert end.audio.size == (end.speech_ms + 200) * RATE // 1000


@needs_espeak
@pytest.mark.parametrize("gap_ms", [400, 600])
def test_a_pause_longer_than_the_endpoint_makes_two_utterances(espeak, gap_ms):
    hello, world = espeak("Hello."), espeak("World.")
    _, x = scene(silence(1000), hello, silence(gap_ms), world, silence(800))
    gap_start = 1000 + hello.size * 1000 // RATE
    events, _ = run(x)
    assert kinds(events) == ["SpeechStart", "ProvisionalEnd", "SpeechEnd"] * 2
    assert abs(events[2].t_ms - gap_start) <= TOL_MS
    assert abs(events[3].t_ms - (gap_start + gap_ms)) <= TOL_MS


@needs_espeak
def test_max_utterance_forces_an_end(espeak):
    long = np.concatenate([espeak("Please turn on the lights in the kitchen and close the door.")] * 2)
    _, x = scene(silence(800), long, silence(800))
    events, _ = run(x, config=VadConfig(max_utterance_s=1.0))
    ends = [e for e in events if isinstance(e, SpeechEnd)]
    assert len(ends) >= 2
    assert ends[0].speech_ms <= 1000 and ends[0].speech_ms >= 1000 - 300  # forced at the limit
    assert all(e.speech_ms <= 1000 for e in ends)
    # the speech went on: a new utterance starts right after the forced end
    second_start = [e for e in events if isinstance(e, SpeechStart)][1]
    assert second_start.t_ms - ends[0].t_ms <= 100


# --- rates and chunking ------------------------------------------------------------------------


@needs_espeak
def test_input_rates_and_chunk_sizes_give_the_same_events(espeak):
    a, b = espeak("Open the window now."), espeak("Good morning everyone.")
    _, x = scene(silence(900), a, silence(700), b, silence(900))
    reference, _ = run(x, rate=RATE, seed=0)
    assert kinds(reference) == ["SpeechStart", "ProvisionalEnd", "SpeechEnd"] * 2
    for rate in (8000, 16000, 22050, 44100, 48000):
        xr = resample(x, RATE, rate)
        for seed in (1, 2):
            events, _ = run(xr, rate=rate, seed=seed)
            assert kinds(events) == kinds(reference), (rate, seed)
            for got, want in zip(events, reference, strict=True):
                assert abs(got.t_ms - want.t_ms) <= 20, (rate, seed, got, want)
            ends = [e for e in events if isinstance(e, SpeechEnd)]
            assert all(e.audio.size == (e.speech_ms + 200) * RATE // 1000 for e in ends)


# --- noise and the state-aware bar -------------------------------------------------------------


@needs_espeak
def test_quiet_speech_under_steady_noise_is_detected(sentence):
    quiet = sentence * 10 ** (-20 / 20)  # 20 dB below a normal talker: −46 dBFS, 14 dB above the noise
    clean, x = scene(silence(1500), quiet, silence(1000))
    t0, t1 = bounds_ms(clean, NOISE_DB + 6)
    events, _ = run(x)
    starts = [e for e in events if isinstance(e, SpeechStart)]
    ends = [e for e in events if isinstance(e, SpeechEnd)]
    assert len(starts) == len(ends) == 1
    assert abs(starts[0].t_ms - t0) <= 80 and abs(ends[0].t_ms - t1) <= 80


def _sustained_db(x: np.ndarray) -> float:
    """The loudest 60 ms (onset_ms) of x, taken as the quietest of its three 20 ms frames."""
    e = energy_db(x, ms=20, hop_ms=5)
    return float(np.max(np.minimum(np.minimum(e[:-8], e[4:-4]), e[8:])))


@needs_espeak
def test_speaking_mode_raises_the_bar(sentence):
    noise_db = -50.0
    lead = noise(RATE, noise_db, seed=3)
    probe = SpeechDetector(VadConfig(), RATE)
    probe.process(float_to_pcm16(lead).tobytes())
    listening_bar = probe.threshold_db
    probe.set_mode("speaking")
    speaking_bar = probe.threshold_db
    probe.set_mode("barged_in")
    barged_bar = probe.threshold_db
    assert speaking_bar - listening_bar == pytest.approx(20 * np.log10(2.0))  # 2× amplitude
    assert barged_bar - listening_bar == pytest.approx(20 * np.log10(1.2))
    assert noise_db - 1 <= probe.noise_floor_db <= noise_db + 0.5

    def play(level_db: float, mode: str):
        speech = sentence * 10 ** ((level_db - _sustained_db(sentence)) / 20)
        x = np.concatenate([lead, speech + noise(speech.size, noise_db, 4), noise(RATE, noise_db, 5)])
        return run(x, mode=mode)[0]

    # a voice whose loudest 60 ms sit between the two bars: a user in listening mode, echo while speaking
    level = speaking_bar - 2.0
    assert level > listening_bar + 3.0
    assert any(isinstance(e, SpeechStart) for e in play(level, "listening"))
    assert play(level, "speaking") == []
    # a clearly louder voice (the user talking over the reply) still gets through while speaking
    loud = play(speaking_bar + 10.0, "speaking")
    assert kinds(loud) == ["SpeechStart", "ProvisionalEnd", "SpeechEnd"]
    assert abs(loud[0].t_ms - 1000) <= TOL_MS


def hum(n: int, dbfs: float, f0: float = 120.0, seed: int = 0) -> np.ndarray:
    """A steady harmonic buzz (a fan, a motor, mains hum): webrtcvad takes it for a voice."""
    t = np.arange(n) / RATE
    x = sum(np.sin(2 * np.pi * f0 * h * t + h) / h for h in range(1, 30))
    x = x / np.sqrt(np.mean(x**2)) * 10 ** (dbfs / 20)
    return (x + noise(n, dbfs - 20, seed)).astype(np.float32)


def _floors(det: SpeechDetector, x: np.ndarray) -> tuple[list, list[float]]:
    pcm, events, floors = float_to_pcm16(x), [], []
    for i in range(0, pcm.size, 320):
        events += det.process(pcm[i : i + 320].tobytes())
        floors.append(det.noise_floor_db)
    return events, floors


@pytest.mark.parametrize("loud", ["white", "hum"])
def test_noise_floor_follows_a_step_up_and_down(loud):
    quiet = noise(4 * RATE, -60.0, 1)
    louder = noise(8 * RATE, -35.0, 2) if loud == "white" else hum(8 * RATE, -35.0)
    det = SpeechDetector(VadConfig(), RATE)
    events, floors = _floors(det, np.concatenate([quiet, louder]))
    assert -62 <= floors[4 * 50 - 1] <= -59.5  # just before the step
    assert -37 <= floors[-1] <= -34.5
    assert not det.in_speech
    # the step passes webrtcvad and the old bar: it opens an "utterance", which keeps the floor from
    # learning from non-speech frames; the minimum of all frames frees it within one window (3 s)
    assert kinds(events) == ["SpeechStart", "ProvisionalEnd", "SpeechEnd"]
    assert events[0].t_ms == 4000 and events[-1].speech_ms <= 3000 + 300
    # and back down (within the percentile window)
    events, floors = _floors(det, noise(4 * RATE, -60.0, 3))
    assert -62 <= floors[-1] <= -59.5
    assert events == []


def test_noise_floor_unit_rules():
    nf = NoiseFloor(frame_ms=20, window_s=1.0, percentile=20, initial_db=-60.0, warmup_s=0.2)
    assert nf.floor_db == -60.0
    nf.update(-45.0, in_speech=False)  # warm-up: the quietest frame so far, never under the default
    assert nf.floor_db == -45.0
    nf.update(-100.0, in_speech=False)  # digital silence tells nothing about the microphone
    assert nf.floor_db == -45.0
    for _ in range(50):
        nf.update(-50.0, in_speech=False)
    assert nf.floor_db == pytest.approx(-50.0)
    for _ in range(20):  # speech frames do not move the percentile
        nf.update(-20.0, in_speech=True)
    assert nf.floor_db == pytest.approx(-50.0)
    for _ in range(50):  # ... until a whole window of them: then the minimum rules
        nf.update(-30.0, in_speech=True)
    assert nf.floor_db == pytest.approx(-30.0)
    dc, sine = np.full(320, 0.5, np.float32), np.sin(np.arange(320) / 3).astype(np.float32)
    e = frame_energy_db(np.stack([dc, sine]))
    assert e[0] == -100.0  # DC only
    assert e[1] == pytest.approx(-3.0, abs=0.2)


def test_quiet_microphone_start_does_not_fire_on_noise_above_the_default_floor():
    # noise at −45 dBFS is above the default floor + margin (−51): the warm-up must not call it speech
    events, det = run(noise(3 * RATE, -45.0, 9))
    assert events == []
    assert -47 <= det.noise_floor_db <= -44.5


# --- API ---------------------------------------------------------------------------------------


def test_bad_input_raises_value_error():
    for rate in (7999, 48001, 16000.0, True):
        with pytest.raises(ValueError):
            SpeechDetector(VadConfig(), rate)
    det = SpeechDetector(VadConfig(), 48000)
    with pytest.raises(ValueError):
        det.process(b"\x00\x01\x02")
    assert det.process(b"") == []
    assert det.process(b"\x00\x00" * 100) == []  # less than a frame: buffered
    with pytest.raises(ValueError):
        det.set_mode("shouting")
    det.set_mode("SPEAKING")
    assert det.mode == "speaking"
    for bad in ({"frame_ms": 25}, {"aggressiveness": 4}, {"surprise": 1}, {"provisional_silence_ms": 400}):
        with pytest.raises(ValueError):
            VadConfig(**bad)


def test_config_accepts_the_orchestrator_settings():
    from appliance.config import VadSettings

    cfg = VadConfig(
        **VadSettings().model_dump(exclude={"echo_return_loss_db"})
    )  # as the conversation builds it
    assert cfg.endpoint_silence_ms == 300 and cfg.pre_roll_ms == 200


@needs_espeak
def test_reset_starts_over(sentence):
    _, x = scene(silence(700), sentence, silence(700))
    det = SpeechDetector(VadConfig(), 22050)
    xr = resample(x, RATE, 22050)
    first = feed(det, xr, 22050)
    det.set_mode("speaking")
    det.reset()
    assert det.position_ms == 0 and det.mode == "listening" and det.noise_floor_db == -60.0
    second = feed(det, xr, 22050)
    assert kinds(first) == kinds(second) == ["SpeechStart", "ProvisionalEnd", "SpeechEnd"]
    assert [e.t_ms for e in first] == [e.t_ms for e in second]
    assert isinstance(first[1], ProvisionalEnd)
    assert not any(isinstance(e, (SpeechResumed, SpeechDiscarded)) for e in first)


def test_end_now_ends_the_utterance_at_its_pause_and_only_there(sentence):
    det = SpeechDetector(VadConfig(endpoint_silence_ms=2000), RATE)
    _clean, x = scene(silence(300), sentence, silence(400))
    events = feed(det, x)
    assert kinds(events) == ["SpeechStart", "ProvisionalEnd"] and det.in_pause
    pause_at = events[1].t_ms
    (end,) = det.end_now()
    assert isinstance(end, SpeechEnd) and end.t_ms == pause_at  # where the pause began, not now
    assert not det.in_speech and det.end_now() == []
    during, _ = run(scene(silence(300), sentence)[1])
    assert "SpeechEnd" not in kinds(during)
