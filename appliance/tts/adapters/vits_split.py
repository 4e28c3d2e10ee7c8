"""Piper's VITS graph cut in two at the decoder's input, so that a sentence streams.

A Piper voice is one ONNX graph: text encoder, duration predictor and flow (the *front*), then a
HiFi-GAN decoder that turns the latent frames into audio (256 samples per frame). The decoder is
most of the cost and is only locally dependent: a window of latent frames with ``CONTEXT_FRAMES``
of context on each side decodes to the same samples as the whole sentence does (measured: the
joined windows differ from a whole decode by less than -60 dB). So the front runs once per
sentence and the decoder in growing windows, and the first audio of a sentence is ready after
its front and ~0.35 s of decoding, not after all of it. Each window is one engine call, which
also keeps the calls short enough for the scheduler to put a new stream's first words first.

The cut is made in memory at load (``onnx`` extracts the two sub-graphs, ~0.2 s). A voice whose
graph does not have the expected shape (no ``dec.conv_pre`` conv, or a decoder that needs more
than the latent, as multi-speaker voices do) gets ``None`` and is synthesised whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

HOP = 256  # audio samples per latent frame (Piper voices: hop length 256)
CONTEXT_FRAMES = 10  # latent frames decoded on each side of a window and thrown away
FIRST_WINDOW = 30  # ~0.35 s at 22050 Hz: what the first audio of a sentence waits for
MAX_WINDOW = 120  # later windows double up to this (~1.4 s)
_DECODER_WEIGHT = "dec.conv_pre.weight"

SessionFactory = Callable[[bytes], object]  # serialized model -> onnxruntime.InferenceSession


class SplitVits:
    def __init__(self, front, decoder, latent: str) -> None:
        self._front = front
        self._decoder = decoder
        self._latent = latent

    @classmethod
    def load(cls, path: Path, make_session: SessionFactory) -> SplitVits | None:
        """Cut the graph at ``path`` and open both halves; None when it cannot be cut."""
        cut = cut_graph(path)
        if cut is None:
            return None
        return cls.from_cut(cut, make_session)

    @classmethod
    def from_cut(cls, cut: GraphCut, make_session: SessionFactory) -> SplitVits | None:
        try:
            return cls(make_session(cut.front), make_session(cut.decoder), cut.latent)
        except Exception as exc:  # noqa: BLE001 -- e.g. an execution provider that refuses a half
            log.info("the cut graph does not open (%s): synthesising a sentence at a time", exc)
            return None

    def latent(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """The front: Piper's model inputs -> latent frames, shape (1, channels, frames)."""
        return self._front.run(None, inputs)[0]

    def decode(self, latent: np.ndarray) -> Iterator[np.ndarray]:
        """Audio (float32, mono) of the latent, in windows of growing size."""
        frames = latent.shape[2]
        start, size = 0, FIRST_WINDOW
        while start < frames:
            end = min(frames, start + size)
            left, right = max(0, start - CONTEXT_FRAMES), min(frames, end + CONTEXT_FRAMES)
            window = np.ascontiguousarray(latent[:, :, left:right])
            audio = self._decoder.run(None, {self._latent: window})[0].reshape(-1)
            skip = (start - left) * HOP
            yield audio[skip : skip + (end - start) * HOP]
            start, size = end, min(MAX_WINDOW, size * 2)


@dataclass(frozen=True)
class GraphCut:
    front: bytes  # serialized ONNX: Piper's inputs -> the latent
    decoder: bytes  # serialized ONNX: the latent -> audio
    latent: str  # the tensor between them


def cut_graph(path: Path) -> GraphCut | None:
    """Cut the voice at ``path`` at its decoder's input; None (with a log line) when it cannot be."""
    try:
        import onnx
        from onnx.utils import Extractor
    except ImportError:
        log.info("onnx is not installed: %s is synthesised a sentence at a time", path.name)
        return None
    try:
        model = onnx.load(str(path))
        latent = _decoder_input(model.graph)
        if latent not in {v.name for v in model.graph.value_info}:  # exports usually carry it
            model.graph.value_info.append(
                onnx.helper.make_tensor_value_info(latent, onnx.TensorProto.FLOAT, None)
            )
        extractor = Extractor(model)
        front = extractor.extract_model([i.name for i in model.graph.input], [latent])
        decoder = extractor.extract_model([latent], [model.graph.output[0].name])
        if missing := _unresolved(decoder.graph) - {latent}:
            raise ValueError(f"the decoder needs more than {latent!r}: {sorted(missing)}")
    except Exception as exc:  # noqa: BLE001 -- an unusual graph is not an error: it is synthesised whole
        log.info("%s is synthesised a sentence at a time: %s", path.name, exc)
        return None
    return GraphCut(front.SerializeToString(), decoder.SerializeToString(), latent)


def _unresolved(graph) -> set[str]:
    """Names the graph's nodes read that no node, initializer or constant in it provides."""
    provided = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    return {i for n in graph.node for i in n.input if i and i not in provided}


def _decoder_input(graph) -> str:
    for node in graph.node:
        if _DECODER_WEIGHT in node.input:
            return node.input[0]
    raise ValueError(f"no node uses {_DECODER_WEIGHT!r}")
