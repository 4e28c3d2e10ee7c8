"""The Piper graph cut at its decoder (real voice): windowed decoding must give the samples a whole
decode gives, the first window must be short, and graphs that cannot be cut must fall back."""

from __future__ import annotations

import functools
import itertools
import json

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from appliance.tts.adapters.piper import PiperAdapter, _session
from appliance.tts.adapters.vits_split import CONTEXT_FRAMES, FIRST_WINDOW, HOP, MAX_WINDOW, SplitVits
from appliance.tts.catalog import Catalog

MODEL = "piper-en_US-joe-medium"
TEXT = "The weather today is sunny with a light breeze from the west, and it stays dry until the evening."


@functools.lru_cache(maxsize=1)
def _voice():
    from piper import PiperVoice
    from piper.config import PiperConfig

    files = Catalog().get(MODEL).locate(None)
    with open(files["config"], encoding="utf-8") as fh:
        config = PiperConfig.from_dict(json.load(fh))
    whole = _session(files["onnx"], 1, False)
    split = SplitVits.load(files["onnx"], lambda model: _session(model, 1, False))
    return PiperVoice(session=whole, config=config), whole, split


def _inputs(voice, text: str) -> dict[str, np.ndarray]:
    ids = np.array([voice.phonemes_to_ids(voice.phonemize(text)[0])], dtype=np.int64)
    # No noise, so the front gives the same latent on every call and the outputs can be compared.
    scales = np.array([0.0, voice.config.length_scale, 0.0], dtype=np.float32)
    return {"input": ids, "input_lengths": np.array([ids.shape[1]], dtype=np.int64), "scales": scales}


def test_windowed_decode_matches_the_whole_graph():
    voice, whole, split = _voice()
    assert split is not None, "the shipped voice must be cut (else sentences do not stream)"
    inputs = _inputs(voice, TEXT)
    reference = whole.run(None, inputs)[0].reshape(-1)
    latent = split.latent(inputs)
    windows = list(split.decode(latent))
    joined = np.concatenate(windows)

    assert latent.shape[2] > FIRST_WINDOW + 2 * MAX_WINDOW  # long enough to need several windows
    assert len(joined) == len(reference) == latent.shape[2] * HOP
    error = joined - reference
    snr_db = 10 * np.log10(np.sum(reference**2) / max(np.sum(error**2), 1e-20))
    assert snr_db > 50, f"windowed decode differs from the whole decode: SNR {snr_db:.1f} dB"


def test_first_window_is_short_and_later_ones_grow_to_the_cap():
    voice, _whole, split = _voice()
    latent = split.latent(_inputs(voice, TEXT))
    sizes = [len(w) // HOP for w in split.decode(latent)]
    assert sizes[0] == FIRST_WINDOW
    assert sizes[1] == 2 * FIRST_WINDOW
    assert max(sizes) == MAX_WINDOW
    assert all(b >= a for a, b in itertools.pairwise(sizes[:-1]))  # grows until the last (a remainder)
    assert sum(sizes) == latent.shape[2]


def test_a_window_without_context_would_click():
    """Why CONTEXT_FRAMES exists: decoding windows with no context changes the audio audibly."""
    voice, whole, split = _voice()
    inputs = _inputs(voice, TEXT)
    reference = whole.run(None, inputs)[0].reshape(-1)
    latent = split.latent(inputs)
    cut = FIRST_WINDOW
    bare = [
        split._decoder.run(None, {split._latent: np.ascontiguousarray(latent[:, :, a:b])})[0].reshape(-1)
        for a, b in ((0, cut), (cut, latent.shape[2]))
    ]
    error = np.concatenate(bare) - reference
    snr_db = 10 * np.log10(np.sum(reference**2) / np.sum(error**2))
    assert CONTEXT_FRAMES > 0 and snr_db < 30


def _tiny_graph(tmp_path, *, decoder_weight: bool, extra_decoder_input: bool) -> str:
    weight = numpy_helper.from_array(
        np.ones((1, 1, 1), np.float32), "dec.conv_pre.weight" if decoder_weight else "w"
    )
    nodes = [
        helper.make_node("Relu", ["input"], ["latent"]),
        helper.make_node("Conv", ["latent", weight.name], ["y"]),
    ]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, None])]
    if extra_decoder_input:  # like a multi-speaker voice, whose decoder also needs the speaker
        inputs.append(helper.make_tensor_value_info("g", TensorProto.FLOAT, [1, 1, 1]))
        nodes.append(helper.make_node("Add", ["y", "g"], ["output"]))
    else:
        nodes.append(helper.make_node("Identity", ["y"], ["output"]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        inputs,
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, None])],
        [weight],
    )
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)]), str(path))
    return path


def _make(model: bytes):
    return onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])


def test_a_cuttable_tiny_graph_is_cut(tmp_path):
    split = SplitVits.load(_tiny_graph(tmp_path, decoder_weight=True, extra_decoder_input=False), _make)
    assert split is not None and split._latent == "latent"


@pytest.mark.parametrize("decoder_weight, extra_input", [(False, False), (True, True)])
def test_graphs_that_cannot_be_cut_fall_back(tmp_path, caplog, decoder_weight, extra_input):
    caplog.set_level("INFO")
    assert (
        SplitVits.load(
            _tiny_graph(tmp_path, decoder_weight=decoder_weight, extra_decoder_input=extra_input), _make
        )
        is None
    )
    assert "a sentence at a time" in caplog.text


def test_adapter_falls_back_to_whole_sentences(monkeypatch):
    monkeypatch.setattr("appliance.tts.adapters.piper.cut_graph", lambda path: None)
    adapter = PiperAdapter(Catalog().get(MODEL), device="cpu")
    adapter.load()
    assert adapter.streams_within_segment is False
    chunks = list(adapter.synthesize("One sentence here. And a second one."))
    assert len(chunks) == 2  # one chunk per sentence, as Piper gives them
    assert all(c.dtype == np.float32 and len(c) > 0.3 * adapter.sample_rate for c in chunks)


def test_adapter_streams_a_sentence_in_windows():
    adapter = PiperAdapter(Catalog().get(MODEL), device="cpu")
    adapter.load()
    assert adapter.streams_within_segment is True
    chunks = list(adapter.synthesize(TEXT))
    assert len(chunks) >= 3
    assert len(chunks[0]) == FIRST_WINDOW * HOP
    assert all(c.dtype == np.float32 and np.abs(c).max() <= 1.0 for c in chunks)
