"""How a stream ranks its engine calls in the deadline scheduler: its first call as due on arrival,
every later call (a segment may take several) by when the audio made so far runs out."""

from __future__ import annotations

import asyncio
import itertools

from appliance.audio import OUTPUT_RATE
from appliance.config import AudioSettings
from appliance.rpc import tts_pb2 as pb
from appliance.tts.adapters import SynthesisTracker
from appliance.tts.adapters.mock import MockSineAdapter
from appliance.tts.catalog import Catalog
from appliance.tts.scheduler import DeadlineScheduler
from appliance.tts.sessions import WorkerSession
from appliance.tts.stream import PLAYOUT_MARGIN_S, SynthesisStream


class RecordingScheduler(DeadlineScheduler):
    """The real scheduler, noting each call's deadline and the audio the stream had made by then."""

    def __init__(self) -> None:
        super().__init__(threads=1)
        self.calls: list[tuple[float, float]] = []
        self.stream: SynthesisStream | None = None

    def run(self, fn, deadline):
        self.calls.append((deadline, asyncio.get_running_loop().time()))
        return super().run(fn, deadline)


class Lease:
    def __init__(self, adapter) -> None:
        self.adapter = adapter
        self.model_id = adapter.spec.model_id

    def release(self) -> None:
        pass


async def _texts(*texts):
    for i, text in enumerate(texts):
        yield pb.TextChunk(session_id="s", text=text, is_final=i == len(texts) - 1)


async def test_first_call_is_due_on_arrival_and_later_calls_when_the_audio_runs_out():
    spec = next(s for s in Catalog().specs() if s.engine == "mock")
    adapter = MockSineAdapter(spec)
    adapter.load()
    session = WorkerSession("s", Lease(adapter))
    await session.begin_stream()
    scheduler = RecordingScheduler()
    stream = SynthesisStream(
        session, scheduler=scheduler, tracker=SynthesisTracker(), audio=AudioSettings(), max_chars=10_000
    )
    try:
        arrived = asyncio.get_running_loop().time()
        stream.start(_texts("One two three four five six seven eight. Nine ten eleven twelve."))
        frames = [f async for f in stream.frames()]
    finally:
        await stream.close()
        scheduler.shutdown(wait=True)

    deadlines = [d for d, _ in scheduler.calls]
    assert len(frames) > 0 and len(deadlines) >= 12  # one call per word, plus the end of each segment
    assert abs(deadlines[0] - arrived) < 0.05  # the first words: due at once
    audio_start = stream._audio_start
    word_s = adapter.word_s + adapter.gap_s
    # Each later call is due PLAYOUT_MARGIN_S before the audio made so far has played out: that
    # grows by one word per call (counted as it leaves the resampler), so the deadlines step up by a word.
    later = deadlines[1:]
    steps = [b - a for a, b in itertools.pairwise(later) if b != a]
    assert all(d >= audio_start - PLAYOUT_MARGIN_S for d in later)
    assert all(abs(step - word_s) < 0.03 for step in steps), steps  # the resampler holds a few ms back
    assert abs(sum(steps) / len(steps) - word_s) < 0.01, steps
    assert later[-1] - audio_start > 10 * word_s - PLAYOUT_MARGIN_S - 1e-3
    assert len(frames) * 960 >= int(12 * word_s * OUTPUT_RATE) - 960
