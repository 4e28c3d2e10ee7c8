"""Piper (VITS, ONNX) through ``piper-tts``. The worker hands it sentences (and clauses of a long
first sentence); each sentence streams in decoder windows (``vits_split``) when the voice's graph
allows, else it comes out whole, as Piper itself gives it."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from appliance.discovery import ENGINE_CAPABILITIES
from appliance.tts.adapters.base import EngineAdapter
from appliance.tts.adapters.vits_split import SplitVits, cut_graph

log = logging.getLogger(__name__)


def cuda_available() -> bool:
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


class PiperAdapter(EngineAdapter):
    engine = "piper"
    capabilities = ENGINE_CAPABILITIES["piper"]  # CPU real time; no cloning, no adapters

    def load(self) -> None:
        from piper import PiperVoice, SynthesisConfig
        from piper.config import PiperConfig

        files = self.spec.locate(self.models_dir)
        # Piper's graph is cut in two at load, which TensorRT engines would not survive: "tensorrt"
        # runs it on CUDA.
        use_cuda = self.device in ("cuda", "tensorrt") or (self.device == "auto" and cuda_available())
        with open(files["config"], encoding="utf-8") as fh:
            config = PiperConfig.from_dict(json.load(fh))
        if config.sample_rate != self.spec.sample_rate:
            raise ValueError(
                f"{self.spec.model_id}: voice is {config.sample_rate} Hz, catalog says {self.spec.sample_rate}"
            )
        # 0 (adaptive): a call running alone gets every core but one — the event loop keeps one
        # so frame pacing and control acks never wait on the model — and calls that overlap run
        # on one thread each, which beats all of them fighting over every core.
        adaptive = self.onnx_threads == 0 and not use_cuda
        solo_threads = max(1, (os.cpu_count() or 2) - 1) if adaptive else self.onnx_threads
        thread_counts = {"solo": solo_threads, "shared": 1 if adaptive else solo_threads}
        cut = cut_graph(Path(files["onnx"]))
        self._voices, self._splits = {}, {}
        for role, threads in thread_counts.items():
            if role == "shared" and threads == solo_threads:
                self._voices[role], self._splits[role] = self._voices["solo"], self._splits["solo"]
                continue
            split = cut and SplitVits.from_cut(cut, lambda model, t=threads: _session(model, t, use_cuda))
            # With the cut, the whole graph is not needed: PiperVoice only turns text into ids.
            session = None if split else _session(files["onnx"], threads, use_cuda)
            self._voices[role], self._splits[role] = PiperVoice(session=session, config=config), split
        # Piper would peak-normalise every sentence to full scale; the worker does loudness itself.
        self._config = SynthesisConfig(normalize_audio=False)
        self._scales = np.array(
            [config.noise_scale, config.length_scale, config.noise_w_scale], dtype=np.float32
        )
        self.streams_within_segment = self._splits["solo"] is not None
        self.actual_device = "cuda" if use_cuda else "cpu"
        self.loaded = True
        log.info(
            "loaded %s on %s from %s (%s)",
            self.spec.model_id,
            self.actual_device,
            files["onnx"],
            "streams within sentences" if self.streams_within_segment else "a sentence at a time",
        )

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        role = "shared" if self.contended() else "solo"
        voice, split = self._voices[role], self._splits[role]
        if split is None:
            for chunk in voice.synthesize(text, syn_config=self._config):
                yield chunk.audio_float_array
            return
        for phonemes in voice.phonemize(text):
            if not phonemes:
                continue
            ids = np.array([voice.phonemes_to_ids(phonemes)], dtype=np.int64)
            latent = split.latent(
                {
                    "input": ids,
                    "input_lengths": np.array([ids.shape[1]], dtype=np.int64),
                    "scales": self._scales,
                }
            )
            for audio in split.decode(latent):
                yield np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)

    def unload(self) -> None:
        self._voices, self._splits = {}, {}
        self.streams_within_segment = False
        self.loaded = False


def _session(model, threads: int, use_cuda: bool):
    """An onnxruntime session for a model path or a serialized model."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    providers = [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"})] if use_cuda else []
    source = model if isinstance(model, bytes) else str(model)
    return onnxruntime.InferenceSession(
        source, sess_options=options, providers=providers + ["CPUExecutionProvider"]
    )
