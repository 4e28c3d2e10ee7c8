"""The AsrEngine base class with a fake engine: validation, the short-audio shortcut, the executor."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from appliance.asr import MIN_AUDIO_S, SAMPLE_RATE, AsrEngine, Recognition, Transcript


class FakeEngine(AsrEngine):
    name = "fake"

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.loads = 0
        self.calls: list[tuple[np.ndarray, bool]] = []
        self.threads: set[str] = set()
        self.running = 0
        self.max_running = 0
        self._lock = threading.Lock()

    def load(self) -> None:
        self.loads += 1
        self.loaded = True

    def recognize(self, audio: np.ndarray, *, partial: bool) -> Recognition:
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        self.calls.append((audio, partial))
        with self._lock:
            self.running -= 1
        return Recognition(text=f"{audio.size} samples", language="en")


def seconds(s: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    return np.zeros(round(s * rate), dtype=np.float32)


# --- the short-audio shortcut ---------------------------------------------------------------


@pytest.mark.parametrize("duration_s", [0.0, 0.05, MIN_AUDIO_S - 0.001])
def test_too_short_audio_is_empty_without_loading_or_calling_the_model(duration_s):
    engine = FakeEngine()
    result = engine.transcribe_sync(seconds(duration_s))
    assert result == Transcript("", "en", pytest.approx(duration_s, abs=1e-4), 0.0, final=True, segments=[])
    assert result.empty
    assert engine.loads == 0 and engine.calls == []


def test_audio_of_the_minimum_length_is_recognised():
    engine = FakeEngine()
    result = engine.transcribe_sync(seconds(MIN_AUDIO_S))
    assert result.text == "1600 samples"
    assert result.audio_s == pytest.approx(MIN_AUDIO_S)
    assert result.final and not result.empty
    assert result.asr_ms >= 0


def test_short_partial_is_marked_not_final():
    assert FakeEngine().transcribe_sync(seconds(0.01), partial=True).final is False


# --- input validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("audio", "match"),
    [
        (np.zeros((16000, 2), dtype=np.float32), "1-D mono"),
        (np.zeros((16000, 1), dtype=np.float32), "1-D mono"),
        (np.float32(0.0), "1-D mono"),
        (np.zeros(16000, dtype=np.int16), "floating-point .*int16.*pcm16_to_float"),
        (np.array(["a", "b"]), "floating-point"),
        (np.array([0.0] * 8000 + [np.nan] + [0.0] * 8000, dtype=np.float32), "NaN or infinite"),
        (np.array([np.inf] * 16000, dtype=np.float32), "NaN or infinite"),
    ],
)
def test_bad_audio_is_a_clear_value_error(audio, match):
    engine = FakeEngine()
    with pytest.raises(ValueError, match=match):
        engine.transcribe_sync(audio)
    assert engine.calls == []


def test_nan_in_short_audio_is_still_rejected():
    with pytest.raises(ValueError, match="NaN"):
        FakeEngine().transcribe_sync(np.array([np.nan], dtype=np.float32))


def test_float64_and_lists_are_converted_to_float32():
    engine = FakeEngine()
    engine.transcribe_sync(np.zeros(4000, dtype=np.float64))
    engine.transcribe_sync([0.0] * 4000)
    assert all(audio.dtype == np.float32 and audio.flags.c_contiguous for audio, _ in engine.calls)


@pytest.mark.parametrize("rate", [0, -16000, 16000.0, True])
def test_bad_sample_rate_is_rejected(rate):
    with pytest.raises(ValueError, match="sample_rate"):
        FakeEngine().transcribe_sync(seconds(1), sample_rate=rate)


def test_other_sample_rates_are_resampled_to_16k():
    engine = FakeEngine()
    result = engine.transcribe_sync(seconds(1.0, 48000), sample_rate=48000)
    assert engine.calls[0][0].size == SAMPLE_RATE
    assert result.audio_s == pytest.approx(1.0)


# --- loading --------------------------------------------------------------------------------


def test_model_is_loaded_once_on_first_use():
    engine = FakeEngine()
    engine.transcribe_sync(seconds(1))
    engine.transcribe_sync(seconds(1), partial=True)
    assert engine.loads == 1
    assert [partial for _, partial in engine.calls] == [False, True]


async def test_load_async_runs_on_the_worker_thread():
    engine = FakeEngine()
    await engine.load_async()
    assert engine.loaded and engine.loads == 1
    engine.close()


# --- the async path -------------------------------------------------------------------------


async def test_transcribe_runs_off_the_loop_on_one_dedicated_thread():
    engine = FakeEngine(delay_s=0.05)
    try:
        jobs = [engine.transcribe(seconds(0.5), partial=i % 2 == 1) for i in range(4)]
        results = await asyncio.gather(*jobs)
    finally:
        engine.close()
    assert [r.final for r in results] == [True, False, True, False]
    assert engine.max_running == 1  # serialised: two recognitions never share the cores
    assert len(engine.threads) == 1
    (thread,) = engine.threads
    assert thread.startswith("asr-fake") and thread != threading.current_thread().name


async def test_loop_keeps_running_while_a_transcription_blocks():
    engine = FakeEngine(delay_s=0.3)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await engine.transcribe(seconds(1))
    finally:
        task.cancel()
        engine.close()
    assert ticks >= 10


async def test_async_bad_input_raises_before_anything_is_queued():
    engine = FakeEngine()
    with pytest.raises(ValueError, match="1-D"):
        await engine.transcribe(np.zeros((2, 8000), dtype=np.float32))
    assert engine._executor is None


async def test_async_short_audio_is_answered_without_a_thread_hop():
    engine = FakeEngine()
    result = await engine.transcribe(seconds(0.02), partial=True)
    assert result.empty and not result.final
    assert engine._executor is None and engine.loads == 0


async def test_close_unloads_and_the_engine_can_be_used_again():
    engine = FakeEngine()
    await engine.transcribe(seconds(1))
    engine.close()
    assert not engine.loaded and engine._executor is None
    assert (await engine.transcribe(seconds(1))).text == "16000 samples"
    assert engine.loads == 2
    engine.close()
    engine.close()  # idempotent


async def test_aclose_waits_for_the_running_recognition_without_blocking_the_loop():
    engine = FakeEngine(delay_s=0.5)
    job = asyncio.create_task(engine.transcribe(seconds(1)))
    deadline = time.monotonic() + 10
    while not engine.running:  # the recognition has started in its thread
        assert time.monotonic() < deadline, "the recognition never started"
        await asyncio.sleep(0.005)
    closing = asyncio.create_task(engine.aclose())
    await asyncio.sleep(0.01)
    # The loop got control back while close() still waits for the running recognition.
    assert engine.running and not closing.done()
    await closing
    assert (await job).text == "16000 samples"
    assert not engine.loaded
