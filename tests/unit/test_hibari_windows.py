"""hibari's vocoder run window by window gives the samples of the whole-sentence vocoding."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.tts.adapters.hibari import FIRST_WINDOW, vocode_in_windows
from appliance.tts.catalog import Catalog

hibari = pytest.importorskip("hibari")


@pytest.fixture(scope="module")
def graph_outputs():
    tts = hibari.Hibari(model=str(Catalog().get("hibari-heart").locate(None)["onnx"]))
    (phonemes,) = tts.phonemize(
        "The quick brown fox jumps over the lazy dog, and then it runs into the forest."
    )
    out = tts.sess.run(
        None, {"ids": np.asarray([tts.ids(phonemes)], np.int64), "speed": np.asarray([1.0], np.float32)}
    )
    lh, th, ln, lr, phi, f0 = (o[0] for o in out)
    return lh, th, np.full_like(ln, -60.0), lr, phi, f0  # the noise branch off: both sides deterministic


def test_windows_join_to_the_whole_sentence(graph_outputs):
    from hibari import dsp

    whole = dsp.synth(*graph_outputs, np.random.default_rng(0))
    windows = list(vocode_in_windows(*graph_outputs, np.random.default_rng(0)))
    assert len(windows) >= 3, "a 5 s sentence comes out in several windows"
    assert len(windows[0]) == FIRST_WINDOW * dsp.HOP
    joined = np.concatenate(windows)
    assert len(joined) == len(whole)
    assert np.max(np.abs(joined - whole)) < 1e-4 * np.max(np.abs(whole))
