"""CSM's audio decoded in groups as frames arrive equals the whole utterance decoded at once:
Mimi's decoder is causal, and each group is decoded with CONTEXT_FRAMES of the frames before it."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers", reason="the csm extra (pip install 'appliance[csm]')")

from csm_tiny import BOOK, CODEBOOKS, build_tiny_csm

from appliance.config.worker import LocalModel
from appliance.tts.adapters import create_adapter
from appliance.tts.adapters.csm import FIRST_GROUP, MAX_GROUP
from appliance.tts.catalog import local_specs


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    directory = build_tiny_csm(tmp_path_factory.mktemp("csm") / "csm-tiny")
    [spec] = local_specs({"csm-tiny": LocalModel(engine="csm", path=directory)})
    a = create_adapter(spec, "cpu")
    a.load()
    yield a
    a.unload()


def _groups(n: int) -> list[tuple[int, int]]:
    out, start, size = [], 0, FIRST_GROUP
    while start < n:
        out.append((start, min(n, start + size)))
        start, size = start + size, min(MAX_GROUP, size * 2)
    return out


def test_grouped_decoding_is_the_whole_decoding(adapter):
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, BOOK, CODEBOOKS) for _ in range(60)]
    whole = adapter.decode(frames, 0)
    assert whole.shape == (60 * 1920,)  # 80 ms of 24 kHz audio a frame
    changed = [*frames[:30], rng.integers(0, BOOK, CODEBOOKS), *frames[31:]]
    assert not np.allclose(adapter.decode(changed, 0), whole)  # the audio is the codes' (not a constant)
    joined = np.concatenate([adapter.decode(frames[:end], start) for start, end in _groups(len(frames))])
    assert joined.shape == whole.shape
    snr = 10 * np.log10(np.sum(whole.astype(np.float64) ** 2) / max(np.sum((joined - whole) ** 2), 1e-30))
    assert snr > 60, snr


def test_marker_codes_outside_the_book_are_not_decoded_as_audio(adapter):
    frames = [np.full(CODEBOOKS, BOOK + 2)]  # the padding marker, past the codec's book
    audio = adapter.decode(frames, 0)
    assert audio.shape == (1920,) and np.all(np.isfinite(audio))


def test_the_text_allowance_is_bounded(adapter):
    assert adapter.max_frames("Hi.") >= 25  # two seconds at least
    assert adapter.max_frames("word " * 1000) == round(adapter.max_audio_s * 12.5)
